//! The dispatcher: claims queued reply parts (in order within a conversation), sends
//! them through the channel's API, and records the outcome: the platform's message
//! id, a retry with backoff, a permanent failure with the platform's code, or a
//! paused channel whose credentials need re-authorization.
//!
//! A part is marked `sending` (and committed) before the HTTP call. If the process
//! dies during the call, the lease expires and the part is sent again, flagged as a
//! possible duplicate: the platforms offer no idempotency key for these sends.

mod pace;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use channels::{OutboundReply, SendError};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::privacy::policy::SendCheck;
use crate::queue::Queue;
use crate::store::{now_ms, OutboxItem, SendOutcome};
use pace::Pacer;

/// How long a paused channel's parts wait before they are looked at again.
const PARK_MS: i64 = 60_000;
/// Upper bound of the retry backoff.
const BACKOFF_CAP_MS: i64 = 5 * 60_000;

pub async fn run_dispatcher(app: App, stop: CancellationToken) {
    let owner = app.dispatcher_owner();
    let lease_ms = app.config.worker.lease_ms as i64;
    let claim = |free: usize| {
        let (app, owner) = (app.clone(), owner.clone());
        async move {
            app.store
                .claim_outbox(&owner, now_ms(), lease_ms, free as i64)
                .await
        }
    };
    let pacer = Arc::new(Pacer::default());
    let handle = |item| send(app.clone(), owner.clone(), pacer.clone(), item);
    let queue = Queue {
        name: "outbox",
        wake: &app.outbox_wake,
        min_claim: (app.config.worker.concurrency / 2).max(1),
        poll: Duration::from_millis(app.config.worker.poll_ms),
        // Shared with the worker, which hands fresh replies over already claimed.
        slots: &app.replies,
        limit: &|| usize::MAX,
        will_claim: None,
    };
    crate::queue::run(queue, stop, claim, handle).await;
}

async fn send(app: App, owner: String, pacer: Arc<Pacer>, item: OutboxItem) {
    let started = std::time::Instant::now();
    let outcome = attempt(&app, &pacer, &item).await;
    record_send(&app, &item, &outcome, started.elapsed().as_secs_f64()).await;
    if let SendOutcome::Failed { code, .. } = &outcome {
        tracing::warn!(outbox_id = item.id, channel_id = %item.channel_id, code = ?code, "reply failed permanently");
    }
    let waiting = match app.store.finish_send(item.id, &owner, &outcome).await {
        Ok(waiting) => waiting,
        Err(e) => {
            // The lease expires and the part is tried again (flagged as a possible
            // duplicate if it was sent).
            tracing::error!(outbox_id = item.id, error = %e, "could not record send outcome");
            true
        }
    };
    if waiting {
        // A follow-up part of the same conversation may be ready now.
        app.outbox_wake.notify_one();
    }
}

/// Counts a send by platform and result (the channel comes from the cache).
async fn record_send(app: &App, item: &OutboxItem, outcome: &SendOutcome, seconds: f64) {
    let platform = match app.resolved_channel(&item.channel_id).await {
        Ok(Some(c)) => c
            .record
            .platform
            .parse::<channels::ChannelKind>()
            .map(|k| k.as_str())
            .unwrap_or("other"),
        _ => "unknown",
    };
    let result = match outcome {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Retry { .. } => "retry",
        SendOutcome::Failed { .. } => "failed",
        SendOutcome::Parked { .. } => "parked",
    };
    crate::metrics::send(platform, result, seconds);
}

