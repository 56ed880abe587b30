//! Ingress benchmark: signed WhatsApp webhooks against the gateway and against a bare
//! axum handler, in the same run, on the same machine; prints requests/s, p50/p99
//! acknowledgement latency and the ratio to the bare handler. After each gateway run
//! it checks that every acknowledged event is committed in the database.
//!
//! Besides requests/s it reports the server process's CPU time per acknowledged
//! request (from /proc), which other load on a shared machine disturbs far less than
//! throughput, and with `--rounds N` it alternates reference and gateway runs N times
//! and summarizes the median ratio.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    /// The release gateway binary.
    #[arg(long, default_value = "target/release/omnigate")]
    gateway: PathBuf,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Also measure the gateway on this PostgreSQL server (a scratch database is created).
    #[arg(long)]
    postgres: Option<String>,
    /// Measure everything this many times, alternating reference and gateway runs.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Run as the bare reference server on this port (used by the benchmark itself).
    #[arg(long, hide = true)]
    bare_server: Option<u16>,
}

const SECRET: &str = "bench-app-secret";
const ADMIN: &str = "bench-admin-token";
const PHONE_ID: &str = "1000001";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.bare_server {
        Some(port) => runtime.block_on(bare_server(port)),
        None => runtime.block_on(bench(args)),
    }
}

