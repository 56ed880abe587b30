//! Ingress: signed webhooks acknowledged per second (closed loop, each concurrency)
//! and acknowledgement latency at a fixed offered rate (open loop), per platform and
//! backend, against the bare axum handler measured in the same run.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::load::{self, Platform, Senders, Traffic};
use crate::process::{bare_url, start_bare, Tuning};
use crate::report::{median, target, Broken, Percentiles, Row};
use crate::{check_committed, Backend, Bench};

/// People the deliveries rotate through.
const SENDERS: u64 = 5_000;
/// The target at concurrency 64: this share of the bare handler's requests/s.
const SHARE_TARGET: f64 = 0.40;
/// The target at the open-loop rate: p99 acknowledgement latency below this.
const P99_TARGET_MS: f64 = 10.0;

pub async fn run(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    let duration = Duration::from_secs(args.duration);
    // (platform, backend, concurrency) -> per round (requests/s ratio, CPU ratio).
    let mut ratios: BTreeMap<(Platform, Backend, usize), Vec<(f64, f64)>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &concurrency in &args.concurrency {
            for &platform in &args.platforms {
                let traffic = Traffic::new(platform, Senders::Rotating(SENDERS));
                let load = format!("c={concurrency}, {} s", args.duration);
                let bare = start_bare().await?;
                let reference = load::closed(
                    &bare_url(&bare, platform),
                    traffic,
                    concurrency,
                    duration,
                    Arc::new(AtomicU64::new(0)),
                    || bare.cpu(),
                )
                .await?;
                drop(bare);
                let latency = Percentiles::of(reference.latencies.clone());
                Row {
                    section: "ingress",
                    what: format!("bare axum ({} payloads)", platform.as_str()),
                    load: load.clone(),
                    rate: Some(reference.rps()),
                    p50_ms: Some(latency.p50),
                    p99_ms: Some(latency.p99),
                    errors: Some(reference.errors),
                    vs: "reference".into(),
                    notes: cpu_note(reference.cpu_us),
                    ..Row::default()
                }
                .print();
                for backend in bench.backends() {
                    let name = format!("ingress-{}-{concurrency}-{round}", platform.as_str());
                    let gateway = bench.gateway(backend, &name, &Tuning::default()).await?;
                    let measured = load::closed(
                        &gateway.channel(platform).webhook_url,
                        traffic,
                        concurrency,
                        duration,
                        Arc::new(AtomicU64::new(0)),
                        || gateway.server.cpu(),
                    )
                    .await?;
                    let label = format!(
                        "ingress {} {} c={concurrency}",
                        platform.as_str(),
                        backend.as_str()
                    );
                    let committed =
                        check_committed(&gateway, platform, &measured.acked, &label, broken)
                            .await?;
                    drop(gateway);
                    let share = measured.rps() / reference.rps();
                    let cpu_ratio = measured
                        .cpu_us
                        .zip(reference.cpu_us)
                        .map_or(f64::NAN, |(m, r)| m / r.max(f64::MIN_POSITIVE));
                    ratios
                        .entry((platform, backend, concurrency))
                        .or_default()
                        .push((share, cpu_ratio));
                    let latency = Percentiles::of(measured.latencies);
                    Row {
                        section: "ingress",
                        what: format!("{} webhooks", platform.as_str()),
                        backend: backend.as_str().into(),
                        load: load.clone(),
                        rate: Some(measured.acked.len() as f64 / measured.elapsed.as_secs_f64()),
                        p50_ms: Some(latency.p50),
                        p99_ms: Some(latency.p99),
                        errors: Some(measured.errors),
                        vs: format!("{:.0}% of bare req/s", share * 100.0),
                        notes: format!(
                            "{}{}; {committed}",
                            cpu_note(measured.cpu_us),
                            if cpu_ratio.is_finite() {
                                format!(" ({cpu_ratio:.1}x bare)")
                            } else {
                                String::new()
                            }
                        ),
                        target: share_target(concurrency, share),
                    }
                    .print();
                }
            }
        }
    }
    if args.rounds > 1 {
        for ((platform, backend, concurrency), runs) in ratios {
            let shares: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}%", r.0 * 100.0))
                .collect();
            let share = median(runs.iter().map(|r| r.0).collect());
            let cpu = median(runs.iter().map(|r| r.1).collect());
            Row {
                section: "ingress",
                what: format!(
                    "{} webhooks, median of {} rounds",
                    platform.as_str(),
                    runs.len()
                ),
                backend: backend.as_str().into(),
                load: format!("c={concurrency}, {} s", args.duration),
                vs: format!("{:.0}% of bare req/s ({})", share * 100.0, shares.join(" ")),
                notes: format!("CPU per request {cpu:.1}x bare"),
                target: share_target(concurrency, share),
                ..Row::default()
            }
            .print();
        }
    }
    if args.open_rate > 0.0 {
        open_loop(bench, broken).await?;
    }
    Ok(())
}

