//! Discord Gateway sessions: every instance runs this supervisor; for each live
//! Discord channel it tries to take the channel's lease ([`Store::try_lease`]:
//! a Postgres advisory lock, or the only instance on SQLite) and, holding it, runs
//! the bot's gateway session (`channels::discord::gateway`). Events go through the
//! same durable inbox as webhooks. When the holder stops, its session's socket is
//! closed first and its lease freed after; another instance takes the session over
//! on its next scan, within seconds. A holder that cannot confirm its lease ends its
//! session rather than risk two.
//!
//! [`Store::try_lease`]: crate::store::Store::try_lease

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use channels::discord::gateway::{self, BotScope, EventSink};
use channels::{ChannelKind, Credentials, Normalized};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::meta::{push_event, unhandled_row};
use crate::app::App;
use crate::metrics;
use crate::store::{now_ms, ChannelRecord, IngressBatch, Lease};

/// How often channels and leases are looked at.
const SCAN: Duration = Duration::from_secs(2);
/// A lease whose connection does not answer within this is taken as lost.
const LEASE_CHECK: Duration = Duration::from_secs(5);
/// Pause after a session ended with an error (bad token, Discord unreachable).
const RETRY: Duration = Duration::from_secs(30);

struct Session {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs until `stop`, then ends every session this instance holds.
pub async fn supervise(app: App, stop: CancellationToken) {
    let mut sessions: HashMap<String, Session> = HashMap::new();
    let mut scan = tokio::time::interval(SCAN);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = scan.tick() => {}
        }
        sessions.retain(|_, s| !s.task.is_finished());
        let channels = match app
            .store
            .platform_channels(ChannelKind::Discord.as_str())
            .await
        {
            Ok(channels) => channels,
            Err(e) => {
                tracing::warn!(error = %e, "could not list discord channels");
                continue;
            }
        };
        sessions.retain(|id, session| {
            let live = channels.iter().any(|c| &c.id == id);
            if !live {
                session.stop.cancel();
            }
            live
        });
        for channel in channels {
            if sessions.contains_key(&channel.id) {
                continue;
            }
            let lease = match app
                .store
                .try_lease(&format!("discord-gateway:{}", channel.id))
                .await
            {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    // Another instance holds this bot's session.
                    metrics::inc(metrics::GATEWAY_LEASES, &[("result", "busy")]);
                    continue;
                }
                Err(e) => {
                    metrics::inc(metrics::GATEWAY_LEASES, &[("result", "error")]);
                    tracing::warn!(channel_id = %channel.id, error = %e, "could not try the gateway lease");
                    continue;
                }
            };
            metrics::inc(metrics::GATEWAY_LEASES, &[("result", "taken")]);
            tracing::info!(channel_id = %channel.id, "holding the discord gateway session");
            let session_stop = stop.child_token();
            let task = tokio::spawn(run_session(
                app.clone(),
                channel.clone(),
                lease,
                session_stop.clone(),
            ));
            sessions.insert(
                channel.id,
                Session {
                    stop: session_stop,
                    task,
                },
            );
        }
        metrics::set(metrics::GATEWAY_SESSIONS, &[], sessions.len() as f64);
    }
    for session in sessions.values() {
        session.stop.cancel();
    }
    for session in sessions.into_values() {
        let _ = session.task.await;
    }
    metrics::set(metrics::GATEWAY_SESSIONS, &[], 0.0);
}

/// Holds the lease and keeps the session up until `stop` or the lease is lost. The
/// lease is let go only once the session has ended (its socket closed).
async fn run_session(
    app: App,
    channel: ChannelRecord,
    mut lease: Box<dyn Lease>,
    stop: CancellationToken,
) {
    let credentials = match app.credentials(&channel) {
        Ok(Credentials::Discord(c)) => c,
        Ok(_) | Err(_) => {
            tracing::error!(channel_id = %channel.id, "discord channel credentials unavailable");
            return;
        }
    };
    let scope = BotScope {
        application_id: credentials.application_id.clone(),
        user_id: None,
        support_channels: credentials.support_channels.clone(),
    };
    let sink: Arc<dyn EventSink> = Arc::new(InboxSink {
        app: app.clone(),
        channel: channel.clone(),
    });
    let session_stop = stop.child_token();
    // Watches the lease: a lost connection means another instance may take over. It
    // hands the lease back when told to stop, so that it outlives the session.
    let watcher = {
        let session_stop = session_stop.clone();
        let watch_stop = CancellationToken::new();
        let task = tokio::spawn({
            let watch_stop = watch_stop.clone();
            async move {
                loop {
                    tokio::select! {
                        () = watch_stop.cancelled() => return lease,
                        () = tokio::time::sleep(SCAN) => {}
                    }
                    let held = tokio::time::timeout(LEASE_CHECK, lease.held()).await;
                    if !matches!(held, Ok(true)) {
                        tracing::warn!("discord gateway lease lost; ending the session");
                        session_stop.cancel();
                        return lease;
                    }
                }
            }
        });
        (watch_stop, task)
    };
    while !session_stop.is_cancelled() {
        let result = gateway::run(
            &app.discord,
            &credentials.bot_token,
            scope.clone(),
            sink.clone(),
            session_stop.clone().cancelled_owned(),
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(channel_id = %channel.id, error = %e, "discord gateway session ended");
            tokio::select! {
                () = session_stop.cancelled() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
    // The session is over and its socket closed: now the lease may go.
    let (watch_stop, task) = watcher;
    watch_stop.cancel();
    drop(task.await);
    tracing::info!(channel_id = %channel.id, "discord gateway session handed back");
}

/// Stores a session's events in the durable inbox, like a webhook delivery.
struct InboxSink {
    app: App,
    channel: ChannelRecord,
}

#[async_trait]
impl EventSink for InboxSink {
    async fn deliver(&self, normalized: Normalized) -> Result<(), String> {
        let kind = ChannelKind::Discord;
        let received_at = now_ms();
        let mut batch = IngressBatch::default();
        for item in normalized.unhandled {
            batch.unhandled.push(unhandled_row(
                Some(&self.channel),
                kind,
                &item.reason,
                &item.raw,
                received_at,
            ));
        }
        for event in normalized.events {
            push_event(&mut batch, &self.channel, kind, event, received_at);
        }
        self.app
            .committer
            .commit(batch)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
