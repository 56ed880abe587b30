//! Worker steps for Meta messaging events (Messenger, Instagram): echoes of messages
//! the business sent itself, watermark receipts, and handover-protocol notices.
//! Customer messages, reactions, edits and unsends go through the common steps in
//! `handle`.

use channels::messenger::OWN_METADATA;
use channels::{ChannelKind, Content, Echo, EventBody, Handover, Receipt};

use super::handle::{inbound, resolve, STATUS_RETRIES};
use crate::app::App;
use crate::outbound::window;
use crate::store::{Effect, InboxItem, NewMessage};

pub enum Outcome {
    Done(&'static str, Vec<Effect>),
    Later(&'static str),
}

/// Handles an echo, receipt or handover event.
pub async fn handle(
    app: &App,
    item: &InboxItem,
    body: EventBody,
    external_id: String,
    platform_ts: Option<i64>,
    now: i64,
) -> anyhow::Result<Outcome> {
    match body {
        EventBody::Echo(e) => echo(app, item, e, external_id, platform_ts, now).await,
        EventBody::Receipt(r) => Ok(receipt(item, r)),
        EventBody::Handover(h) => handover(app, item, h, external_id, platform_ts, now).await,
        _ => Ok(Outcome::Done("skipped:unexpected", vec![])),
    }
}

/// Why the assistant stays silent on a customer message, if it does: the thread
/// belongs to another app (standby), or the message is older than the standard
/// messaging window (a late delivery).
pub fn silence(
    item: &InboxItem,
    standby: bool,
    platform_ts: Option<i64>,
    now: i64,
) -> Option<&'static str> {
    if standby {
        return Some("standby");
    }
    let kind: ChannelKind = item.platform.parse().ok()?;
    (!window::assistant_may_answer(kind, platform_ts, now)).then_some("skipped:outside_window")
}

/// A message the account sent itself. Our own sends are known (by their `metadata`
/// or message id) and skipped; anything else was written by a person in Meta's inbox
/// (or another app) and is recorded as an agent's message: the conversation is theirs.
async fn echo(
    app: &App,
    item: &InboxItem,
    echo: Echo,
    external_id: String,
    platform_ts: Option<i64>,
    now: i64,
) -> anyhow::Result<Outcome> {
    let ours = echo.metadata.as_deref() == Some(OWN_METADATA)
        || app
            .store
            .outbound_exists(&item.channel_id, &external_id)
            .await?;
    if ours {
        return Ok(Outcome::Done("echo:own", vec![]));
    }
    // A send of ours may have been accepted with its id not recorded yet.
    if item.attempts < STATUS_RETRIES
        && app
            .store
            .outbox_sending(&item.channel_id, &echo.chat)
            .await?
    {
        return Ok(Outcome::Later("echo_before_send"));
    }
    let conversation = resolve(app, item, &echo.chat, &echo.recipient, now).await?;
    let message = NewMessage {
        direction: "outbound",
        author: "agent",
        kind: echo.content.kind().to_string(),
        text: echo.content.text().map(str::to_string),
        content: match &echo.content {
            Content::Text { .. } => None,
            other => serde_json::to_string(other).ok(),
        },
        status: "sent",
        ..inbound(external_id, platform_ts, now)
    };
    Ok(Outcome::Done(
        "echo:agent",
        vec![
            Effect::InsertMessage {
                conversation_id: conversation.id.clone(),
                message,
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
        ],
    ))
}

fn receipt(item: &InboxItem, receipt: Receipt) -> Outcome {
    Outcome::Done(
        "receipt",
        vec![Effect::ApplyReceipt {
            channel_id: item.channel_id.clone(),
            recipient: receipt.chat,
            status: receipt.status,
            watermark: receipt.watermark,
            external_ids: receipt.message_ids,
        }],
    )
}

/// Thread control moved between apps: kept in the conversation as a system notice.
async fn handover(
    app: &App,
    item: &InboxItem,
    handover: Handover,
    external_id: String,
    platform_ts: Option<i64>,
    now: i64,
) -> anyhow::Result<Outcome> {
    let conversation = resolve(app, item, &handover.chat, &handover.sender, now).await?;
    let content = serde_json::json!({"action": handover.action, "detail": handover.raw});
    let message = NewMessage {
        author: "system",
        kind: "handover".into(),
        content: Some(content.to_string()),
        ..inbound(external_id, platform_ts, now)
    };
    Ok(Outcome::Done(
        "handover",
        vec![Effect::InsertMessage {
            conversation_id: conversation.id,
            message,
        }],
    ))
}
