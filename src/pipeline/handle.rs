//! Handling one inbox event.

use channels::{Content, EventBody, InboundEvent, InboundMessage, Participant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::messaging;
use crate::app::App;
use crate::assistant::Question;
use crate::privacy::policy::{self, Verdict};
use crate::store::{
    new_id, now_ms, Completed, Completion, ConversationKey, ConversationRef, Effect, HandOff,
    InboxItem, NewMessage,
};

/// Statuses that arrive before their send is recorded are retried this many times.
pub(super) const STATUS_RETRIES: i64 = 8;
/// An event that keeps failing is given up after this many attempts (about half an
/// hour of backoff), instead of being retried forever.
const MAX_ATTEMPTS: i64 = 12;
/// Retry note of an event held because no answerer was available.
const AI_UNAVAILABLE: &str = "ai_unavailable";

pub async fn handle(app: App, owner: String, will_claim: Arc<AtomicBool>, item: InboxItem) {
    let id = item.id;
    let attempts = item.attempts;
    let tenant_id = item.tenant_id.clone();
    // -- operations: latency metrics
    let started = std::time::Instant::now();
    let received_at = item.received_at;
    let handled = |result: &str, done: bool| {
        let e2e = done.then(|| ((now_ms() - received_at).max(0) as f64) / 1000.0);
        crate::metrics::event_handled(result, started.elapsed().as_secs_f64(), e2e);
    };
    match process(&app, &owner, item).await {
        Ok(Step::Done(mut completion)) => {
            // Fresh replies go straight to this instance's dispatcher when it has
            // slots free: claimed in the completion's own transaction.
            let replies = completion
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::EnqueueReply { .. }))
                .count();
            let slots = app.replies.reserve(replies).unwrap_or_default();
            if !slots.is_empty() {
                completion.hand_off = Some(HandOff {
                    owner: app.dispatcher_owner(),
                    lease_until: now_ms() + app.config.worker.lease_ms as i64,
                });
            }
            complete(
                &app,
                &completion,
                (replies, slots),
                handled,
                attempts,
                &will_claim,
            )
            .await
        }
        Ok(Step::Later(note)) => {
            handled("retry", false);
            retry(&app, id, &owner, attempts, note).await
        }
        Err(e) => {
            handled(
                if attempts < MAX_ATTEMPTS {
                    "retry"
                } else {
                    "failed"
                },
                false,
            );
            tracing::error!(
                inbox_id = id,
                attempts,
                error = format!("{e:#}"),
                "inbox event failed"
            );
            if attempts < MAX_ATTEMPTS {
                retry(&app, id, &owner, attempts, "error").await;
                return;
            }
            // A poison event: stop retrying. Its outcome records the failure; the raw
            // delivery stays in the envelope table for inspection.
            let failed = Completion {
                inbox_id: id,
                owner,
                tenant_id,
                outcome: "failed:error".into(),
                now: now_ms(),
                effects: vec![],
                hand_off: None,
            };
            match app.store.complete_inbox(&failed).await {
                Ok(done) => next_may_be_ready(&app, &done, id, &will_claim).await,
                Err(e) => {
                    tracing::error!(inbox_id = id, error = %e, "could not give up on inbox event")
                }
            }
        }
    }
}

/// Wakes the worker when another event of the completed one's conversation is open:
/// it may be ready now. New events wake the worker themselves. Where the completion
/// could not be sure ([`Completed::sure`]), it is asked again after the commit,
/// unless the worker is about to claim anyway (`will_claim`).
async fn next_may_be_ready(app: &App, done: &Completed, id: i64, will_claim: &AtomicBool) {
    if !done.kept {
        return;
    }
    let more = done.more
        || (!done.sure
            && !will_claim.load(Ordering::SeqCst)
            // Unread, claim: the completion itself stands.
            && app.store.open_besides(id).await.unwrap_or(true));
    if more {
        app.inbox_wake.notify_one();
    }
}

/// Writes `completion`; hands the reply parts claimed with it to the dispatcher in
/// the reserved `slots`, and wakes the dispatcher for any other of its `replies`.
async fn complete(
    app: &App,
    completion: &Completion,
    (replies, slots): (usize, Vec<tokio::sync::OwnedSemaphorePermit>),
    handled: impl Fn(&str, bool),
    attempts: i64,
    will_claim: &AtomicBool,
) {
    let (id, owner) = (completion.inbox_id, &completion.owner);
    match app.store.complete_inbox(completion).await {
        Ok(mut done) if done.kept => {
            handled("done", true);
            let handed = done.handed.len();
            for (part, slot) in std::mem::take(&mut done.handed).into_iter().zip(slots) {
                app.replies.hand(part, slot);
            }
            if handed < replies {
                app.wake_outbox();
            }
            next_may_be_ready(app, &done, id, will_claim).await;
        }
        Ok(_) => {
            handled("lease_lost", false);
            tracing::warn!(
                inbox_id = id,
                "lease lost before completion; another worker has it"
            )
        }
        Err(e) => {
            tracing::error!(inbox_id = id, error = %e, "completing inbox event failed");
            retry(app, id, owner, attempts, "complete_failed").await;
        }
    }
}

