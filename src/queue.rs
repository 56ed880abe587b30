//! The claim loop shared by the worker (inbox) and the dispatcher (outbox): claim as
//! many items as there are free slots, run each as its own task, and sleep until
//! woken, a slot frees, or the poll interval passes. It claims when woken, at each
//! poll, and while its last claim filled every free slot; an item that may have
//! made another ready (the next event of a conversation, the next part of a reply)
//! wakes it. On `stop` it claims nothing
//! more and waits for the running items to finish.
//!
//! Items can also be handed to a queue already claimed ([`HandOff`]): whoever made
//! an item ready in a write of its own claimed it in that same write, for a slot it
//! reserved first, so the loop runs it without a claim of its own.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How one queue is worked.
pub struct Queue<'a, T> {
    /// For logs.
    pub name: &'static str,
    /// Notified when new items may be ready.
    pub wake: &'a Notify,
    /// While items run, claim again only once this many slots are free.
    pub min_claim: usize,
    /// Longest sleep when nothing wakes the loop.
    pub poll: Duration,
    /// The queue's slots (how many items are handled at once) and the items handed
    /// to it already claimed.
    pub slots: &'a HandOff<T>,
    /// How many items may run now, if fewer than the slots (checked before each
    /// claim).
    pub limit: &'a (dyn Fn() -> usize + Sync),
    /// Where given, kept set while the loop is sure to claim again, with a snapshot
    /// taken later than now, once a slot frees (its last claim filled every free
    /// slot); clear while a claim is under way and when none is due.
    pub will_claim: Option<&'a AtomicBool>,
}

/// A queue's slots, shared between its loop and those who hand it items already
/// claimed. Handing over is open only while the loop runs.
pub struct HandOff<T> {
    slots: Arc<Semaphore>,
    size: usize,
    open: AtomicBool,
    sender: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>>>,
}

