//! Scale: the same ingress load (closed loop, `active` distinct senders whose
//! conversations are stored) on a database holding 1 stored conversation and on one
//! holding `stored`; requests/s against the 1-conversation run, and the gateway's
//! resident memory (idle after start, peak under load, after the worker caught up,
//! and the kernel's high-water mark).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{self, Db};
use crate::load::{self, Platform, Senders, Traffic};
use crate::process::{self, Tuning};
use crate::report::{median, mib, target, Broken, Percentiles, Row};
use crate::{check_committed, Backend, Bench};

const RSS_TARGET_MIB: f64 = 150.0;
/// Throughput with many stored conversations within this share of the reference.
const FLAT_WITHIN: f64 = 0.20;

pub async fn run(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    // Requests/s with many stored conversations against 1, per round.
    let mut changes = Vec::new();
    for round in 0..args.rounds {
        let reference = one(bench, 1, round, None, broken).await?;
        let many = one(bench, args.stored, round, Some(reference), broken).await?;
        changes.push(many / reference - 1.0);
    }
    if args.rounds > 1 {
        let change = median(changes.clone());
        let each: Vec<String> = changes
            .iter()
            .map(|c| format!("{:+.0}%", c * 100.0))
            .collect();
        Row {
            section: "scale",
            what: format!(
                "{} stored conversations against 1, median of {} rounds",
                args.stored, args.rounds
            ),
            backend: "sqlite".into(),
            load: format!(
                "c={}, {} senders, {} s",
                args.scale_concurrency, args.active, args.duration
            ),
            vs: format!(
                "{:+.0}% req/s vs 1 stored ({})",
                change * 100.0,
                each.join(" ")
            ),
            notes: "each round: the 1-stored run, then the many-stored one".into(),
            target: target("flat within 20%", change.abs() <= FLAT_WITHIN),
            ..Row::default()
        }
        .print();
    }
    Ok(())
}

/// One run on a fresh database holding `stored` conversations; prints its row and
/// returns its requests/s. The first round also watches memory until the worker has
/// caught up; later rounds measure throughput only (the process is killed after the
/// load). `reference`: the 1-stored run's requests/s of this round.
async fn one(
    bench: &Bench,
    stored: u64,
    round: usize,
    reference: Option<f64>,
    broken: &mut Broken,
) -> anyhow::Result<f64> {
    let args = &bench.args;
    let platform = Platform::Whatsapp;
    let first = round == 0;
    let tuning = Tuning {
        llm: true,
        ..Tuning::default()
    };
    let mut gateway = bench
        .gateway(Backend::Sqlite, &format!("scale-{stored}-{round}"), &tuning)
        .await?;
    gateway.stop();
    let db = Db::connect(&gateway.database_url).await?;
    let seeding = Instant::now();
    db::seed_conversations(
        &db,
        &gateway.tenant_id,
        &gateway.whatsapp.id,
        stored,
        db::now_ms(),
    )
    .await?;
    let seeded_in = seeding.elapsed();
    gateway.restart().await?;
    let idle = gateway.server.memory().unwrap_or_default();
    let sampler = Sampler::start(gateway.server.pid());

    let load_start_ms = db::now_ms();
    let traffic = Traffic::new(platform, Senders::Rotating(args.active));
    let measured = load::closed(
        &gateway.whatsapp.webhook_url,
        traffic,
        args.scale_concurrency,
        Duration::from_secs(args.duration),
        Arc::new(AtomicU64::new(0)),
        || gateway.server.cpu(),
    )
    .await?;
    let peak_under_load = sampler.peak_kib();
    let label = format!("scale {stored} stored");
    let committed = check_committed(&gateway, platform, &measured.acked, &label, broken).await?;
    let rps = measured.rps();
    let latency = Percentiles::of(measured.latencies);
    let (vs, flat) = match reference {
        None => ("reference".to_string(), None),
        Some(reference) => {
            let change = rps / reference - 1.0;
            (
                format!("{:+.0}% req/s vs 1 stored", change * 100.0),
                Some(change.abs() <= FLAT_WITHIN),
            )
        }
    };
    let mut row = Row {
        section: "scale",
        what: format!("{stored} stored conversations, whatsapp webhooks"),
        backend: "sqlite".into(),
        load: format!(
            "c={}, {} senders, {} s",
            args.scale_concurrency, args.active, args.duration
        ),
        rate: Some(rps),
        p50_ms: Some(latency.p50),
        p99_ms: Some(latency.p99),
        errors: Some(measured.errors),
        vs,
        ..Row::default()
    };
    if !first {
        sampler.stop();
        db.close().await;
        drop(gateway);
        row.notes = format!(
            "round {}: throughput only; seeded in {:.1} s; {committed}",
            round + 1,
            seeded_in.as_secs_f64()
        );
        row.print();
        return Ok(rps);
    }
    let (drained, backlog) = drain(&db, Duration::from_secs(args.drain_timeout)).await?;
    let active = db
        .number(&format!(
            "SELECT COUNT(DISTINCT conversation_id) FROM messages \
             WHERE direction = 'inbound' AND created_at >= {load_start_ms}"
        ))
        .await?;
    let conversations = db.number("SELECT COUNT(*) FROM conversations").await?;
    let peak = sampler.stop();
    let after = gateway.server.memory().unwrap_or_default();
    db.close().await;
    drop(gateway);

    let hwm = mib(after.hwm_kib);
    let rss_met = hwm < RSS_TARGET_MIB;
    row.notes = format!(
        "RSS idle {:.0} MiB, peak under load {:.0}, peak {:.0}, after {:.0} (VmHWM {:.0}); \
         {conversations} conversations, {active} active; seeded in {:.1} s; worker caught up {}; {committed}",
        mib(idle.rss_kib),
        mib(peak_under_load),
        mib(peak),
        mib(after.rss_kib),
        hwm,
        seeded_in.as_secs_f64(),
        drained.map_or_else(
            || format!("not within {} s ({backlog} events queued)", args.drain_timeout),
            |d| format!("{:.1} s after the load", d.as_secs_f64())
        ),
    );
    // With several rounds the median row gives the "flat" verdict.
    row.target = match flat.filter(|_| args.rounds == 1) {
        None => target("RSS < 150 MiB", rss_met),
        Some(flat) => format!(
            "{}; {}",
            target("flat within 20%", flat),
            target("RSS < 150 MiB", rss_met)
        ),
    };
    row.print();
    Ok(rps)
}

/// Waits until the worker has handled every inbox event; how long that took, or
/// the events still open at the timeout.
async fn drain(db: &Db, timeout: Duration) -> anyhow::Result<(Option<Duration>, i64)> {
    let started = Instant::now();
    loop {
        let open = db
            .number("SELECT COUNT(*) FROM inbox_events WHERE state <> 'done'")
            .await?;
        if open == 0 {
            return Ok((Some(started.elapsed()), 0));
        }
        if started.elapsed() > timeout {
            return Ok((None, open));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples a process's resident memory every 100 ms, keeping the largest.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(m) = process::memory(pid) {
                    p.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, peak }
    }

    fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak_kib()
    }
}
