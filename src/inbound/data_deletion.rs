//! Meta's data-deletion callback: a person asked Meta to delete the data an app holds
//! about them. Meta POSTs a `signed_request` (form field) to the operator app's
//! `/webhooks/meta/data-deletion` or a channel's own
//! `/webhooks/{platform}/{channel_id}/data-deletion`; omnigate verifies it, records a
//! request under a fresh confirmation code, starts the erasure of that person on that
//! app, and answers `{"url", "confirmation_code"}`. `GET /data-deletion/{code}` shows
//! the request's status and nothing about the person.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use rand::distributions::{Alphanumeric, DistString};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use webhooks::signed_request::verify_signed_request;

use crate::app::{App, ResolvedChannel};
use crate::http::AppError;
use crate::store::{now_ms, DeletionRequest};

/// Largest callback body: a `signed_request` is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// Length of a confirmation code (alphanumeric, as Meta asks).
const CODE_LEN: usize = 24;

pub fn router() -> Router<App> {
    Router::new()
        .route("/webhooks/meta/data-deletion", post(receive_shared))
        .route(
            "/webhooks/{platform}/{channel_id}/data-deletion",
            post(receive_channel),
        )
        .route("/data-deletion/{code}", get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[derive(Debug, Deserialize)]
struct Callback {
    #[serde(default)]
    signed_request: String,
}

/// The operator app's callback: the person's data on every channel that receives
/// through the operator app.
async fn receive_shared(
    State(app): State<App>,
    form: Result<Form<Callback>, FormRejection>,
) -> Result<Json<Value>, AppError> {
    let Form(form) = form.map_err(bad_form)?;
    let secret = app
        .config
        .platforms
        .meta
        .app_secret
        .as_ref()
        .ok_or(AppError::NotFound)?;
    accept(&app, secret.expose_secret().as_bytes(), None, &form).await
}

/// A channel's own app's callback: the person's data on that channel.
async fn receive_channel(
    State(app): State<App>,
    Path((platform, channel_id)): Path<(String, String)>,
    form: Result<Form<Callback>, FormRejection>,
) -> Result<Json<Value>, AppError> {
    let Form(form) = form.map_err(bad_form)?;
    let channel = meta_channel(&app, &platform, &channel_id).await?;
    let secret = channel
        .credentials
        .signing_secret()
        .or(app.config.platforms.meta.app_secret.as_ref())
        .ok_or(AppError::NotFound)?;
    accept(
        &app,
        secret.expose_secret().as_bytes(),
        Some(&channel.record.id),
        &form,
    )
    .await
}

fn bad_form(rejection: FormRejection) -> AppError {
    AppError::BadRequest(format!(
        "expected a form with `signed_request`: {}",
        rejection.body_text()
    ))
}

async fn meta_channel(
    app: &App,
    platform: &str,
    channel_id: &str,
) -> Result<Arc<ResolvedChannel>, AppError> {
    let kind: channels::ChannelKind = platform.parse().map_err(|_| AppError::NotFound)?;
    if !matches!(
        kind,
        channels::ChannelKind::WhatsApp
            | channels::ChannelKind::Messenger
            | channels::ChannelKind::Instagram
    ) {
        return Err(AppError::NotFound);
    }
    match app.resolved_channel(channel_id).await? {
        Some(channel) if channel.record.platform == kind.as_str() => Ok(channel),
        _ => Err(AppError::NotFound),
    }
}

async fn accept(
    app: &App,
    secret: &[u8],
    channel_id: Option<&str>,
    form: &Callback,
) -> Result<Json<Value>, AppError> {
    let verified = verify_signed_request(secret, &form.signed_request).map_err(|e| {
        tracing::warn!(reason = %e, "rejected data-deletion callback");
        AppError::BadRequest(format!("invalid signed_request: {e}"))
    })?;
    let code = Alphanumeric.sample_string(&mut rand::thread_rng(), CODE_LEN);
    let request = DeletionRequest {
        code: code.clone(),
        channel_id: channel_id.map(str::to_string),
        subject: Some(verified.into_inner().user_id),
        status: "pending".into(),
        erased_contacts: 0,
        requested_at: now_ms(),
        completed_at: None,
    };
    app.store.create_deletion_request(&request).await?;
    tracing::info!(channel_id = ?channel_id, "data-deletion request recorded");
    tokio::spawn(erase(app.clone(), request));
    Ok(Json(json!({
        "url": format!("{}/data-deletion/{code}", app.public_url),
        "confirmation_code": code,
    })))
}

/// The status of a request, by its confirmation code; nothing about the person.
async fn status(State(app): State<App>, Path(code): Path<String>) -> Result<Json<Value>, AppError> {
    let request = app
        .store
        .deletion_request(&code)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(json!({
        "confirmation_code": request.code,
        "status": request.status,
        "requested_at": request.requested_at,
        "completed_at": request.completed_at,
        "erased_contacts": request.erased_contacts,
    })))
}

/// How often a failed erasure is tried again before it waits for the next start-up.
const ATTEMPTS: u32 = 5;

/// Runs a request's erasure (the privacy engine's, shared with `DELETE
/// /api/v1/contacts/{id}`) and marks it completed; on failure tries again with backoff,
/// and after that leaves it `pending` for [`resume_pending`].
async fn erase(app: App, request: DeletionRequest) {
    for attempt in 0..ATTEMPTS {
        match erase_once(&app, &request).await {
            Ok(erased) => {
                tracing::info!(erased, "data-deletion request completed");
                return;
            }
            Err(e) => {
                tracing::error!(
                    attempt,
                    error = format!("{e:#}"),
                    "data-deletion erasure failed"
                );
                tokio::time::sleep(std::time::Duration::from_secs(2u64 << attempt)).await;
            }
        }
    }
}

async fn erase_once(app: &App, request: &DeletionRequest) -> anyhow::Result<usize> {
    let Some(user_id) = request.subject.as_deref() else {
        return Ok(0);
    };
    let covered = covered_contacts(app, request.channel_id.as_deref(), user_id).await?;
    for (tenant_id, contact_id) in &covered {
        crate::privacy::erasure::erase_contact(
            app.store.as_ref(),
            tenant_id,
            contact_id,
            "platform:meta",
            "meta_data_deletion",
        )
        .await?;
    }
    let erased = i64::try_from(covered.len()).unwrap_or(i64::MAX);
    app.store
        .complete_deletion_request(&request.code, erased, now_ms())
        .await?;
    Ok(covered.len())
}

/// Resumes requests left `pending` (the process stopped before their erasure ended).
pub async fn resume_pending(app: App) {
    match app.store.pending_deletion_requests(1000).await {
        Ok(requests) => {
            for request in requests {
                erase(app.clone(), request).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "could not read pending data-deletion requests"),
    }
}

/// The contacts a request covers, as (tenant id, contact id): the person's identities
/// on the request's channel, or on every Messenger/Instagram channel that receives
/// through the operator app.
pub async fn covered_contacts(
    app: &App,
    channel_id: Option<&str>,
    user_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut covered = Vec::new();
    for (tenant_id, contact_id, channel) in app.store.contacts_by_platform_user(user_id).await? {
        let in_scope = match channel_id {
            Some(only) => only == channel,
            None => match app.resolved_channel(&channel).await? {
                Some(resolved) => resolved.credentials.signing_secret().is_none(),
                None => false,
            },
        };
        if in_scope && !covered.contains(&(tenant_id.clone(), contact_id.clone())) {
            covered.push((tenant_id, contact_id));
        }
    }
    Ok(covered)
}
