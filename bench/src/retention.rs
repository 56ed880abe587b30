//! Retention: `expired` messages older than the 90-day default are seeded, the
//! gateway runs with `retention.sweep_interval_minutes = 1` (its shortest schedule:
//! the first sweep starts a minute after start), and webhooks arrive at a steady
//! rate from shortly before the sweep until it has finished. Acknowledgement
//! latency during the sweep is compared with the same run's latency before it.
//!
//! The sweep is seen from outside: it has started when the oldest message (lowest
//! `seq`, the first batch it deletes) is gone, and finished when the gateway's
//! `omnigate_retention_deleted_total{class="messages"}` counter appears, which the
//! sweeper records once every class is done and the SQLite WAL is truncated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{self, Db};
use crate::load::{self, Platform, Senders, Traffic};
use crate::process::{self, Tuning};
use crate::report::{target, Broken, Percentiles, Row};
use crate::{check_committed, Backend, Bench};

const P99_TARGET_MS: f64 = 50.0;
/// The gateway's shortest sweep schedule.
const SWEEP_AFTER: Duration = Duration::from_secs(60);
/// Longest a sweep may take before the benchmark gives up.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(900);
/// Load kept up after the sweep finished.
const AFTER_SWEEP: Duration = Duration::from_secs(2);
const SENDERS: u64 = 5_000;
/// Age of the seeded messages, past the 90-day default period.
const EXPIRED_DAYS: i64 = 100;