async fn attempt(app: &App, pacer: &Pacer, item: &OutboxItem) -> SendOutcome {
    let now = now_ms();
    // Privacy: consent and restriction are checked again right before sending; and
    // -- telegram, discord: nothing more goes to a person who blocked the bot.
    match crate::privacy::policy::may_send(app, item).await {
        Ok(SendCheck::Go) => {}
        Ok(SendCheck::Withheld) => {
            return SendOutcome::Failed {
                code: None,
                detail: "withheld: consent withdrawn or processing restricted".into(),
            }
        }
        Ok(SendCheck::Blocked) => {
            return SendOutcome::Failed {
                code: None,
                detail: "the recipient blocked the bot".into(),
            }
        }
        Err(e) => {
            tracing::error!(outbox_id = item.id, error = %e, "send policy unavailable");
            return SendOutcome::Parked { at: now + PARK_MS };
        }
    }
    let resolved = match app.resolved_channel(&item.channel_id).await {
        Ok(Some(resolved)) => resolved,
        Ok(None) => {
            return SendOutcome::Failed {
                code: None,
                detail: "channel deleted".into(),
            }
        }
        Err(e) => {
            // The database is away, or the credentials cannot be opened (wrong key).
            tracing::error!(channel_id = %item.channel_id, error = %e, "channel unavailable for sending");
            return SendOutcome::Parked { at: now + PARK_MS };
        }
    };
    let (channel, credentials) = (&resolved.record, &resolved.credentials);
    let Some(channel_impl) = channel
        .platform
        .parse()
        .ok()
        .and_then(|kind| app.channel_impl(kind))
    else {
        return SendOutcome::Failed {
            code: None,
            detail: format!("platform {} not supported", channel.platform),
        };
    };
    let reply = OutboundReply {
        to: item.recipient.clone(),
        text: item.text.clone(),
        reply_to: item.reply_to.clone(),
    };
    // -- pacing: wait for the destination's next free slot without spending an attempt
    if let Some(pacing) = channel_impl.pacing(&reply) {
        if let Err(wait) = pacer.take(&channel.id, &pacing) {
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            return SendOutcome::Parked {
                at: now_ms().saturating_add(wait_ms.max(1)),
            };
        }
    }
    match channel_impl
        .send_tagged(credentials, &reply, item.message_tag.as_deref())
        .await
    {
        Ok(receipt) => SendOutcome::Sent {
            external_id: receipt.external_id,
            at: now_ms(),
        },
        Err(SendError::Retryable {
            retry_after,
            code,
            detail,
        }) => {
            if item.attempts >= app.config.worker.max_send_attempts {
                return SendOutcome::Failed {
                    code,
                    detail: format!("gave up after {} attempts: {detail}", item.attempts),
                };
            }
            let wait = retry_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            retry_at(item, wait, code, detail)
        }
        Err(error) if channels::telegram::is_blocked(&error) && channel.platform == "telegram" => {
            if let Err(e) = app
                .store
                .mark_unreachable(&channel.id, &item.recipient, now_ms())
                .await
            {
                tracing::error!(channel_id = %channel.id, error = %e, "could not record the block");
            }
            SendOutcome::Failed {
                code: error.code(),
                detail: "the recipient blocked the bot".into(),
            }
        }
        Err(SendError::Permanent {
            code,
            detail,
            outside_window,
            ..
        }) => SendOutcome::Failed {
            code,
            detail: if outside_window {
                format!("outside the platform's messaging window: {detail}")
            } else {
                detail
            },
        },
        Err(SendError::Unauthorized { code, .. }) => {
            tracing::warn!(channel_id = %channel.id, code = ?code, "channel credentials rejected; pausing its sends");
            let note = format!(
                "credentials rejected by the platform (code {}); re-authorize the channel",
                code.unwrap_or_default()
            );
            if let Err(e) = app
                .store
                .set_channel_status(&channel.id, "needs_reauth", Some(&note))
                .await
            {
                tracing::error!(channel_id = %channel.id, error = %e, "could not mark channel");
            }
            SendOutcome::Parked {
                at: now_ms() + PARK_MS,
            }
        }
    }
}

/// When the platform said when to come back (`Retry-After`), then; otherwise
/// exponential backoff (1 s, 2 s, 4 s ... capped at 5 min) with jitter.
fn retry_at(
    item: &OutboxItem,
    retry_after_ms: Option<i64>,
    code: Option<i64>,
    detail: String,
) -> SendOutcome {
    let wait = retry_after_ms.unwrap_or_else(|| backoff_ms(item.attempts));
    SendOutcome::Retry {
        at: now_ms() + wait,
        code,
        detail,
    }
}

fn backoff_ms(attempts: i64) -> i64 {
    let base = 1000i64
        .saturating_mul(1 << (attempts.clamp(1, 16) - 1))
        .min(BACKOFF_CAP_MS);
    rand::thread_rng().gen_range(base / 2..=base)
}
