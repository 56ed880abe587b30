//! Installing the operator's Slack app into a workspace (OAuth v2).
//!
//! 1. The tenant asks the admin API for an install URL (`GET /api/v1/slack/install`):
//!    Slack's authorize page with the app's client id, scopes, our callback as
//!    `redirect_uri`, and a fresh single-use `state` bound to the tenant (stored as a
//!    hash, valid for ten minutes).
//! 2. A workspace admin approves; Slack sends the browser to `GET /slack/oauth/callback`
//!    with `code` and `state`. The state is consumed first (a forged, replayed or
//!    expired one is refused before anything else happens), then the code is exchanged
//!    at `oauth.v2.access`, the bot token is sealed, and the tenant's channel for that
//!    workspace is created, or updated and re-enabled.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use channels::slack::{InstallError, Slack};
use channels::{ChannelKind, Credentials};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::http::extract::TenantAuth;
use crate::http::AppError;
use crate::store::{new_id, now_ms, NewChannel, NewInstallState, StoreError};

/// How long an install link works.
const STATE_TTL_MS: i64 = 10 * 60 * 1000;
const CALLBACK_PATH: &str = "/slack/oauth/callback";

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/slack/install", get(install_url))
        .route(CALLBACK_PATH, get(callback))
}

fn redirect_uri(app: &App) -> String {
    format!("{}{CALLBACK_PATH}", app.public_url)
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// `GET /api/v1/slack/install`: where to send a workspace admin to install the app.
async fn install_url(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let slack = &app.config.platforms.slack;
    let (Some(client_id), Some(_)) = (&slack.client_id, &slack.client_secret) else {
        return Err(AppError::Unprocessable(
            "no operator Slack app is configured (platforms.slack.client_id and client_secret)"
                .into(),
        ));
    };
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let now = now_ms();
    let expires_at = now + STATE_TTL_MS;
    app.store
        .create_install_state(&NewInstallState {
            state_hash: state_hash(&state),
            tenant_id,
            created_at: now,
            expires_at,
        })
        .await?;
    let mut url = reqwest::Url::parse(&slack.authorize_url)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("platforms.slack.authorize_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("scope", &slack.scopes)
        .append_pair("redirect_uri", &redirect_uri(&app))
        .append_pair("state", &state);
    Ok(Json(
        json!({ "url": url.as_str(), "expires_at": expires_at }),
    ))
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /slack/oauth/callback`: a person's browser, back from Slack. Answers pages.
async fn callback(State(app): State<App>, Query(query): Query<CallbackQuery>) -> Response {
    match complete(&app, query).await {
        Ok(team) => page(
            StatusCode::OK,
            "Slack is connected",
            &format!(
                "omnigate is now installed in the Slack workspace {}. You can close this window.",
                escape(&team)
            ),
        ),
        Err(failure) => {
            tracing::warn!(reason = failure.reason, "slack install refused");
            page(
                failure.status,
                "Slack was not connected",
                &escape(&failure.message),
            )
        }
    }
}

struct Failure {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

fn fail(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        reason,
        message: message.into(),
    }
}

/// Runs the install; the workspace name on success.
async fn complete(app: &App, query: CallbackQuery) -> Result<String, Failure> {
    let Some(state) = query.state.filter(|s| !s.is_empty()) else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "missing_state",
            "This link is incomplete. Start the install again from omnigate.",
        ));
    };
    // The state first: without a state we issued, nothing else is looked at.
    let Some(tenant_id) = app
        .store
        .take_install_state(&state_hash(&state), now_ms())
        .await
        .map_err(internal)?
    else {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "bad_state",
            "This install link is not valid or has expired. Start the install again from omnigate.",
        ));
    };
    if query.error.is_some() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "declined",
            "The install was cancelled in Slack.",
        ));
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "missing_code",
            "Slack did not send an authorization code.",
        ));
    };
    let slack = &app.config.platforms.slack;
    let (Some(client_id), Some(client_secret)) = (&slack.client_id, &slack.client_secret) else {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "No Slack app is configured on this gateway.",
        ));
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(
            app.config.worker.send_timeout_ms,
        ))
        .build()
        .map_err(internal)?;
    let client = Slack::new(http, slack.api_url.clone());
    let installation = client
        .exchange_code(client_id, client_secret, &code, &redirect_uri(app))
        .await
        .map_err(|e| match e {
            InstallError::Unreachable(_) => fail(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                "Slack could not be reached. Please try again.",
            ),
            InstallError::Refused(why) => fail(
                StatusCode::BAD_GATEWAY,
                "refused",
                format!(
                    "Slack refused the install ({why}). Start the install again from omnigate."
                ),
            ),
        })?;
    let credentials = installation.credentials;
    let team = credentials
        .team_name
        .clone()
        .unwrap_or_else(|| credentials.team_id.clone());
    let team_id = credentials.team_id.clone();
    let credentials = Credentials::Slack(credentials);
    let existing = app
        .store
        .channel_by_account(ChannelKind::Slack.as_str(), &team_id)
        .await
        .map_err(internal)?;
    let taken = || {
        fail(
            StatusCode::CONFLICT,
            "other_tenant",
            "This Slack workspace is already connected to another omnigate account.",
        )
    };
    match existing {
        Some(channel) if channel.tenant_id == tenant_id => {
            let sealed = app
                .seal_credentials(&tenant_id, &channel.id, &credentials)
                .map_err(internal)?;
            app.store
                .replace_channel_credentials(&tenant_id, &channel.id, &sealed)
                .await
                .map_err(internal)?;
            app.forget_channel(&channel.id);
            tracing::info!(channel_id = %channel.id, "slack channel re-installed");
        }
        Some(_) => return Err(taken()),
        None => {
            let id = new_id();
            let sealed = app
                .seal_credentials(&tenant_id, &id, &credentials)
                .map_err(internal)?;
            let created = app
                .store
                .create_channel(&NewChannel {
                    id: id.clone(),
                    tenant_id,
                    platform: ChannelKind::Slack.as_str().into(),
                    account_id: team_id,
                    credentials: sealed,
                    created_at: now_ms(),
                })
                .await;
            match created {
                Ok(()) => tracing::info!(channel_id = %id, "slack channel installed"),
                Err(StoreError::Conflict(_)) => return Err(taken()),
                Err(e) => return Err(internal(e)),
            }
        }
    }
    Ok(team)
}

/// A failure of ours (database, sealing): logged, answered without details.
fn internal(error: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %error, "slack install could not be completed");
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "internal",
        "The install could not be saved. Please try again.",
    )
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>"
    );
    (status, Html(body)).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
