//! Meta webhooks (WhatsApp Cloud API today): the subscription handshake and signed
//! deliveries, on a channel's own route (`/webhooks/{platform}/{channel_id}`) and on
//! the operator app's shared route (`/webhooks/meta`), which routes each event to a
//! channel by the account id inside it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use channels::{ChannelKind, Content, EventBody, InboundEvent, Normalized};
use secrecy::ExposeSecret;
use webhooks::meta::{self as verify, Subscription};

use super::{CommitFailed, MAX_BODY};
use crate::app::{App, ResolvedChannel};
use crate::http::AppError;
use crate::store::{
    new_id, now_ms, ChannelRecord, IngressBatch, NewEnvelope, NewInboxEvent, NewUnhandled,
};

pub fn router() -> Router<App> {
    Router::new()
        .route("/webhooks/meta", get(handshake_shared).post(receive_shared))
        .route(
            "/webhooks/{platform}/{channel_id}",
            get(handshake_channel).post(receive_channel),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The platforms delivered through Meta's webhooks.
fn is_meta(kind: ChannelKind) -> bool {
    matches!(
        kind,
        ChannelKind::WhatsApp | ChannelKind::Messenger | ChannelKind::Instagram
    )
}

async fn handshake_shared(State(app): State<App>, Query(query): Query<Subscription>) -> Response {
    let expected = app.config.platforms.meta.verify_token.as_ref();
    answer_handshake(expected.map(|t| t.expose_secret().as_bytes()), &query)
}

async fn handshake_channel(
    State(app): State<App>,
    Path((platform, channel_id)): Path<(String, String)>,
    Query(query): Query<Subscription>,
) -> Result<Response, AppError> {
    let (_, channel) = find_channel(&app, &platform, &channel_id).await?;
    let expected =
        channel
            .credentials
            .verify_token()
            .or(app.config.platforms.meta.verify_token.as_ref());
    Ok(answer_handshake(
        expected.map(|t| t.expose_secret().as_bytes()),
        &query,
    ))
}

fn answer_handshake(expected: Option<&[u8]>, query: &Subscription) -> Response {
    match expected.map(|token| verify::verify_subscription(token, query)) {
        Some(Ok(challenge)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            challenge.to_string(),
        )
            .into_response(),
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn find_channel(
    app: &App,
    platform: &str,
    channel_id: &str,
) -> Result<(ChannelKind, Arc<ResolvedChannel>), AppError> {
    let kind: ChannelKind = platform.parse().map_err(|_| AppError::NotFound)?;
    if !is_meta(kind) {
        return Err(AppError::NotFound);
    }
    match app.resolved_channel(channel_id).await? {
        Some(channel) if channel.record.platform == kind.as_str() => Ok((kind, channel)),
        _ => Err(AppError::NotFound),
    }
}

/// A delivery to one channel's own route, verified with that channel's app secret
/// (or the operator app's when the channel has none).
async fn receive_channel(
    State(app): State<App>,
    Path((platform, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (kind, resolved) = find_channel(&app, &platform, &channel_id).await?;
    let channel = &resolved.record;
    let secret = resolved
        .credentials
        .signing_secret()
        .or(app.config.platforms.meta.app_secret.as_ref())
        .ok_or(AppError::Unauthorized)?;
    let signature = headers.get(verify::SIGNATURE_HEADER).map(|v| v.as_bytes());
    let verified = verify::verify_signature(secret.expose_secret().as_bytes(), signature, &body)
        .map_err(|e| {
            tracing::warn!(channel_id = %channel.id, reason = %e, "rejected webhook");
            AppError::Unauthorized
        })?;
    let channel_impl = app.channel_impl(kind).ok_or(AppError::NotFound)?;
    let received_at = now_ms();
    let mut batch = IngressBatch::default();
    match channel_impl.normalize(verified) {
        Ok(normalized) => {
            let Normalized { events, unhandled } = normalized;
            for item in unhandled {
                batch.unhandled.push(unhandled_row(
                    Some(channel),
                    kind,
                    &item.reason,
                    &item.raw,
                    received_at,
                ));
            }
            for event in events {
                if event.account_id == channel.account_id {
                    push_event(&mut batch, channel, kind, event, received_at);
                } else {
                    // Signed, but addressed to an account this channel does not own.
                    tracing::warn!(channel_id = %channel.id, "event for another account on a channel route");
                    let raw = serde_json::to_value(&event).unwrap_or_default();
                    batch.unhandled.push(unhandled_row(
                        Some(channel),
                        kind,
                        "account_mismatch",
                        &raw,
                        received_at,
                    ));
                }
            }
        }
        Err(e) => {
            tracing::warn!(channel_id = %channel.id, error = %e, "signed webhook could not be parsed");
            batch
                .unhandled
                .push(unparseable_row(Some(channel), kind, &body, received_at));
        }
    }
    batch.envelopes.push(NewEnvelope {
        tenant_id: Some(channel.tenant_id.clone()),
        channel_id: Some(channel.id.clone()),
        platform: kind.as_str().into(),
        body: body.to_vec(),
        received_at,
    });
    commit(&app, batch).await
}

/// A delivery to the operator app's shared route, routed per event by account id.
async fn receive_shared(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let secret = app
        .config
        .platforms
        .meta
        .app_secret
        .as_ref()
        .ok_or(AppError::Unauthorized)?;
    let signature = headers.get(verify::SIGNATURE_HEADER).map(|v| v.as_bytes());
    let verified = verify::verify_signature(secret.expose_secret().as_bytes(), signature, &body)
        .map_err(|e| {
            tracing::warn!(reason = %e, "rejected webhook on the shared Meta route");
            AppError::Unauthorized
        })?;
    let kind = ChannelKind::WhatsApp;
    let channel_impl = app.channel_impl(kind).ok_or(AppError::NotFound)?;
    let received_at = now_ms();
    let mut batch = IngressBatch::default();
    let mut routes: HashMap<String, Option<ChannelRecord>> = HashMap::new();
    match channel_impl.normalize(verified) {
        Ok(Normalized { events, unhandled }) => {
            for event in events {
                match route(&app, &mut routes, kind, &event.account_id).await? {
                    Some(channel) => push_event(&mut batch, &channel, kind, event, received_at),
                    None => {
                        let raw = serde_json::to_value(&event).unwrap_or_default();
                        batch.unhandled.push(unhandled_row(
                            None,
                            kind,
                            "unknown_account",
                            &raw,
                            received_at,
                        ));
                    }
                }
            }
            for item in unhandled {
                let channel = match &item.account_id {
                    Some(account) => route(&app, &mut routes, kind, account).await?,
                    None => None,
                };
                batch.unhandled.push(unhandled_row(
                    channel.as_ref(),
                    kind,
                    &item.reason,
                    &item.raw,
                    received_at,
                ));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "signed webhook on the shared Meta route could not be parsed");
            batch
                .unhandled
                .push(unparseable_row(None, kind, &body, received_at));
        }
    }
    // The raw body belongs to a tenant only when everything in it does; a delivery
    // spanning several tenants' accounts is kept at operator level.
    let mut owners = routes.values().flatten();
    let owner = match (owners.next(), owners.next()) {
        (Some(only), None) if routes.values().all(Option::is_some) => Some(only.clone()),
        _ => None,
    };
    batch.envelopes.push(NewEnvelope {
        tenant_id: owner.as_ref().map(|c| c.tenant_id.clone()),
        channel_id: owner.as_ref().map(|c| c.id.clone()),
        platform: "meta".into(),
        body: body.to_vec(),
        received_at,
    });
    commit(&app, batch).await
}

async fn route(
    app: &App,
    routes: &mut HashMap<String, Option<ChannelRecord>>,
    kind: ChannelKind,
    account_id: &str,
) -> Result<Option<ChannelRecord>, AppError> {
    if let Some(found) = routes.get(account_id) {
        return Ok(found.clone());
    }
    let found = app
        .store
        .channel_by_account(kind.as_str(), account_id)
        .await?;
    routes.insert(account_id.to_string(), found.clone());
    Ok(found)
}

pub(super) async fn commit(app: &App, batch: IngressBatch) -> Result<Response, AppError> {
    match app.committer.commit(batch).await {
        Ok(outcome) => {
            tracing::debug!(
                inserted = outcome.inserted,
                duplicates = outcome.duplicates,
                "webhook stored"
            );
            Ok(StatusCode::OK.into_response())
        }
        // Not stored: 503 so the platform delivers it again.
        Err(CommitFailed) => Err(AppError::Unavailable),
    }
}

/// Queues one event in the inbox under its channel.
pub(super) fn push_event(
    batch: &mut IngressBatch,
    channel: &ChannelRecord,
    kind: ChannelKind,
    event: InboundEvent,
    received_at: i64,
) {
    if let EventBody::Message(message) = &event.body {
        if let Content::Unsupported { reason, raw, .. } = &message.content {
            batch
                .unhandled
                .push(unhandled_row(Some(channel), kind, reason, raw, received_at));
        }
    }
    let conv_key = match event.chat() {
        Some(chat) if !matches!(event.body, EventBody::Status(_)) => {
            format!("{}:{chat}", channel.id)
        }
        // Statuses and account notices need no conversation order among messages.
        _ => format!("{}:{}:{}", channel.id, event.kind(), event.external_id),
    };
    let platform_ts = if event.timestamp > 0 {
        event.timestamp.saturating_mul(1000)
    } else {
        received_at
    };
    let Ok(payload) = serde_json::to_string(&event) else {
        return;
    };
    batch.events.push(NewInboxEvent {
        tenant_id: channel.tenant_id.clone(),
        channel_id: channel.id.clone(),
        platform: kind.as_str().into(),
        kind: event.kind().into(),
        external_id: event.external_id,
        conv_key,
        platform_ts,
        payload,
        received_at,
    });
}

pub(super) fn unhandled_row(
    channel: Option<&ChannelRecord>,
    kind: ChannelKind,
    reason: &str,
    raw: &serde_json::Value,
    received_at: i64,
) -> NewUnhandled {
    NewUnhandled {
        id: new_id(),
        tenant_id: channel.map(|c| c.tenant_id.clone()),
        channel_id: channel.map(|c| c.id.clone()),
        platform: kind.as_str().into(),
        reason: reason.into(),
        raw: raw.to_string(),
        received_at,
    }
}

pub(super) fn unparseable_row(
    channel: Option<&ChannelRecord>,
    kind: ChannelKind,
    body: &[u8],
    received_at: i64,
) -> NewUnhandled {
    let raw = serde_json::Value::String(String::from_utf8_lossy(body).into_owned());
    unhandled_row(channel, kind, "unparseable", &raw, received_at)
}
