//! Telegram webhook deliveries on `/webhooks/telegram/{channel_id}`: the secret
//! token is checked (constant time, 401 otherwise), the update is normalized with the
//! channel's bot identity and stored; a callback query is acknowledged in the
//! webhook answer itself (`answerCallbackQuery`), after the commit.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use channels::telegram::{callback_answer, normalize_update, BotIdentity};
use channels::{ChannelKind, Credentials, Normalized};
use secrecy::ExposeSecret;
use webhooks::telegram as verify;

use super::meta::{commit, push_event, unhandled_row, unparseable_row};
use super::MAX_BODY;
use crate::app::App;
use crate::http::AppError;
use crate::store::{now_ms, IngressBatch, NewEnvelope};

pub fn router() -> Router<App> {
    Router::new()
        .route("/webhooks/telegram/{channel_id}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn receive(
    State(app): State<App>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let kind = ChannelKind::Telegram;
    let resolved = match app.resolved_channel(&channel_id).await? {
        Some(c) if c.record.platform == kind.as_str() => c,
        _ => return Err(AppError::NotFound),
    };
    let Credentials::Telegram(credentials) = &resolved.credentials else {
        return Err(AppError::NotFound);
    };
    let channel = &resolved.record;
    let header = headers.get(verify::SECRET_HEADER).map(|v| v.as_bytes());
    let verified = verify::verify_secret_token(
        credentials.secret_token.expose_secret().as_bytes(),
        header,
        &body,
    )
    .map_err(|e| {
        tracing::warn!(channel_id = %channel.id, reason = %e, "rejected telegram webhook");
        AppError::Unauthorized
    })?;
    let bot = BotIdentity {
        id: credentials.bot_id.parse().ok(),
        username: credentials.bot_username.clone(),
    };
    let received_at = now_ms();
    let mut batch = IngressBatch::default();
    match normalize_update(&bot, verified.into_inner()) {
        Ok(Normalized { events, unhandled }) => {
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
                push_event(&mut batch, channel, kind, event, received_at);
            }
        }
        Err(e) => {
            tracing::warn!(channel_id = %channel.id, error = %e, "signed telegram update could not be parsed");
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
    let stored = commit(&app, batch).await?;
    Ok(match callback_answer(&body) {
        Some(answer) => (StatusCode::OK, Json(answer)).into_response(),
        None => stored,
    })
}