pub async fn run(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    let platform = Platform::Whatsapp;
    let tuning = Tuning {
        llm: true,
        sweep_minutes: Some(1),
        ..Tuning::default()
    };
    let mut gateway = bench.gateway(Backend::Sqlite, "retention", &tuning).await?;
    gateway.stop();
    let db = Db::connect(&gateway.database_url).await?;
    let seeding = Instant::now();
    db::seed_expired_messages(
        &db,
        &gateway.tenant_id,
        &gateway.whatsapp.id,
        args.expired,
        EXPIRED_DAYS,
        db::now_ms(),
    )
    .await?;
    let seeded_in = seeding.elapsed();
    let seeded = db
        .number("SELECT COUNT(*) FROM messages WHERE id LIKE 'expired-%'")
        .await?;
    let last_seeded = db
        .number("SELECT COALESCE(MAX(seq), 0) FROM messages")
        .await?;

    let restarted = Instant::now();
    gateway.restart().await?;
    let load_from = (restarted + SWEEP_AFTER)
        .checked_sub(Duration::from_secs(args.before_sweep))
        .unwrap_or(restarted);
    tokio::time::sleep_until(load_from.into()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Traffic::new(platform, Senders::Rotating(SENDERS));
    let (sent, sweep) = tokio::join!(
        load::open(
            &gateway.whatsapp.webhook_url,
            traffic,
            args.retention_rate,
            0,
            SWEEP_TIMEOUT + SWEEP_AFTER,
            Some(stop.clone()),
        ),
        watch_sweep(&db, &gateway.server.base, last_seeded, stop.clone()),
    );
    let sent = sent?;
    let sweep = sweep?;
    let acked: Vec<String> = sent.acked().map(|s| s.external_id.clone()).collect();
    let committed = check_committed(&gateway, platform, &acked, "retention", broken).await?;
    let left = db
        .number("SELECT COUNT(*) FROM messages WHERE id LIKE 'expired-%'")
        .await?;
    db.close().await;
    drop(gateway);

    let Some(Sweep {
        started,
        messages_gone,
        finished,
    }) = sweep
    else {
        broken.add(format!(
            "retention: the sweep did not finish within {} s",
            SWEEP_TIMEOUT.as_secs()
        ));
        return Ok(());
    };
    if seeded != args.expired as i64 || left != 0 {
        broken.add(format!(
            "retention: {seeded} expired messages seeded, {left} left after the sweep"
        ));
    }
    // Windows by scheduled send time.
    let at = |s: &load::Sample| sent.started + s.offset;
    let before: Vec<&load::Sample> = sent.samples.iter().filter(|s| at(s) < started).collect();
    let during: Vec<&load::Sample> = sent
        .samples
        .iter()
        .filter(|s| at(s) >= started && at(s) <= finished)
        .collect();
    let took = finished.saturating_duration_since(started);
    let deleting = messages_gone.saturating_duration_since(started);
    let window = |samples: &[&load::Sample]| {
        (
            Percentiles::of(
                samples
                    .iter()
                    .filter(|s| s.acked)
                    .map(|s| s.latency)
                    .collect(),
            ),
            samples.iter().filter(|s| !s.acked).count() as u64,
        )
    };
    let (reference, reference_errors) = window(&before);
    let (measured, errors) = window(&during);
    // Deleting the messages, then the rest of the sweep (other classes, compaction).
    let (deleting_phase, tail): (Vec<&load::Sample>, Vec<&load::Sample>) =
        during.iter().partition(|s| at(s) <= messages_gone);
    let (deleting_phase, _) = window(&deleting_phase);
    let (tail, _) = window(&tail);
    // The worst second of the sweep.
    let mut seconds: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for s in during.iter().filter(|s| s.acked) {
        let second = at(s).saturating_duration_since(started).as_secs();
        seconds.entry(second).or_default().push(s.latency);
    }
    let (worst_at, worst_second) = seconds
        .into_iter()
        .map(|(second, l)| (second, Percentiles::of(l).p99))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let load = format!("{:.0}/s offered", args.retention_rate);
    Row {
        section: "retention",
        what: "whatsapp webhooks before the sweep".into(),
        backend: "sqlite".into(),
        load: load.clone(),
        rate: Some(
            reference.count as f64
                / started
                    .saturating_duration_since(sent.started)
                    .as_secs_f64()
                    .max(1e-9),
        ),
        p50_ms: Some(reference.p50),
        p99_ms: Some(reference.p99),
        errors: Some(reference_errors),
        vs: "reference".into(),
        notes: format!(
            "{} expired messages seeded in {:.1} s; max {:.1} ms",
            seeded,
            seeded_in.as_secs_f64(),
            reference.max
        ),
        ..Row::default()
    }
    .print();
    Row {
        section: "retention",
        what: format!(
            "whatsapp webhooks while {} expired messages are swept",
            args.expired
        ),
        backend: "sqlite".into(),
        load,
        rate: Some(measured.count as f64 / took.as_secs_f64().max(1e-9)),
        p50_ms: Some(measured.p50),
        p99_ms: Some(measured.p99),
        errors: Some(errors),
        vs: format!(
            "p99 {:.1}x before the sweep",
            measured.p99 / reference.p99.max(f64::MIN_POSITIVE)
        ),
        notes: format!(
            "sweep took {:.1} s, its messages {:.1} s ({:.0} rows/s); {left} expired left; \
             worst 1-s p99 {:.1} ms (second {} of {:.0}), max {:.1} ms; p99 while deleting messages {:.1} ms, \
             in the {:.1} s after (other classes, WAL truncation) {:.1} ms; {committed}",
            took.as_secs_f64(),
            deleting.as_secs_f64(),
            seeded as f64 / deleting.as_secs_f64().max(1e-9),
            worst_second,
            worst_at + 1,
            took.as_secs_f64().ceil(),
            measured.max,
            deleting_phase.p99,
            finished
                .saturating_duration_since(messages_gone)
                .as_secs_f64(),
            tail.p99
        ),
        // "Throughout": the sweep's p99 and its worst single second's.
        target: target(
            "p99 < 50 ms in every second",
            measured.p99 < P99_TARGET_MS && worst_second < P99_TARGET_MS && errors == 0,
        ),
    }
    .print();
    Ok(())
}

/// When the sweep was seen to start, to have deleted every seeded message, and to
/// finish.
struct Sweep {
    started: Instant,
    messages_gone: Instant,
    finished: Instant,
}

/// Polls until the sweep has finished (or the timeout), then sets `stop` a moment
/// later. The seeded messages are the rows up to `last_seeded` in `seq` order, the
/// order the sweep deletes them in: a cheap look at the lowest `seq` every 100 ms
/// follows its progress without disturbing it; the metric (whose endpoint also
/// counts the inbox) is read every half second once the messages are gone.
async fn watch_sweep(
    db: &Db,
    base: &str,
    last_seeded: i64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Option<Sweep>> {
    let watching = Instant::now();
    let lowest = || db.number("SELECT COALESCE(MIN(seq), 0) FROM messages");
    let first = lowest().await?;
    let mut unchanged = Instant::now();
    let mut started = None;
    let mut messages_gone = None;
    let mut metric_looked = Instant::now();
    let result = loop {
        if watching.elapsed() > SWEEP_TIMEOUT + SWEEP_AFTER {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if messages_gone.is_none() {
            let min = lowest().await?;
            if started.is_none() && min != first {
                // Its first batch committed since the last look.
                started = Some(unchanged);
            } else if started.is_none() {
                unchanged = now;
            }
            if started.is_some() && (min == 0 || min > last_seeded) {
                messages_gone = Some(now);
            }
            continue;
        }
        if metric_looked.elapsed() < Duration::from_millis(500) {
            continue;
        }
        metric_looked = now;
        if process::metric(
            base,
            "omnigate_retention_deleted_total",
            "class=\"messages\"",
        )
        .await
        .unwrap_or(0.0)
            > 0.0
        {
            break Some(Sweep {
                started: started.unwrap_or(unchanged),
                messages_gone: messages_gone.unwrap_or(now),
                finished: now,
            });
        }
    };
    if result.is_some() {
        tokio::time::sleep(AFTER_SWEEP).await;
    }
    stop.store(true, Ordering::Relaxed);
    Ok(result)
}
