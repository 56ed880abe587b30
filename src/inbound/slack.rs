//! Slack Events API requests: a workspace's own app on its channel's route
//! (`/webhooks/slack/{channel_id}`) and the operator's distributed app on the shared
//! route (`/webhooks/slack`), which finds the channel by the event's `team_id`.
//!
//! Order: body size cap, `v0` signature and replay window over the raw bytes (401,
//! nothing stored), `url_verification` answered, the event routed and normalized,
//! stored with the inbox's dedupe, 200. Slack waits three seconds; a request has a
//! budget below that and is answered 503 past it (Slack delivers again, and the
//! redelivery changes nothing; a commit still under way completes and the
//! redelivery finds it). An uninstall or bot token revocation disables the channel,
//! destroys its token and is recorded in the audit log, before the answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use channels::slack::{self as platform, Callback, Delivery, Revocation};
use channels::{ChannelKind, Credentials, NormalizeError, SlackCredentials};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use webhooks::slack as verify;

use super::meta::{commit, push_event, unhandled_row, unparseable_row};
use super::MAX_BODY;
use crate::app::{App, ResolvedChannel};
use crate::audit::Audit;
use crate::http::AppError;
use crate::store::{now_ms, ChannelRecord, ChannelRevocation, IngressBatch, NewEnvelope};

const KIND: ChannelKind = ChannelKind::Slack;
/// Time allowed between a verified request and its answer; Slack gives up at 3 s.
const ACK_BUDGET: Duration = Duration::from_millis(2500);

pub fn router() -> Router<App> {
    Router::new()
        .route("/webhooks/slack", post(receive_shared))
        .route("/webhooks/slack/{channel_id}", post(receive_channel))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Where a request came in.
enum Route {
    /// A channel's own route: the channel is known before the body is read.
    Channel(Arc<ResolvedChannel>),
    /// The operator app's shared route.
    Shared,
}

async fn receive_channel(
    State(app): State<App>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    within_budget(async {
        let channel = match app.resolved_channel(&channel_id).await? {
            Some(channel) if channel.record.platform == KIND.as_str() => channel,
            _ => return Err(AppError::NotFound),
        };
        let secret = channel
            .credentials
            .signing_secret()
            .or(app.config.platforms.slack.signing_secret.as_ref())
            .ok_or(AppError::Unauthorized)?;
        let delivery = check(secret, &headers, &body, Some(&channel_id))?;
        accept(&app, Route::Channel(channel), delivery, &body).await
    })
    .await
}

async fn receive_shared(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    within_budget(async {
        let secret = app
            .config
            .platforms
            .slack
            .signing_secret
            .as_ref()
            .ok_or(AppError::Unauthorized)?;
        let delivery = check(secret, &headers, &body, None)?;
        accept(&app, Route::Shared, delivery, &body).await
    })
    .await
}

/// Verifies the request and reads it; a refused request is 401 and nothing else.
fn check(
    secret: &SecretString,
    headers: &HeaderMap,
    body: &[u8],
    channel_id: Option<&str>,
) -> Result<Result<Delivery, NormalizeError>, AppError> {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let now = now_ms() / 1000;
    let verified = verify::verify(
        secret.expose_secret().as_bytes(),
        header(verify::TIMESTAMP_HEADER),
        header(verify::SIGNATURE_HEADER),
        body,
        now,
    )
    .map_err(|e| {
        tracing::warn!(channel_id = channel_id.unwrap_or("shared"), reason = %e, "rejected slack request");
        AppError::Unauthorized
    })?;
    if let Some(retry) = header("x-slack-retry-num") {
        tracing::debug!(
            retry = %String::from_utf8_lossy(retry),
            reason = %String::from_utf8_lossy(header("x-slack-retry-reason").unwrap_or_default()),
            "slack redelivery"
        );
    }
    Ok(platform::read(verified))
}

async fn within_budget(
    work: impl std::future::Future<Output = Result<Response, AppError>>,
) -> Result<Response, AppError> {
    match tokio::time::timeout(ACK_BUDGET, work).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!("slack request not stored within the ack budget; answering 503");
            Err(AppError::Unavailable)
        }
    }
}