enum Step {
    Done(Completion),
    Later(&'static str),
}

async fn retry(app: &App, id: i64, owner: &str, attempts: i64, note: &str) {
    let mut delay = 1000i64.saturating_mul(1 << attempts.clamp(0, 8));
    if note == AI_UNAVAILABLE {
        // Held for the providers: later messages of the conversation wait behind it,
        // and open circuits make a retry cheap, so look again soon.
        delay = delay.min(crate::assistant::hold::RETRY_MAX_MS);
    }
    if let Err(e) = app
        .store
        .retry_inbox(id, owner, now_ms() + delay, note)
        .await
    {
        tracing::error!(inbox_id = id, error = %e, "could not reschedule inbox event; its lease will expire");
    }
}

async fn process(app: &App, owner: &str, item: InboxItem) -> anyhow::Result<Step> {
    let now = now_ms();
    let done = |outcome: &str, effects: Vec<Effect>| {
        Step::Done(Completion {
            inbox_id: item.id,
            owner: owner.to_string(),
            tenant_id: item.tenant_id.clone(),
            outcome: outcome.to_string(),
            now,
            effects,
            hand_off: None,
        })
    };
    let Some(payload) = item.payload.as_deref() else {
        return Ok(done("skipped:no_payload", vec![]));
    };
    // serde's message may quote the payload (customer text): keep only its position.
    let event: InboundEvent = serde_json::from_str(payload).map_err(|e| {
        anyhow::anyhow!(
            "stored event unreadable ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let platform_ts = (event.timestamp > 0).then(|| event.timestamp * 1000);
    // -- Meta messaging: another app owns the thread; keep the event, never answer.
    let (body, standby) = match event.body {
        EventBody::Standby(s) => (*s.body, true),
        body => (body, false),
    };
    match body {
        EventBody::Message(message) => {
            let conversation = resolve(app, &item, &message.chat, &message.sender, now).await?;
            Ok(
                match answer(
                    app,
                    &item,
                    conversation,
                    message,
                    event.external_id,
                    (platform_ts, standby),
                    now,
                )
                .await?
                {
                    Some((outcome, effects)) => done(outcome, effects),
                    None => Step::Later(AI_UNAVAILABLE),
                },
            )
        }
        EventBody::Reaction(reaction) => {
            let conversation = resolve(app, &item, &reaction.chat, &reaction.sender, now).await?;
            let message = NewMessage {
                kind: "reaction".into(),
                text: reaction.emoji.clone(),
                reply_to: Some(reaction.target),
                ..inbound(event.external_id, platform_ts, now)
            };
            Ok(done(
                "stored",
                vec![
                    Effect::InsertMessage {
                        conversation_id: conversation.id.clone(),
                        message,
                    },
                    Effect::Touch {
                        conversation_id: conversation.id,
                        at: now,
                        inbound: true,
                        disclosed: false,
                    },
                ],
            ))
        }
        EventBody::Edit(edit) => {
            let conversation = resolve(app, &item, &edit.chat, &edit.sender, now).await?;
            Ok(done(
                "edited",
                vec![Effect::EditMessage {
                    conversation_id: conversation.id,
                    target: edit.target,
                    text: edit.content.text().map(str::to_string),
                    content: serde_json::to_string(&edit.content).ok(),
                    at: now,
                }],
            ))
        }
        EventBody::Delete(delete) => {
            let Some(sender) = &delete.sender else {
                // No author (Discord): the message is found by its id in the chat's
                // conversation, and nobody new is made up for it.
                return Ok(done(
                    "deleted",
                    vec![Effect::DeleteChatMessage {
                        channel_id: item.channel_id.clone(),
                        chat: delete.chat,
                        target: delete.target,
                    }],
                ));
            };
            let conversation = resolve(app, &item, &delete.chat, sender, now).await?;
            // Meta messaging: an unsent message leaves storage altogether.
            let effect = if matches!(item.platform.as_str(), "messenger" | "instagram") {
                Effect::RemoveMessage {
                    conversation_id: conversation.id,
                    target: delete.target,
                }
            } else {
                Effect::DeleteMessage {
                    conversation_id: conversation.id,
                    target: delete.target,
                }
            };
            Ok(done("deleted", vec![effect]))
        }
        EventBody::Status(status) => {
            if !app
                .store
                .outbound_exists(&item.channel_id, &status.message_id)
                .await?
            {
                // The send may not be recorded yet; after a few tries it is not ours.
                return Ok(if item.attempts < STATUS_RETRIES {
                    Step::Later("status_before_send")
                } else {
                    done("skipped:unknown_message", vec![])
                });
            }
            let (error_code, error_detail) = match &status.error {
                Some(e) => (e.code, e.detail.clone().or_else(|| e.title.clone())),
                None => (None, None),
            };
            Ok(done(
                "status",
                vec![Effect::ApplyStatus {
                    channel_id: item.channel_id.clone(),
                    external_id: status.message_id,
                    status: status.status,
                    error_code,
                    error_detail,
                }],
            ))
        }
        EventBody::Consent(signal) => {
            let conversation = resolve(app, &item, &signal.chat, &signal.sender, now).await?;
            let (outcome, effects) =
                policy::signal_effects(&conversation, &signal, &item.platform, now);
            Ok(done(outcome, effects))
        }
        // -- telegram, discord -------------------------------------------------------
        EventBody::Reachability(change) => {
            let conversation = resolve(app, &item, &change.chat, &change.sender, now).await?;
            Ok(done(
                if change.reachable {
                    "unblocked"
                } else {
                    "blocked"
                },
                vec![Effect::SetReachable {
                    contact_id: conversation.contact_id,
                    channel_id: item.channel_id.clone(),
                    user_id: change.sender.id,
                    reachable: change.reachable,
                    at: platform_ts.unwrap_or(now),
                }],
            ))
        }
        EventBody::AccountError(error) => {
            let detail = format!(
                "platform error {}: {}",
                error.code.map_or_else(|| "?".into(), |c| c.to_string()),
                error.title.or(error.detail).unwrap_or_default()
            );
            Ok(done(
                "account_error",
                vec![Effect::ChannelNotice {
                    channel_id: item.channel_id.clone(),
                    detail,
                }],
            ))
        }
        // -- Meta messaging (Messenger, Instagram) ----------------------------------------
        other @ (EventBody::Echo(_)
        | EventBody::Receipt(_)
        | EventBody::Handover(_)
        | EventBody::Standby(_)) => Ok(
            match messaging::handle(app, &item, other, event.external_id, platform_ts, now).await? {
                messaging::Outcome::Done(outcome, effects) => done(outcome, effects),
                messaging::Outcome::Later(note) => Step::Later(note),
            },
        ),
    }
}

pub(super) async fn resolve(
    app: &App,
    item: &InboxItem,
    chat: &str,
    sender: &Participant,
    now: i64,
) -> anyhow::Result<ConversationRef> {
    Ok(app
        .store
        .resolve_conversation(&ConversationKey {
            tenant_id: item.tenant_id.clone(),
            channel_id: item.channel_id.clone(),
            chat: chat.to_string(),
            user_id: sender.id.clone(),
            phone: sender.phone.clone(),
            username: sender.username.clone(),
            name: sender.name.clone(),
            now,
        })
        .await?)
}

pub(super) fn inbound(external_id: String, platform_ts: Option<i64>, now: i64) -> NewMessage {
    NewMessage {
        id: new_id(),
        direction: "inbound",
        author: "customer",
        kind: "text".into(),
        text: None,
        content: None,
        external_id: Some(external_id),
        reply_to: None,
        status: "received",
        produced_by: None,
        platform_ts,
        created_at: now,
    }
}

/// Records a customer's message and, when the assistant owns the conversation and
/// there is text to answer, its reply. `None`: no answerer is available now; the
/// customer was told once that a person will follow up, and the event is retried.
async fn answer(
    app: &App,
    item: &InboxItem,
    conversation: ConversationRef,
    message: InboundMessage,
    external_id: String,
    (platform_ts, standby): (Option<i64>, bool),
    now: i64,
) -> anyhow::Result<Option<(&'static str, Vec<Effect>)>> {
    let text = message.content.text().map(str::to_string);
    let record = NewMessage {
        kind: message.content.kind().to_string(),
        text: text.clone(),
        content: match &message.content {
            Content::Text { .. } => None,
            other => serde_json::to_string(other).ok(),
        },
        reply_to: message.reply_to.clone(),
        ..inbound(external_id, platform_ts, now)
    };
    let mut effects = vec![
        Effect::InsertMessage {
            conversation_id: conversation.id.clone(),
            message: record,
        },
        Effect::Touch {
            conversation_id: conversation.id.clone(),
            at: now,
            inbound: true,
            disclosed: false,
        },
    ];
    // A conversation held while the providers were down is still the assistant's,
    // unless an agent has written in it since.
    let hold = crate::assistant::hold::find(app, item).await?;
    if hold.as_ref().is_some_and(|h| h.agent_replied) {
        effects.push(Effect::ClearAiHold { inbox_id: item.id });
        return Ok(Some(("handed_off", effects)));
    }
    // Standby (another app owns the thread) or outside the platform's window: nothing
    // may be sent, but the policy still records keywords and consent.
    let silent = messaging::silence(item, standby, platform_ts, now);
    // Privacy policy first: keywords, restriction, consent, hand-off, disclosure. The
    // hold put the conversation in `human` status; to the policy it is the assistant's.
    let held = hold.as_ref().map(|_| ConversationRef {
        status: "bot".into(),
        ..conversation.clone()
    });
    let seen = held.as_ref().unwrap_or(&conversation);
    let verdict = policy::check(app, &item.tenant_id, seen, text.as_deref(), now).await?;
    let (disclosure, settings) = match verdict {
        Verdict::Assistant {
            disclosure,
            effects: more,
            settings,
        } => {
            effects.extend(more);
            (disclosure, settings)
        }
        Verdict::Policy {
            outcome,
            notice,
            effects: more,
        } => {
            effects.extend(more);
            if hold.is_some() {
                effects.push(Effect::ClearAiHold { inbox_id: item.id });
            }
            if let Some(notice) = notice.filter(|_| silent.is_none()) {
                effects.push(policy::notice_effect(
                    app,
                    &item.platform,
                    &conversation.id,
                    &item.channel_id,
                    &message.chat,
                    &notice,
                    now,
                ));
            }
            return Ok(Some((outcome, effects)));
        }
    };
    if let Some(reason) = silent {
        return Ok(Some((reason, effects)));
    }
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Some(("skipped:no_text", effects)));
    };
    let question = Question {
        tenant_id: &item.tenant_id,
        conversation_id: &conversation.id,
        message_id: external_id_of(&effects),
        text: &text,
        fresh: conversation.created,
        settings,
    };
    let Some(mut answer) = app.assistant.answer(&question).await? else {
        return crate::assistant::hold::unavailable(
            app,
            item,
            &conversation,
            &message.chat,
            hold,
            effects,
            MAX_ATTEMPTS,
            now,
        )
        .await;
    };
    if !answer.usage.is_empty() {
        effects.push(Effect::RecordAiCalls {
            conversation_id: conversation.id.clone(),
            calls: std::mem::take(&mut answer.usage),
        });
    }
    if hold.is_some() {
        effects.push(Effect::ClearAiHold { inbox_id: item.id });
        effects.push(Effect::SetConversationStatus {
            conversation_id: conversation.id.clone(),
            status: "bot",
        });
    }
    let body = match &disclosure {
        Some(disclosure) => format!("{disclosure}\n\n{}", answer.text),
        None => answer.text.clone(),
    };
    let limit = item
        .platform
        .parse()
        .ok()
        .and_then(|kind| app.channel_impl(kind))
        .map_or(1000, |c| c.text_limit());
    let reply = NewMessage {
        id: new_id(),
        direction: "outbound",
        author: "assistant",
        kind: "text".into(),
        text: Some(body.clone()),
        content: None,
        external_id: None,
        reply_to: None,
        status: if answer.draft { "draft" } else { "queued" },
        produced_by: Some(answer.produced_by.clone()),
        platform_ts: None,
        created_at: now,
    };
    if answer.draft {
        // Review mode: the draft waits for an agent (admin API), who may edit it.
        effects.push(Effect::InsertMessage {
            conversation_id: conversation.id.clone(),
            message: reply,
        });
    } else {
        effects.push(Effect::EnqueueReply {
            conversation_id: conversation.id.clone(),
            channel_id: item.channel_id.clone(),
            recipient: message.chat.clone(),
            message: reply,
            parts: channels::text::split(&body, limit),
        });
    }
    if disclosure.is_some() && !answer.draft {
        // Recorded by the turn's own update of the conversation.
        for effect in &mut effects {
            if let Effect::Touch { disclosed, .. } = effect {
                *disclosed = true;
            }
        }
    }
    if answer.handoff {
        effects.push(Effect::SetConversationStatus {
            conversation_id: conversation.id,
            status: "human",
        });
        return Ok(Some(("handed_off", effects)));
    }
    Ok(Some((
        if answer.draft { "drafted" } else { "replied" },
        effects,
    )))
}

/// The platform id of the inbound message among `effects`.
fn external_id_of(effects: &[Effect]) -> &str {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::InsertMessage { message, .. } => message.external_id.as_deref(),
            _ => None,
        })
        .unwrap_or_default()
}
