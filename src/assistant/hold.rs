//! When no answerer is available: the customer is told once that a person will get
//! back to them, the conversation goes to a human, and the event is retried until a
//! provider answers (or an agent writes, or the retries run out).

use super::HOLDING_TEXT;
use crate::app::App;
use crate::store::{new_id, AiHold, ConversationRef, Effect, InboxItem, NewMessage};

/// Longest wait between retries of a held event (about five minutes in all before
/// the conversation is left with the person).
pub const RETRY_MAX_MS: i64 = 30_000;

/// The hold on this event, if its customer already got the holding message.
pub async fn find(app: &App, item: &InboxItem) -> anyhow::Result<Option<AiHold>> {
    // A hold is made by an attempt that is then retried: the first has none.
    if item.attempts <= 1 {
        return Ok(None);
    }
    Ok(app.store.ai_hold(&item.tenant_id, item.id).await?)
}

/// Handles "nobody can answer now" for an event whose own effects (the customer's
/// message) are `effects`. `None`: retry the event later.
#[allow(clippy::too_many_arguments)]
pub async fn unavailable(
    app: &App,
    item: &InboxItem,
    conversation: &ConversationRef,
    recipient: &str,
    hold: Option<AiHold>,
    mut effects: Vec<Effect>,
    max_attempts: i64,
    now: i64,
) -> anyhow::Result<Option<(&'static str, Vec<Effect>)>> {
    if hold.is_none() {
        let limit = item
            .platform
            .parse()
            .ok()
            .and_then(|kind| app.channel_impl(kind))
            .map_or(1000, |c| c.text_limit());
        effects.push(Effect::EnqueueReply {
            conversation_id: conversation.id.clone(),
            channel_id: item.channel_id.clone(),
            recipient: recipient.to_string(),
            message: NewMessage {
                id: new_id(),
                direction: "outbound",
                author: "system",
                kind: "text".into(),
                text: Some(HOLDING_TEXT.into()),
                content: None,
                external_id: None,
                reply_to: None,
                status: "queued",
                produced_by: Some("holding".into()),
                platform_ts: None,
                created_at: now,
            },
            parts: channels::text::split(HOLDING_TEXT, limit),
        });
        effects.push(Effect::SetConversationStatus {
            conversation_id: conversation.id.clone(),
            status: "human",
        });
    }
    if item.attempts >= max_attempts {
        // Stop retrying; the conversation stays with a person.
        effects.push(Effect::ClearAiHold { inbox_id: item.id });
        return Ok(Some(("handed_off:ai_unavailable", effects)));
    }
    if hold.is_none() {
        // The customer's message, the holding reply and the hold commit together; the
        // hold is what keeps a retry from sending the holding reply again.
        effects.push(Effect::HoldForAi {
            conversation_id: conversation.id.clone(),
            inbox_id: item.id,
            at: now,
        });
        app.store.apply(&item.tenant_id, &effects).await?;
        app.outbox_wake.notify_one();
    }
    Ok(None)
}