/// The reference: an axum handler that reads the body and answers 200.
async fn bare_server(port: u16) -> anyhow::Result<()> {
    let router = axum::Router::new().route(
        "/webhooks/whatsapp/{id}",
        axum::routing::post(|_body: axum::body::Bytes| async { "ok" }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up")
}

/// A fake Graph API so the gateway's replies have somewhere to go.
async fn fake_graph() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let counter = Arc::new(AtomicU64::new(0));
    let router = axum::Router::new().route(
        "/{v}/{p}/messages",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { axum::Json(json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.b{n}")}]})) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

async fn start_bare() -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--bare-server", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await?;
    Ok(Server {
        child,
        url: format!("{url}/webhooks/whatsapp/bench"),
    })
}

/// Starts the gateway on `database_url`, creates a tenant and a WhatsApp channel, and
/// returns the server with the channel's webhook URL.
async fn start_gateway(
    binary: &PathBuf,
    database_url: &str,
    graph: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let config = dir.join(format!("gateway-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{database_url}\"\nadmin_token = \"{ADMIN}\"\n\
             master_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n[platforms.meta]\ngraph_url = \"{graph}\"\n"
        ),
    )?;
    let child = Command::new(binary)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    // Owned from here on, so an error below still stops the process.
    let mut server = Server {
        child,
        url: String::new(),
    };
    wait_ready(&format!("{base}/healthz")).await?;
    let http = reqwest::Client::new();
    let tenant: Value = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Bench", "domain": "bench.example.com"}))
        .send()
        .await?
        .json()
        .await?;
    let key = tenant["api_key"].as_str().context("api key")?;
    let channel: Value = http
        .post(format!("{base}/api/v1/channels"))
        .bearer_auth(key)
        .json(&json!({"platform": "whatsapp", "phone_number_id": PHONE_ID, "access_token": "EAAG-bench", "app_secret": SECRET}))
        .send()
        .await?
        .json()
        .await?;
    server.url = channel["webhook_url"]
        .as_str()
        .context("webhook url")?
        .to_string();
    Ok(server)
}

fn payload(seq: u64) -> String {
    let from = format!("1555{:07}", seq % 5000);
    json!({"object": "whatsapp_business_account", "entry": [{"id": "b", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": from}],
        "messages": [{"from": from, "id": format!("wamid.bench.{seq}"), "timestamp": "1750000000", "type": "text",
            "text": {"body": "Hello, what are your opening hours?"}}]}}]}]})
    .to_string()
}

/// CPU time (user + system) a process has used so far, from /proc (Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, in clock ticks (USER_HZ = 100).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct Measured {
    requests: u64,
    /// Server CPU microseconds per acknowledged request.
    cpu_us: f64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends signed deliveries from `concurrency` connections for `duration`.
async fn load(
    server: &Server,
    concurrency: usize,
    duration: Duration,
    seq: Arc<AtomicU64>,
) -> anyhow::Result<Measured> {
    let url = server.url.as_str();
    let cpu_before = cpu_time(server.child.id());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, seq) = (http.clone(), url.to_string(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let body = payload(seq.fetch_add(1, Ordering::Relaxed));
                let signature = webhooks::meta::sign(SECRET.as_bytes(), body.as_bytes());
                let sent = Instant::now();
                let res = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 200 => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(cpu_time(server.child.id()))
        .map_or(0.0, |(before, after)| (after - before).as_secs_f64());
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Measured {
        requests: all.len() as u64,
        cpu_us: cpu * 1e6 / all.len().max(1) as f64,
        errors,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

async fn committed_events(database_url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let count = if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM inbox_events")
            .fetch_one(&mut conn)
            .await?
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM inbox_events")
            .fetch_one(&mut conn)
            .await?
    };
    Ok(count)
}

/// Drops and creates the scratch database; returns its URL.
async fn recreate_postgres(admin_url: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = fake_graph().await?;
    let duration = Duration::from_secs(args.duration);
    let mut backends = vec!["sqlite"];
    if args.postgres.is_some() {
        backends.push("postgres");
    }
    let scratch = format!("og_bench_{}", std::process::id());

    println!(
        "| target | backend | concurrency | requests/s | p50 ms | p99 ms | errors | vs bare | server CPU µs/req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all_committed = true;
    // (backend, concurrency) -> per-round (throughput ratio, CPU ratio).
    let mut ratios: std::collections::BTreeMap<(&str, usize), Vec<(f64, f64)>> = Default::default();
    for round in 0..args.rounds {
        for &concurrency in &args.concurrency {
            let bare = start_bare().await?;
            let reference = load(&bare, concurrency, duration, Arc::new(AtomicU64::new(0))).await?;
            drop(bare);
            row("bare axum", "-", concurrency, &reference, reference.rps);
            for &backend in &backends {
                // A fresh database for every run.
                let database_url = match (backend, &args.postgres) {
                    ("postgres", Some(admin_url)) => recreate_postgres(admin_url, &scratch).await?,
                    _ => format!(
                        "sqlite://{}",
                        dir.path()
                            .join(format!("bench-{concurrency}-{round}.db"))
                            .display()
                    ),
                };
                let gateway =
                    start_gateway(&args.gateway, &database_url, &graph, dir.path()).await?;
                let seq = Arc::new(AtomicU64::new(0));
                let measured = load(&gateway, concurrency, duration, seq).await?;
                let committed = committed_events(&database_url).await?;
                drop(gateway);
                row("omnigate", backend, concurrency, &measured, reference.rps);
                ratios.entry((backend, concurrency)).or_default().push((
                    measured.rps / reference.rps,
                    measured.cpu_us / reference.cpu_us.max(f64::MIN_POSITIVE),
                ));
                if committed != measured.requests as i64 {
                    all_committed = false;
                    println!(
                        "  ! {backend}: {} acknowledged but {committed} committed",
                        measured.requests
                    );
                }
            }
        }
    }
    if args.rounds > 1 {
        println!();
        println!("| backend | concurrency | median vs bare (requests/s) | rounds | median CPU per request vs bare |");
        println!("|---|---:|---:|---|---:|");
        for ((backend, concurrency), mut runs) in ratios {
            let all: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}%", r.0 * 100.0))
                .collect();
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let mut rps: Vec<f64> = runs.iter().map(|r| r.0).collect();
            runs.retain(|r| r.1.is_finite());
            let mut cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
            println!(
                "| {backend} | {concurrency} | {:.0}% | {} | {:.1}x |",
                median(&mut rps) * 100.0,
                all.join(" "),
                if cpu.is_empty() {
                    f64::NAN
                } else {
                    median(&mut cpu)
                }
            );
        }
    }
    println!();
    println!(
        "every acknowledged event committed: {}",
        if all_committed { "yes" } else { "NO" }
    );
    if let Some(admin_url) = &args.postgres {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
    }
    if !all_committed {
        bail!("acknowledged events missing from the database");
    }
    Ok(())
}

fn row(target: &str, backend: &str, concurrency: usize, m: &Measured, reference_rps: f64) {
    println!(
        "| {target} | {backend} | {concurrency} | {:.0} | {:.2} | {:.2} | {} | {:.0}% | {:.0} |",
        m.rps,
        m.p50_ms,
        m.p99_ms,
        m.errors,
        100.0 * m.rps / reference_rps,
        m.cpu_us
    );
}
