//! Conversations and their messages; a human agent's replies and hand-off.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::http::extract::{JsonBody, TenantAuth};
use crate::http::AppError;
use crate::outbound::window;
use crate::store::{new_id, now_ms, ConversationFilter, ConversationRecord, Effect, NewMessage};

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/conversations", get(list))
        .route(
            "/api/v1/conversations/{id}/messages",
            get(messages).post(reply),
        )
        .route("/api/v1/conversations/{id}/handoff", post(handoff))
        .route("/api/v1/conversations/{id}/release", post(release))
        // -- web: one conversation (the console's transcript header) ----
        .route("/api/v1/conversations/{id}", get(one))
}

async fn one(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(conversation_json(&find(&app, &tenant_id, &id).await?)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    platform: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn encode_cursor(c: &ConversationRecord) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:{}", c.last_message_at, c.id))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), AppError> {
    let bad = || AppError::BadRequest("invalid cursor".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_string()))
}

fn conversation_json(c: &ConversationRecord) -> Value {
    json!({
        "id": c.id,
        "channel_id": c.channel_id,
        "platform": c.platform,
        "contact_id": c.contact_id,
        "status": c.status,
        "last_message_at": c.last_message_at,
        "created_at": c.created_at,
    })
}

async fn list(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::Unprocessable(
            "limit must be between 1 and 200".into(),
        ));
    }
    let filter = ConversationFilter {
        platform: q.platform.filter(|p| !p.is_empty()),
        status: q.status.filter(|s| !s.is_empty()),
        after: q
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?,
        limit,
    };
    let items = app.store.list_conversations(&tenant_id, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(encode_cursor))
        .flatten();
    Ok(Json(json!({
        "items": items.iter().map(conversation_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

async fn find(app: &App, tenant_id: &str, id: &str) -> Result<ConversationRecord, AppError> {
    app.store
        .conversation(tenant_id, id)
        .await?
        .ok_or(AppError::NotFound)
}

async fn messages(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    find(&app, &tenant_id, &id).await?;
    let items: Vec<Value> = app
        .store
        .messages(&tenant_id, &id)
        .await?
        .into_iter()
        .map(|m| {
            let (provider, model, offline) = super::assistant::producer(m.produced_by.as_deref());
            json!({
                "id": m.id,
                "direction": m.direction,
                "author": m.author,
                "kind": m.kind,
                "text": m.text,
                "content": m.content.and_then(|c| serde_json::from_str::<Value>(&c).ok()),
                "external_id": m.external_id,
                "reply_to": m.reply_to,
                "status": m.status,
                "error_code": m.error_code,
                "error_detail": m.error_detail,
                "produced_by": m.produced_by,
                "provider": provider,
                "model": model,
                "offline": offline,
                "possible_duplicate": m.possible_duplicate,
                "created_at": m.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentReply {
    text: String,
}

/// A human agent's reply: queued for sending; the conversation becomes `human`.
async fn reply(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AgentReply>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let conversation = find(&app, &tenant_id, &id).await?;
    let text = body.text.trim().to_string();
    if text.is_empty() {
        return Err(AppError::Unprocessable("`text` must not be empty".into()));
    }
    let limit = conversation
        .platform
        .parse()
        .ok()
        .and_then(|kind| app.channel_impl(kind))
        .map_or(1000, |c| c.text_limit());
    let now = now_ms();
    let message_id = new_id();
    // -- Meta messaging: the reply must fit the platform's messaging window.
    let tag = agent_window(&app, &tenant_id, &conversation, now).await?;
    let held = held_reason(&app, &conversation.channel_id).await;
    let mut effects = vec![
        Effect::EnqueueReply {
            conversation_id: conversation.id.clone(),
            channel_id: conversation.channel_id.clone(),
            recipient: conversation.external_chat_id.clone(),
            message: NewMessage {
                id: message_id.clone(),
                direction: "outbound",
                author: "agent",
                kind: "text".into(),
                text: Some(text.clone()),
                content: None,
                external_id: None,
                reply_to: None,
                status: "queued",
                produced_by: None,
                platform_ts: None,
                created_at: now,
            },
            parts: channels::text::split(&text, limit),
        },
        Effect::Touch {
            conversation_id: conversation.id.clone(),
            at: now,
            inbound: false,
            disclosed: false,
        },
        Effect::SetConversationStatus {
            conversation_id: conversation.id,
            status: "human",
        },
    ];
    if let Some(tag) = tag {
        effects.push(Effect::TagReply {
            message_id: message_id.clone(),
            tag: tag.into(),
        });
    }
    app.store.apply(&tenant_id, &effects).await?;
    app.wake_outbox();
    let mut answer = json!({"id": message_id, "status": "queued"});
    if let Some(tag) = tag {
        answer["message_tag"] = json!(tag);
    }
    if let Some(held) = held {
        answer["held"] = json!(held);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

// -- Meta messaging (Messenger, Instagram) ------------------------------------------------

/// The message tag a person's reply needs (`HUMAN_AGENT` after the 24-hour window),
/// or a refusal once the customer has not written for 7 days.
async fn agent_window(
    app: &App,
    tenant_id: &str,
    conversation: &ConversationRecord,
    now: i64,
) -> Result<Option<&'static str>, AppError> {
    let Ok(kind) = conversation.platform.parse() else {
        return Ok(None);
    };
    if !window::applies(kind) {
        return Ok(None);
    }
    let last = app
        .store
        .last_customer_message_at(tenant_id, &conversation.id)
        .await?;
    match window::agent_reply(kind, last, now) {
        window::AgentReply::Standard => Ok(None),
        window::AgentReply::Tagged(tag) => Ok(Some(tag)),
        window::AgentReply::Closed => Err(AppError::Refused(
            "outside_messaging_window",
            format!(
                "{kind} allows a person's reply only within 7 days of the customer's last \
                 message; this customer has not written since then, so the reply was not queued"
            ),
        )),
    }
}

/// Why replies on the channel are held rather than sent, if they are (its
/// credentials were rejected and need re-authorization).
async fn held_reason(app: &App, channel_id: &str) -> Option<String> {
    let channel = app.store.channel(channel_id).await.ok().flatten()?;
    (channel.status != "active").then(|| {
        channel
            .status_detail
            .unwrap_or_else(|| format!("channel is {}", channel.status))
    })
}

async fn set_status(
    app: &App,
    tenant_id: &str,
    id: &str,
    status: &'static str,
) -> Result<Json<Value>, AppError> {
    let conversation = find(app, tenant_id, id).await?;
    app.store
        .apply(
            tenant_id,
            &[Effect::SetConversationStatus {
                conversation_id: conversation.id.clone(),
                status,
            }],
        )
        .await?;
    Ok(Json(json!({"id": conversation.id, "status": status})))
}

async fn handoff(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_status(&app, &tenant_id, &id, "human").await
}

async fn release(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_status(&app, &tenant_id, &id, "bot").await
}
