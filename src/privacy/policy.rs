//! The policy layer the worker consults before any assistant sees a customer's
//! message: keywords (STOP/START/HUMAN and the tenant's own words), restriction,
//! consent to AI processing, hand-off (with idle return) and the AI disclosure.
//! Messages are always stored; the verdict only decides whether the assistant may
//! answer, and which fixed notice (if any) goes out instead.

use crate::app::App;
use crate::audit::Audit;
use crate::store::{
    new_id, AssistantSettings, ConversationRef, Effect, NewMessage, OutboxItem, PrivacyEffect,
    PrivacySettings, Purpose,
};

/// The built-in disclosure, used unless the tenant words its own.
pub const DISCLOSURE: &str =
    "You are chatting with an automated assistant (AI). Reply HUMAN at any time to reach a person.";
/// The disclosure is repeated after a conversation was idle this long.
pub const DISCLOSURE_IDLE_MS: i64 = 30 * 24 * 60 * 60 * 1000;

pub const STOP_CONFIRMATION: &str = "You have unsubscribed: our automated assistant will no longer process or answer your messages. Reply START to subscribe again; a person may still answer.";
pub const START_CONFIRMATION: &str =
    "You are subscribed again: our automated assistant will answer your messages. Reply STOP to unsubscribe.";
pub const HUMAN_NOTICE: &str = "Thank you, a person will answer you here as soon as possible.";

const STOP_WORDS: &[&str] = &["stop", "unsubscribe"];
const START_WORDS: &[&str] = &["start"];
const HUMAN_WORDS: &[&str] = &["human", "agent"];

/// A customer keyword: the whole message, case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Stop,
    Start,
    Human,
}

impl Keyword {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Human => "human",
        }
    }
}

/// Which keyword, if any, `text` is (built-in words and the tenant's own).
pub fn keyword(text: &str, settings: &PrivacySettings) -> Option<Keyword> {
    let word = text
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_lowercase();
    if word.is_empty() {
        return None;
    }
    let is = |builtin: &[&str], extra: &[String]| {
        builtin.contains(&word.as_str()) || extra.iter().any(|w| w.trim().to_lowercase() == word)
    };
    if is(STOP_WORDS, &settings.stop_words) {
        Some(Keyword::Stop)
    } else if is(START_WORDS, &settings.start_words) {
        Some(Keyword::Start)
    } else if is(HUMAN_WORDS, &settings.human_words) {
        Some(Keyword::Human)
    } else {
        None
    }
}

/// What the worker does with one customer message.
#[derive(Debug)]
pub enum Verdict {
    /// The assistant may answer; `disclosure` is prepended to its reply when due
    /// (the caller then records it on the turn's [`Effect::Touch`]).
    Assistant {
        disclosure: Option<String>,
        effects: Vec<Effect>,
        /// The tenant's assistant settings and whether it has knowledge, read with
        /// the policy's state (see [`Question::settings`](crate::assistant::Question)).
        settings: (AssistantSettings, bool),
    },
    /// No assistant: store the message, apply `effects`, send `notice` if any.
    Policy {
        outcome: &'static str,
        notice: Option<String>,
        effects: Vec<Effect>,
    },
}

/// Decides about a customer message with `text` (None: no text) in `conversation`
/// (as it was before this message), at `now`.
pub async fn check(
    app: &App,
    tenant_id: &str,
    conversation: &ConversationRef,
    text: Option<&str>,
    now: i64,
) -> anyhow::Result<Verdict> {
    let state = app
        .store
        .policy_state(tenant_id, &conversation.contact_id)
        .await?;
    let contact = conversation.contact_id.as_str();
    let audit = |action: &str| {
        Effect::Privacy(PrivacyEffect::Audit(
            Audit::new(tenant_id, "customer", action)
                .contact(contact)
                .target(&conversation.id),
        ))
    };
    let consent = |purpose: Purpose, granted: bool, word: Keyword| {
        Effect::Privacy(PrivacyEffect::Consent {
            contact_id: contact.to_string(),
            purpose,
            granted,
            source: "keyword",
            detail: Some(word.as_str().to_string()),
            actor: "customer".into(),
            at: now,
        })
    };
    // A restricted contact gets nothing but a person's replies.
    let notice = |text: &str| (!state.restricted).then(|| text.to_string());
    match text.and_then(|t| keyword(t, &state.settings)) {
        Some(Keyword::Stop) => {
            let already = state.ai_processing == Some(false);
            let mut effects = vec![];
            if !already {
                effects.push(consent(Purpose::AiProcessing, false, Keyword::Stop));
                effects.push(consent(Purpose::Marketing, false, Keyword::Stop));
            }
            return Ok(Verdict::Policy {
                outcome: "opted_out",
                notice: if already {
                    None
                } else {
                    notice(STOP_CONFIRMATION)
                },
                effects,
            });
        }
        Some(Keyword::Start) => {
            return Ok(Verdict::Policy {
                outcome: "opted_in",
                notice: notice(START_CONFIRMATION),
                effects: vec![consent(Purpose::AiProcessing, true, Keyword::Start)],
            });
        }
        Some(Keyword::Human) => {
            let mut effects = vec![];
            if conversation.status != "human" {
                effects.push(Effect::SetConversationStatus {
                    conversation_id: conversation.id.clone(),
                    status: "human",
                });
                effects.push(audit("conversation.handoff"));
            }
            return Ok(Verdict::Policy {
                outcome: "handed_off",
                notice: notice(HUMAN_NOTICE),
                effects,
            });
        }
        None => {}
    }
    if state.restricted {
        return Ok(Verdict::Policy {
            outcome: "skipped:restricted",
            notice: None,
            effects: vec![],
        });
    }
    if state.ai_processing == Some(false) {
        return Ok(Verdict::Policy {
            outcome: "skipped:consent_withdrawn",
            notice: None,
            effects: vec![],
        });
    }
    let mut effects = vec![];
    if conversation.status != "bot" {
        let idle_ms = state.settings.handoff_idle_minutes.saturating_mul(60_000);
        if now - conversation.last_message_at <= idle_ms {
            return Ok(Verdict::Policy {
                outcome: "handed_off",
                notice: None,
                effects,
            });
        }
        // Nobody answered for the configured time: the assistant takes over again.
        effects.push(Effect::SetConversationStatus {
            conversation_id: conversation.id.clone(),
            status: "bot",
        });
        effects.push(Effect::Privacy(PrivacyEffect::Audit(
            Audit::new(tenant_id, "system", "conversation.release")
                .contact(contact)
                .target(&conversation.id)
                .detail(serde_json::json!({"reason": "idle"})),
        )));
    }
    let due = conversation
        .disclosed_at
        .is_none_or(|_| now - conversation.last_message_at > DISCLOSURE_IDLE_MS);
    Ok(Verdict::Assistant {
        settings: state.answer,
        disclosure: due.then(|| {
            state
                .settings
                .disclosure
                .clone()
                .unwrap_or_else(|| DISCLOSURE.to_string())
        }),
        effects,
    })
}