fn cpu_note(cpu_us: Option<f64>) -> String {
    cpu_us.map_or_else(String::new, |us| format!("server CPU {us:.0} µs/req"))
}

fn share_target(concurrency: usize, share: f64) -> String {
    if concurrency == 64 {
        target("≥ 40% of bare", share >= SHARE_TARGET)
    } else {
        String::new()
    }
}

/// A fixed offered rate; latency from each request's scheduled time.
async fn open_loop(bench: &Bench, broken: &mut Broken) -> anyhow::Result<()> {
    let args = &bench.args;
    let duration = Duration::from_secs(args.duration);
    let load = format!("{:.0}/s offered, {} s", args.open_rate, args.duration);
    // The floor under every durable acknowledgement on this disk, measured now.
    let dir = bench.dir.path().to_path_buf();
    let syncs = tokio::task::spawn_blocking(move || fsync_latencies(&dir, 200)).await??;
    let syncs = Percentiles::of(syncs);
    Row {
        section: "ingress",
        what: "disk: 4 KiB append + fdatasync, the durable-commit floor".into(),
        load: "200 in a row".into(),
        p50_ms: Some(syncs.p50),
        p99_ms: Some(syncs.p99),
        notes: format!("max {:.2} ms; same disk as the SQLite files", syncs.max),
        ..Row::default()
    }
    .print();
    for &platform in &args.platforms {
        let traffic = Traffic::new(platform, Senders::Rotating(SENDERS));
        let bare = start_bare().await?;
        let bare_warm_up = load::warm_up(
            &bare_url(&bare, platform),
            traffic,
            args.open_rate,
            args.warmup,
        )
        .await?;
        let reference = load::open(
            &bare_url(&bare, platform),
            traffic,
            args.open_rate,
            0,
            duration,
            None,
        )
        .await?;
        drop(bare);
        let bare_latency = Percentiles::of(reference.acked().map(|s| s.latency).collect());
        Row {
            section: "ingress",
            what: format!("bare axum ({} payloads), open loop", platform.as_str()),
            load: load.clone(),
            rate: Some(reference.rate()),
            p50_ms: Some(bare_latency.p50),
            p99_ms: Some(bare_latency.p99),
            errors: Some(reference.errors()),
            vs: "reference".into(),
            notes: format!(
                "max {:.2} ms; {}",
                bare_latency.max,
                warm_up_note(args.warmup, bare_warm_up.as_ref())
            ),
            ..Row::default()
        }
        .print();
        for backend in bench.backends() {
            let name = format!("open-{}", platform.as_str());
            let gateway = bench.gateway(backend, &name, &Tuning::default()).await?;
            let warm_up = load::warm_up(
                &gateway.channel(platform).webhook_url,
                traffic,
                args.open_rate,
                args.warmup,
            )
            .await?;
            let measured = load::open(
                &gateway.channel(platform).webhook_url,
                traffic,
                args.open_rate,
                0,
                duration,
                None,
            )
            .await?;
            let acked: Vec<String> = measured.acked().map(|s| s.external_id.clone()).collect();
            let label = format!(
                "ingress {} {} open loop",
                platform.as_str(),
                backend.as_str()
            );
            let committed = check_committed(&gateway, platform, &acked, &label, broken).await?;
            drop(gateway);
            let latency = Percentiles::of(measured.acked().map(|s| s.latency).collect());
            Row {
                section: "ingress",
                what: format!("{} webhooks, open loop", platform.as_str()),
                backend: backend.as_str().into(),
                load: load.clone(),
                rate: Some(measured.rate()),
                p50_ms: Some(latency.p50),
                p99_ms: Some(latency.p99),
                errors: Some(measured.errors()),
                vs: format!(
                    "p99 {:.1}x bare",
                    latency.p99 / bare_latency.p99.max(f64::MIN_POSITIVE)
                ),
                notes: format!(
                    "max {:.2} ms; {}; {committed}",
                    latency.max,
                    warm_up_note(args.warmup, warm_up.as_ref())
                ),
                target: target(
                    "p99 < 10 ms",
                    latency.p99 < P99_TARGET_MS && measured.errors() == 0,
                ),
            }
            .print();
        }
    }
    Ok(())
}

/// The acknowledgement latency of a warm-up run, for a row's notes.
fn warm_up_note(seconds: u64, warm_up: Option<&load::Open>) -> String {
    match warm_up {
        Some(sent) => {
            let latency = Percentiles::of(sent.acked().map(|s| s.latency).collect());
            format!(
                "{seconds} s warm-up before: p50 {:.2} / p99 {:.2} ms, {} errors",
                latency.p50,
                latency.p99,
                sent.errors()
            )
        }
        None => "no warm-up".into(),
    }
}

/// Times `n` appends of 4 KiB, each followed by `fdatasync`, in `dir`.
fn fsync_latencies(dir: &std::path::Path, n: usize) -> std::io::Result<Vec<Duration>> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    std::fs::remove_file(path)?;
    Ok(times)
}
