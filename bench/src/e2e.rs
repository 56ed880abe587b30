//! End to end: a new conversation per webhook at a fixed offered rate; the time from
//! a webhook's scheduled send to the reply arriving at the fake Graph API, less the
//! time the fake LLM spent on that conversation's question, is the gateway's own
//! added latency (ingress, queue, worker, assistant, outbox, dispatcher).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::fakes::Seen;
use crate::load::{self, wa_id, Platform, Senders, Traffic};
use crate::process::{self, Tuning};
use crate::report::{median, target, Broken, Percentiles, Row};
use crate::{check_committed, Backend, Bench};

/// The added latency's (p50, p99) of each round.
type PerRound = (f64, f64);

const P50_TARGET_MS: f64 = 5.0;
const P99_TARGET_MS: f64 = 25.0;
/// How long after the last webhook replies may still arrive.
const REPLY_WAIT: Duration = Duration::from_secs(60);

pub async fn run(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    let polls: Vec<Option<u64>> = if args.e2e_poll_ms.is_empty() {
        vec![None]
    } else {
        args.e2e_poll_ms.iter().copied().map(Some).collect()
    };
    let mut rounds: BTreeMap<(Backend, Option<u64>), Vec<PerRound>> = BTreeMap::new();
    for _ in 0..args.rounds {
        for backend in bench.backends() {
            for &poll_ms in &polls {
                let added = one(bench, backend, poll_ms, broken).await?;
                rounds
                    .entry((backend, poll_ms))
                    .or_default()
                    .push((added.p50, added.p99));
            }
        }
    }
    if args.rounds > 1 {
        for ((backend, poll_ms), runs) in rounds {
            let p50 = median(runs.iter().map(|r| r.0).collect());
            let p99 = median(runs.iter().map(|r| r.1).collect());
            let each: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.1}/{:.1}", r.0, r.1))
                .collect();
            Row {
                section: "e2e",
                what: format!("gateway's own latency, median of {} rounds", runs.len()),
                backend: backend.as_str().into(),
                load: load_label(bench, poll_ms),
                p50_ms: Some(p50),
                p99_ms: Some(p99),
                notes: format!("p50/p99 ms of each round: {}", each.join(", ")),
                target: target(
                    "p50 < 5 ms and p99 < 25 ms",
                    p50 < P50_TARGET_MS && p99 < P99_TARGET_MS,
                ),
                ..Row::default()
            }
            .print();
        }
    }
    Ok(())
}

fn load_label(bench: &Bench, poll_ms: Option<u64>) -> String {
    format!(
        "{:.0} new conversations/s offered, {} s{}",
        bench.args.e2e_rate,
        bench.args.duration,
        poll_ms.map_or_else(String::new, |ms| format!(", worker.poll_ms = {ms}"))
    )
}

