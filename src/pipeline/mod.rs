//! The worker: claims inbox events (one per conversation at a time, in platform
//! order, under a lease), resolves contact and conversation, asks the assistant, and
//! records the message and its reply in the same transaction that marks the event
//! done.

mod handle;
mod messaging;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::queue::{HandOff, Queue};
use crate::store::now_ms;

/// Events handled at once while webhooks flood in (see `Committer::flooded`): the
/// backlog keeps moving, one event at a time.
const FLOOD_CONCURRENCY: usize = 1;

/// Runs until `stop`, then lets in-flight events finish.
pub async fn run_worker(app: App, stop: CancellationToken) {
    let owner = app.worker_owner();
    let lease_ms = app.config.worker.lease_ms as i64;
    let claim = |free: usize| {
        let (app, owner) = (app.clone(), owner.clone());
        async move {
            app.store
                .claim_inbox(&owner, now_ms(), lease_ms, free as i64)
                .await
        }
    };
    let will_claim = Arc::new(AtomicBool::new(false));
    let handle = |item| handle::handle(app.clone(), owner.clone(), will_claim.clone(), item);
    let slots = HandOff::new(app.config.worker.concurrency);
    let queue = Queue {
        name: "inbox",
        wake: &app.inbox_wake,
        min_claim: 1,
        poll: Duration::from_millis(app.config.worker.poll_ms),
        slots: &slots,
        // Acknowledgements first: while webhooks flood in, one event at a time.
        limit: &|| {
            if app.committer.flooded() {
                FLOOD_CONCURRENCY
            } else {
                usize::MAX
            }
        },
        will_claim: Some(&will_claim),
    };
    crate::queue::run(queue, stop, claim, handle).await;
}