/// Routes, normalizes and stores one verified request.
async fn accept(
    app: &App,
    route: Route,
    delivery: Result<Delivery, NormalizeError>,
    body: &[u8],
) -> Result<Response, AppError> {
    let received_at = now_ms();
    let mut batch = IngressBatch::default();
    let route_channel = match &route {
        Route::Channel(c) => Some(c.clone()),
        Route::Shared => None,
    };
    let mut owner: Option<ChannelRecord> = route_channel.as_ref().map(|c| c.record.clone());
    match delivery {
        Err(e) => {
            tracing::warn!(error = %e, "signed slack request could not be parsed");
            batch
                .unhandled
                .push(unparseable_row(owner.as_ref(), KIND, body, received_at));
        }
        Ok(Delivery::UrlVerification { challenge }) => {
            return Ok((
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "text/plain")],
                challenge,
            )
                .into_response());
        }
        Ok(Delivery::Other(item)) => {
            if route_channel.is_none() {
                if let Some(team) = &item.account_id {
                    owner = route_shared(app, team, None)
                        .await?
                        .map(|c| c.record.clone());
                }
            }
            batch.unhandled.push(unhandled_row(
                owner.as_ref(),
                KIND,
                &item.reason,
                &item.raw,
                received_at,
            ));
        }
        Ok(Delivery::Callback(callback)) => {
            let found = match route_channel {
                Some(channel) if channel.record.account_id == callback.team_id => {
                    Found::Channel(channel)
                }
                // Signed by this channel's app, but for a workspace it does not own.
                Some(_) => Found::Refused("account_mismatch"),
                None => match route_shared(app, &callback.team_id, callback.api_app_id.as_deref())
                    .await?
                {
                    Some(channel) => Found::Channel(channel),
                    None => {
                        owner = None;
                        Found::Refused("unknown_account")
                    }
                },
            };
            match found {
                Found::Channel(channel) => {
                    owner = Some(channel.record.clone());
                    store_callback(app, &channel, &callback, &mut batch, received_at).await?;
                }
                Found::Refused(reason) => {
                    tracing::warn!(reason, "slack event not routed to a channel");
                    batch.unhandled.push(unhandled_row(
                        owner.as_ref(),
                        KIND,
                        reason,
                        callback.raw(),
                        received_at,
                    ));
                }
            }
        }
    }
    batch.envelopes.push(NewEnvelope {
        tenant_id: owner.as_ref().map(|c| c.tenant_id.clone()),
        channel_id: owner.as_ref().map(|c| c.id.clone()),
        platform: KIND.as_str().into(),
        body: body.to_vec(),
        received_at,
    });
    commit(app, batch).await
}

enum Found {
    Channel(Arc<ResolvedChannel>),
    Refused(&'static str),
}

/// The channel the operator app's event belongs to: the workspace's channel, when it
/// was installed through the operator app (no signing secret of its own) and, when
/// both are known, for the same app.
async fn route_shared(
    app: &App,
    team_id: &str,
    api_app_id: Option<&str>,
) -> Result<Option<Arc<ResolvedChannel>>, AppError> {
    let Some(record) = app.store.channel_by_account(KIND.as_str(), team_id).await? else {
        return Ok(None);
    };
    let Some(channel) = app.resolved_channel(&record.id).await? else {
        return Ok(None);
    };
    let Credentials::Slack(credentials) = &channel.credentials else {
        return Ok(None);
    };
    let same_app = match (credentials.app_id.as_deref(), api_app_id) {
        (Some(ours), Some(theirs)) => ours == theirs,
        _ => true,
    };
    Ok((credentials.signing_secret.is_none() && same_app).then_some(channel))
}

/// Adds a routed event to the batch, or applies a revocation.
async fn store_callback(
    app: &App,
    channel: &ResolvedChannel,
    callback: &Callback,
    batch: &mut IngressBatch,
    received_at: i64,
) -> Result<(), AppError> {
    let record = &channel.record;
    let Credentials::Slack(credentials) = &channel.credentials else {
        return Err(AppError::NotFound);
    };
    if let Some(revocation) = callback.revocation() {
        if revoke(app, channel, credentials, callback, &revocation).await? {
            return Ok(());
        }
    }
    let normalized = callback.normalize(credentials.bot_user_id.as_deref());
    let disabled = record.status == "revoked";
    for item in normalized.unhandled {
        batch.unhandled.push(unhandled_row(
            Some(record),
            KIND,
            &item.reason,
            &item.raw,
            received_at,
        ));
    }
    if disabled && !normalized.events.is_empty() {
        // The app has no access to the workspace any more: nothing can be answered.
        batch.unhandled.push(unhandled_row(
            Some(record),
            KIND,
            "channel_revoked",
            callback.raw(),
            received_at,
        ));
        return Ok(());
    }
    for event in normalized.events {
        push_event(batch, record, KIND, event, received_at);
    }
    Ok(())
}

/// Disables the channel and destroys its bot token. `false` when the event does not
/// concern this installation's bot (another app's tokens).
async fn revoke(
    app: &App,
    channel: &ResolvedChannel,
    credentials: &SlackCredentials,
    callback: &Callback,
    revocation: &Revocation,
) -> Result<bool, AppError> {
    if let (Revocation::TokensRevoked { bot_users }, Some(ours)) =
        (revocation, credentials.bot_user_id.as_deref())
    {
        if !bot_users.iter().any(|u| u == ours) {
            return Ok(false);
        }
    }
    let record = &channel.record;
    let tokenless = Credentials::Slack(SlackCredentials {
        bot_token: None,
        ..credentials.clone()
    });
    let sealed = app.seal_credentials(&record.tenant_id, &record.id, &tokenless)?;
    let kind = revocation.as_str();
    let action = match revocation {
        Revocation::Uninstalled => "channel.uninstalled",
        Revocation::TokensRevoked { .. } => "channel.tokens_revoked",
    };
    let audit = Audit::new(&record.tenant_id, "platform:slack", action)
        .target(&record.id)
        .detail(json!({
            "event_id": callback.event_id,
            "team_id": record.account_id,
            "status": "revoked",
            "token_destroyed": true,
        }));
    let applied = app
        .store
        .revoke_channel(&ChannelRevocation {
            tenant_id: record.tenant_id.clone(),
            channel_id: record.id.clone(),
            event_id: callback.event_id.clone(),
            kind: kind.into(),
            credentials: sealed,
            detail: format!(
                "Slack {kind}: the app lost access to the workspace; install it again to resume"
            ),
            at: now_ms(),
            audit,
        })
        .await?;
    app.forget_channel(&record.id);
    if applied {
        tracing::warn!(channel_id = %record.id, kind, "slack access revoked: channel disabled, token destroyed");
    }
    Ok(true)
}