/// One run on a fresh gateway; prints its row and returns the added latency.
async fn one(
    bench: &Bench,
    backend: Backend,
    poll_ms: Option<u64>,
    broken: &mut Broken,
) -> anyhow::Result<Percentiles> {
    let args = &bench.args;
    let platform = Platform::Whatsapp;
    let tuning = Tuning {
        llm: true,
        poll_ms,
        ..Tuning::default()
    };
    let gateway = bench.gateway(backend, "e2e", &tuning).await?;
    let seen = &bench.fakes.seen;
    let url = &gateway.channel(platform).webhook_url;
    let traffic = Traffic::new(platform, Senders::NewEach);
    seen.record();
    let warm_up = match load::warm_up(url, traffic, args.e2e_rate, args.warmup).await? {
        Some(sent) => {
            wait_for_replies(seen, sent.acked().count()).await;
            Some(Percentiles::of(added_latencies(seen, &sent).added))
        }
        None => None,
    };
    seen.record();
    let cpu_before = gateway.server.cpu();
    let sent = load::open(
        url,
        traffic,
        args.e2e_rate,
        0,
        Duration::from_secs(args.duration),
        None,
    )
    .await?;
    let acked: Vec<&load::Sample> = sent.acked().collect();
    wait_for_replies(seen, acked.len()).await;
    seen.stop();
    let Replies {
        added,
        llm,
        last_reply,
    } = added_latencies(seen, &sent);
    // From the first scheduled webhook to the last reply.
    let busy = last_reply.saturating_duration_since(sent.started);
    let cores = cpu_before.zip(gateway.server.cpu()).map(|(before, after)| {
        after.saturating_sub(before).as_secs_f64() / busy.as_secs_f64().max(1e-9)
    });

    let unanswered = acked.len() - added.len();
    let label = format!("e2e {}", backend.as_str());
    let ids: Vec<String> = acked.iter().map(|s| s.external_id.clone()).collect();
    let committed = check_committed(&gateway, platform, &ids, &label, broken).await?;
    if unanswered > 0 {
        broken.add(format!(
            "{label}: {unanswered} of {} acknowledged webhooks got no reply within {} s",
            acked.len(),
            REPLY_WAIT.as_secs()
        ));
    }
    // The gateway's own view of where the time went.
    let base = &gateway.server.base;
    let mean_ms = |name: &'static str| async move {
        let sum = process::metric(base, &format!("{name}_sum"), "").await?;
        let count = process::metric(base, &format!("{name}_count"), "").await?;
        anyhow::Ok(sum * 1000.0 / count.max(1.0))
    };
    let queued = mean_ms("omnigate_event_end_to_end_seconds").await?;
    let processing = mean_ms("omnigate_event_processing_seconds").await?;
    let sending = mean_ms("omnigate_outbound_send_seconds").await?;
    let retried =
        process::metric(base, "omnigate_events_handled_total", "result=\"retry\"").await?;
    drop(gateway);

    let ack = Percentiles::of(acked.iter().map(|s| s.latency).collect());
    let replies = added.len();
    let added = Percentiles::of(added);
    let llm = Percentiles::of(llm);
    Row {
        section: "e2e",
        what: "whatsapp webhook → reply at fake Graph API, less fake LLM time".into(),
        backend: backend.as_str().into(),
        load: load_label(bench, poll_ms),
        rate: Some(replies as f64 / busy.as_secs_f64().max(1e-9)),
        p50_ms: Some(added.p50),
        p99_ms: Some(added.p99),
        errors: Some(sent.errors() + unanswered as u64),
        vs: format!("webhook ack p50 {:.2} / p99 {:.2} ms", ack.p50, ack.p99),
        notes: format!(
            "max {:.1} ms; {}; fake LLM p99 {:.3} ms; gateway means: received→reply queued \
             {queued:.1} ms, claim→done {processing:.1} ms, platform send {sending:.1} ms; \
             {retried} retried; gateway CPU {} cores; {replies}/{} answered; {committed}",
            added.max,
            warm_up.map_or_else(
                || "no warm-up".to_string(),
                |w| format!(
                    "{} s warm-up before: p50 {:.1} / p99 {:.1} ms",
                    args.warmup, w.p50, w.p99
                )
            ),
            llm.p99,
            cores.map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
            acked.len()
        ),
        target: target(
            "p50 < 5 ms and p99 < 25 ms",
            added.p50 < P50_TARGET_MS && added.p99 < P99_TARGET_MS && unanswered == 0,
        ),
    }
    .print();
    Ok(added)
}

/// Waits until `n` replies have arrived at the fake Graph API (at most [`REPLY_WAIT`]).
async fn wait_for_replies(seen: &Seen, n: usize) {
    let waited = Instant::now();
    while seen.replies() < n && waited.elapsed() < REPLY_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the fake Graph API saw of a load's replies.
struct Replies {
    /// Per answered webhook: from its scheduled send to its reply, less the fake LLM's
    /// time on it.
    added: Vec<Duration>,
    /// The fake LLM's time per answered webhook.
    llm: Vec<Duration>,
    /// When the last reply arrived (the load's start when none did).
    last_reply: Instant,
}

fn added_latencies(seen: &Seen, sent: &load::Open) -> Replies {
    let mut replies = Replies {
        added: Vec::new(),
        llm: Vec::new(),
        last_reply: sent.started,
    };
    for sample in sent.acked() {
        let Some(arrived) = seen.reply_at(&wa_id(sample.seq)) else {
            continue;
        };
        replies.last_reply = replies.last_reply.max(arrived);
        let llm_time = seen.llm_time(sample.seq).unwrap_or_default();
        replies.llm.push(llm_time);
        let total = arrived.saturating_duration_since(sent.started + sample.offset);
        replies.added.push(total.saturating_sub(llm_time));
    }
    replies
}