/// Whether a queued reply part may still go out.
pub enum SendCheck {
    Go,
    /// Consent withdrawn or processing restricted.
    Withheld,
    /// The recipient blocked the bot.
    Blocked,
}

/// Whether a queued reply part may still go out: checked again just before each
/// send, so an assistant reply queued before consent was withdrawn or the contact
/// restricted is withheld. A person's replies always go; the gateway's own notices
/// go unless the contact is restricted. Nothing goes to a recipient who blocked the
/// bot (Telegram, Discord).
pub async fn may_send(app: &App, item: &OutboxItem) -> anyhow::Result<SendCheck> {
    let Some(policy) = app
        .store
        .send_policy(
            &item.tenant_id,
            &item.message_id,
            &item.channel_id,
            &item.recipient,
        )
        .await?
    else {
        return Ok(SendCheck::Withheld);
    };
    let allowed = match policy.author.as_str() {
        "agent" => true,
        "system" => !policy.restricted,
        _ => !policy.restricted && policy.ai_processing != Some(false),
    };
    Ok(if !allowed {
        SendCheck::Withheld
    } else if policy.unreachable {
        SendCheck::Blocked
    } else {
        SendCheck::Go
    })
}

/// The ledger entry for a consent change the platform reported (WhatsApp
/// `user_preferences`, a blocked bot, ...), as the worker's outcome and effects.
pub fn signal_effects(
    conversation: &ConversationRef,
    signal: &channels::ConsentSignal,
    platform: &str,
    now: i64,
) -> (&'static str, Vec<Effect>) {
    let Some(purpose) = Purpose::ALL
        .into_iter()
        .find(|p| p.as_str() == signal.purpose)
    else {
        return ("skipped:unknown_purpose", vec![]);
    };
    (
        "consent",
        vec![Effect::Privacy(PrivacyEffect::Consent {
            contact_id: conversation.contact_id.clone(),
            purpose,
            granted: signal.granted,
            source: "platform",
            detail: Some(signal.signal.clone()),
            actor: format!("platform:{platform}"),
            at: now,
        })],
    )
}

/// A fixed notice from the gateway itself (author `system`) queued to `recipient`.
pub fn notice_effect(
    app: &App,
    platform: &str,
    conversation_id: &str,
    channel_id: &str,
    recipient: &str,
    text: &str,
    now: i64,
) -> Effect {
    let limit = platform
        .parse()
        .ok()
        .and_then(|kind| app.channel_impl(kind))
        .map_or(1000, |c| c.text_limit());
    Effect::EnqueueReply {
        conversation_id: conversation_id.to_string(),
        channel_id: channel_id.to_string(),
        recipient: recipient.to_string(),
        message: NewMessage {
            id: new_id(),
            direction: "outbound",
            author: "system",
            kind: "text".into(),
            text: Some(text.to_string()),
            content: None,
            external_id: None,
            reply_to: None,
            status: "queued",
            produced_by: Some("policy".into()),
            platform_ts: None,
            created_at: now,
        },
        parts: channels::text::split(text, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_messages_in_any_case_and_the_tenants_words_count() {
        let mut s = PrivacySettings::default();
        assert_eq!(keyword("STOP", &s), Some(Keyword::Stop));
        assert_eq!(keyword("  unsubscribe. ", &s), Some(Keyword::Stop));
        assert_eq!(keyword("Start", &s), Some(Keyword::Start));
        assert_eq!(keyword("agent!", &s), Some(Keyword::Human));
        assert_eq!(keyword("please stop", &s), None);
        assert_eq!(keyword("Halt", &s), None);
        s.stop_words = vec!["Halt".into(), "ALTO".into()];
        s.human_words = vec!["Mensch".into()];
        assert_eq!(keyword("halt", &s), Some(Keyword::Stop));
        assert_eq!(keyword("alto", &s), Some(Keyword::Stop));
        assert_eq!(keyword("MENSCH", &s), Some(Keyword::Human));
    }
}