impl<T> HandOff<T> {
    /// `size` slots: items handled at once.
    pub fn new(size: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            open: AtomicBool::new(false),
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Reserves `n` free slots for items to be claimed and then handed over; `None`
    /// when fewer are free or the queue's loop does not run (here, or any longer).
    pub fn reserve(&self, n: usize) -> Option<Vec<OwnedSemaphorePermit>> {
        if n == 0 || !self.open.load(Ordering::Acquire) {
            return None;
        }
        let permits = u32::try_from(n).ok()?;
        let mut all = self.slots.clone().try_acquire_many_owned(permits).ok()?;
        let mut each = Vec::with_capacity(n);
        while all.num_permits() > 1 {
            each.extend(all.split(1));
        }
        each.push(all);
        Some(each)
    }

    /// Runs `item`, claimed for this queue, in the slot reserved for it. Only after a
    /// successful [`reserve`](Self::reserve): the loop waits for reserved slots
    /// before it stops, so the item is not left behind.
    pub fn hand(&self, item: T, slot: OwnedSemaphorePermit) {
        // The receiver lives as long as `self`: sending cannot fail.
        let _ = self.sender.send((item, slot));
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>> {
        self.receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The next item handed over, or never when nothing can be.
async fn next_handed<T>(
    receiver: &mut Option<mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>>,
) -> (T, OwnedSemaphorePermit) {
    match receiver {
        Some(r) => match r.recv().await {
            Some(handed) => handed,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

pub async fn run<T, C, CF, H, HF>(
    queue: Queue<'_, T>,
    stop: CancellationToken,
    mut claim: C,
    handle: H,
) where
    C: FnMut(usize) -> CF,
    CF: Future<Output = Result<Vec<T>, crate::store::StoreError>>,
    H: Fn(T) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let Queue {
        name,
        wake,
        min_claim,
        poll,
        slots,
        limit,
        will_claim,
    } = queue;
    let announce = |sure: bool| {
        if let Some(flag) = will_claim {
            flag.store(sure, Ordering::SeqCst);
        }
    };
    let mut running = JoinSet::new();
    let spawn = |running: &mut JoinSet<()>, item: T, slot: Option<OwnedSemaphorePermit>| {
        let work = handle(item);
        running.spawn(async move {
            work.await;
            drop(slot);
        });
    };
    // One loop per queue takes what is handed over.
    let mut handed = slots.take_receiver();
    if handed.is_some() {
        slots.open.store(true, Ordering::Release);
    }
    let mut polls = tokio::time::interval(poll.max(Duration::from_millis(1)));
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether items may be ready that no claim has taken yet.
    let mut wanted = true;
    loop {
        let free = slots
            .slots
            .available_permits()
            .min(limit().saturating_sub(running.len()));
        // Claim when idle or when at least `min_claim` slots are free, so that under
        // load one claim (a write) takes a batch rather than a single item.
        if wanted && free > 0 && (running.is_empty() || free >= min_claim) {
            announce(false);
            let items = claim(free).await.unwrap_or_else(|e| {
                tracing::error!(queue = name, error = %e, "claim failed");
                Vec::new()
            });
            // Every free slot filled: more may be ready, as soon as a slot frees.
            wanted = !items.is_empty() && items.len() == free;
            announce(wanted);
            for item in items {
                // A slot reserved for a hand-off meanwhile: the claimed item is
                // ours and runs all the same, one above the limit for a moment.
                let slot = slots.slots.clone().try_acquire_owned().ok();
                spawn(&mut running, item, slot);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => wanted = true,
            // An item that made another ready wakes the loop itself.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            (item, slot) = next_handed(&mut handed) => spawn(&mut running, item, Some(slot)),
            _ = polls.tick() => wanted = true,
        }
    }
    // No new hand-offs; those reserved already still come and are run.
    slots.open.store(false, Ordering::Release);
    announce(false);
    loop {
        if running.is_empty() && slots.slots.available_permits() == slots.size {
            break;
        }
        tokio::select! {
            Some(_) = running.join_next(), if !running.is_empty() => {}
            (item, slot) = next_handed(&mut handed) => spawn(&mut running, item, Some(slot)),
            // A reservation given up returns its slot without a wake-up.
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    // For a loop started again later.
    if let Some(receiver) = handed {
        *slots
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(receiver);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a queue loop over `slots` with at most `limit` items at once, until
    /// `stop`.
    fn spawn_loop<C, CF, H, HF>(
        slots: Arc<HandOff<u32>>,
        stop: CancellationToken,
        limit: usize,
        claim: C,
        handle: H,
    ) -> tokio::task::JoinHandle<()>
    where
        C: FnMut(usize) -> CF + Send + 'static,
        CF: Future<Output = Result<Vec<u32>, crate::store::StoreError>> + Send,
        H: Fn(u32) -> HF + Send + Sync + 'static,
        HF: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(async move {
            let wake = Notify::new();
            let limit = move || limit;
            let queue = Queue {
                name: "test",
                wake: &wake,
                min_claim: 1,
                poll: Duration::from_millis(5),
                slots: &slots,
                limit: &limit,
                will_claim: None,
            };
            run(queue, stop, claim, handle).await;
        })
    }

    /// A limit below the slots caps what is claimed and run at once.
    #[tokio::test]
    async fn the_limit_caps_what_is_claimed() {
        let slots = Arc::new(HandOff::<u32>::new(8));
        let (asked, mut asks) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let mut next = 0;
        let claim = move |free: usize| {
            let _ = asked.send(free);
            let items: Vec<u32> = (next..next + free as u32).collect();
            next += free as u32;
            async move { Ok(items) }
        };
        let held = release.clone();
        let handle = move |_item: u32| {
            let release = held.clone();
            async move { release.notified().await }
        };
        let worked = spawn_loop(slots.clone(), stop.clone(), 2, claim, handle);
        assert_eq!(asks.recv().await, Some(2), "two of eight slots may run");
        // Both run and hold their slots: no claim until one ends.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(asks.try_recv().is_err(), "nothing claimed while two run");
        release.notify_one();
        assert_eq!(asks.recv().await, Some(1), "one ended: one more");
        stop.cancel();
        release.notify_waiters();
        release.notify_one();
        release.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(5), worked).await;
    }

    /// Items handed over run in the slots reserved for them; a reservation is only
    /// given while the loop runs and there is room, and a stopping loop waits for
    /// the items still reserved.
    #[tokio::test]
    async fn handed_items_run_in_reserved_slots_and_stop_waits_for_them() {
        let slots = Arc::new(HandOff::<u32>::new(2));
        assert!(slots.reserve(1).is_none(), "no loop runs yet");
        let (ran, mut runs) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let claim = |_free: usize| async { Ok(Vec::new()) };
        let handle = move |item: u32| {
            let ran = ran.clone();
            async move {
                let _ = ran.send(item);
            }
        };
        let worked = spawn_loop(slots.clone(), stop.clone(), usize::MAX, claim, handle);
        let mut reserved = loop {
            if let Some(r) = slots.reserve(2) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(reserved.len(), 2);
        assert!(slots.reserve(1).is_none(), "every slot is reserved");
        let last = reserved.pop().map(|slot| (8, slot));
        for slot in reserved {
            slots.hand(7, slot);
        }
        assert_eq!(runs.recv().await, Some(7));

        stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!worked.is_finished(), "a reserved slot is still to come");
        assert!(
            slots.reserve(1).is_none(),
            "no new reservations once stopping"
        );
        if let Some((item, slot)) = last {
            slots.hand(item, slot);
        }
        assert_eq!(runs.recv().await, Some(8));
        let stopped = tokio::time::timeout(Duration::from_secs(5), worked).await;
        assert!(
            matches!(stopped, Ok(Ok(()))),
            "the loop stops once the handed item ran"
        );
    }
}
