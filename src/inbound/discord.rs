//! Discord interactions endpoint, `/webhooks/discord/{channel_id}`: Ed25519 over
//! timestamp + body with the application's public key, and a timestamp within five
//! minutes of now (401 otherwise); PING is answered with PONG; other interactions are
//! kept raw (not modelled yet) and answered with an ephemeral notice so the user is
//! not left waiting.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use channels::{ChannelKind, Credentials};
use webhooks::discord as verify;

use super::meta::{commit, unhandled_row, unparseable_row};
use super::MAX_BODY;
use crate::app::App;
use crate::http::AppError;
use crate::store::{now_ms, IngressBatch, NewEnvelope};

const NOT_SUPPORTED: &str =
    r#"{"type":4,"data":{"content":"This action is not supported yet.","flags":64}}"#;

pub fn router() -> Router<App> {
    Router::new()
        .route("/webhooks/discord/{channel_id}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn receive(
    State(app): State<App>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let kind = ChannelKind::Discord;
    let resolved = match app.resolved_channel(&channel_id).await? {
        Some(c) if c.record.platform == kind.as_str() => c,
        _ => return Err(AppError::NotFound),
    };
    let Credentials::Discord(credentials) = &resolved.credentials else {
        return Err(AppError::NotFound);
    };
    let channel = &resolved.record;
    let key =
        verify::parse_public_key(&credentials.public_key).map_err(|_| AppError::Unauthorized)?;
    let verified = verify::verify_interaction(
        &key,
        headers.get(verify::SIGNATURE_HEADER).map(|v| v.as_bytes()),
        headers.get(verify::TIMESTAMP_HEADER).map(|v| v.as_bytes()),
        &body,
        now_ms() / 1000,
    )
    .map_err(|e| {
        tracing::warn!(channel_id = %channel.id, reason = %e, "rejected discord interaction");
        AppError::Unauthorized
    })?;
    if verify::is_ping(&verified) {
        return Ok(json_response(verify::PONG_BODY));
    }
    let channel_impl = app.channel_impl(kind).ok_or(AppError::NotFound)?;
    let received_at = now_ms();
    let mut batch = IngressBatch::default();
    match channel_impl.normalize(verified) {
        Ok(normalized) => {
            for item in normalized.unhandled {
                batch.unhandled.push(unhandled_row(
                    Some(channel),
                    kind,
                    &item.reason,
                    &item.raw,
                    received_at,
                ));
            }
        }
        Err(e) => {
            tracing::warn!(channel_id = %channel.id, error = %e, "signed interaction could not be parsed");
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
    commit(&app, batch).await?;
    Ok(json_response(NOT_SUPPORTED))
}

fn json_response(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
