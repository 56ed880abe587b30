//! End to end: a new conversation per webhook at a fixed offered rate; the time from
//! a webhook's scheduled send to the reply arriving at the fake Graph API, less the
//! time the fake LLM spent on that conversation's question, is the gateway's own
//! added latency (ingress, queue, worker, assistant, outbox, dispatcher).

use std::time::{Duration, Instant};

use crate::load::{self, wa_id, Platform, Senders, Traffic};
use crate::process::{self, Tuning};
use crate::report::{target, Broken, Percentiles, Row};
use crate::{check_committed, Bench};

const P50_TARGET_MS: f64 = 5.0;
const P99_TARGET_MS: f64 = 25.0;
/// How long after the last webhook replies may still arrive.
const REPLY_WAIT: Duration = Duration::from_secs(60);

pub async fn run(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    let duration = Duration::from_secs(args.duration);
    let polls: Vec<Option<u64>> = if args.e2e_poll_ms.is_empty() {
        vec![None]
    } else {
        args.e2e_poll_ms.iter().copied().map(Some).collect()
    };
    let platform = Platform::Whatsapp;
    let traffic = Traffic::new(platform, Senders::NewEach);
    for backend in bench.backends() {
        for &poll_ms in &polls {
            let tuning = Tuning {
                llm: true,
                poll_ms,
                ..Tuning::default()
            };
            let gateway = bench.gateway(backend, "e2e", &tuning).await?;
            let seen = &bench.fakes.seen;
            seen.record();
            let sent = load::open(
                &gateway.channel(platform).webhook_url,
                traffic,
                args.e2e_rate,
                0,
                duration,
                None,
            )
            .await?;
            // Wait for the replies still on their way.
            let acked: Vec<&load::Sample> = sent.acked().collect();
            let waited = Instant::now();
            while seen.replies() < acked.len() && waited.elapsed() < REPLY_WAIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen.stop();
            let mut added = Vec::new();
            let mut llm = Vec::new();
            for sample in &acked {
                let Some(arrived) = seen.reply_at(&wa_id(sample.seq)) else {
                    continue;
                };
                let scheduled = sent.started + sample.offset;
                let llm_time = seen.llm_time(sample.seq).unwrap_or_default();
                llm.push(llm_time);
                let total = arrived.saturating_duration_since(scheduled);
                added.push(total.saturating_sub(llm_time));
            }
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
            // The gateway's own view: claim → done per event, and outbound calls.
            let base = &gateway.server.base;
            let mean = |name: &'static str| async move {
                let sum = process::metric(base, &format!("{name}_sum"), "").await?;
                let count = process::metric(base, &format!("{name}_count"), "").await?;
                anyhow::Ok(sum * 1000.0 / count.max(1.0))
            };
            let processing = mean("omnigate_event_processing_seconds").await?;
            let queued = mean("omnigate_event_end_to_end_seconds").await?;
            let sending = mean("omnigate_outbound_send_seconds").await?;
            let retried =
                process::metric(base, "omnigate_events_handled_total", "result=\"retry\"").await?;
            let answered_per_s = added.len() as f64 / sent.span.as_secs_f64();
            drop(gateway);
            let ack = Percentiles::of(acked.iter().map(|s| s.latency).collect());
            let added = Percentiles::of(added);
            let llm = Percentiles::of(llm);
            Row {
                section: "e2e",
                what: "whatsapp webhook → reply at fake Graph API, less fake LLM time".into(),
                backend: backend.as_str().into(),
                load: format!(
                    "{:.0} new conversations/s offered, {} s{}",
                    args.e2e_rate,
                    args.duration,
                    poll_ms.map_or_else(String::new, |ms| format!(", worker.poll_ms = {ms}"))
                ),
                rate: Some(answered_per_s),
                p50_ms: Some(added.p50),
                p99_ms: Some(added.p99),
                errors: Some(sent.errors() + unanswered as u64),
                vs: format!("webhook ack p50 {:.2} / p99 {:.2} ms", ack.p50, ack.p99),
                notes: format!(
                    "max {:.1} ms; fake LLM p99 {:.3} ms; received→reply queued mean {queued:.1} ms, worker claim→done mean {processing:.1} ms, \
                     platform send mean {sending:.1} ms, {retried} events retried; {}/{} answered; {committed}",
                    added.max,
                    llm.p99,
                    added.count,
                    acked.len()
                ),
                target: target(
                    "p50 < 5 ms and p99 < 25 ms",
                    added.p50 < P50_TARGET_MS && added.p99 < P99_TARGET_MS && unanswered == 0,
                ),
            }
            .print();
        }
    }
    Ok(())
}
