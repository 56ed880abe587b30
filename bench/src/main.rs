//! omnigate's benchmark set: one command, one table.
//!
//! - **ingress**: signed WhatsApp and Slack webhooks, closed-loop at each concurrency
//!   and open-loop at a fixed offered rate, on SQLite (and Postgres), against a bare
//!   axum handler measured in the same run;
//! - **e2e**: webhook in → reply at a fake Graph API, with an instant fake LLM, new
//!   conversations at a fixed offered rate: the gateway's own added latency;
//! - **scale**: ingress throughput and resident memory with 1 and with 100,000
//!   stored conversations, 10,000 of them active;
//! - **retention**: ingress latency while the sweeper deletes 1,000,000 expired
//!   messages, against the same run's latency before the sweep.
//!
//! Every run checks that each acknowledged event is committed, and the benchmark
//! fails if one is not.

mod db;
mod e2e;
mod fakes;
mod ingress;
mod load;
mod process;
mod report;
mod retention;
mod scale;

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

use crate::load::Platform;
use crate::process::{Gateway, Tuning};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Ingress,
    E2e,
    Scale,
    Retention,
}

#[derive(Debug, Parser)]
pub struct Args {
    /// The release gateway binary.
    #[arg(long, default_value = "target/release/omnigate")]
    gateway: PathBuf,
    /// Sections to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingress,e2e,scale,retention"
    )]
    only: Vec<Section>,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Also measure on this PostgreSQL server (ingress and e2e; a scratch database
    /// is created and dropped).
    #[arg(long)]
    postgres: Option<String>,
    /// Ingress: platforms to send as.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "whatsapp,slack"
    )]
    platforms: Vec<Platform>,
    /// Ingress: closed-loop concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Measure the closed-loop ingress runs, the end-to-end runs and the scale
    /// comparison this many times (alternating reference and gateway, the poll
    /// settings, 1 and many stored conversations), and add medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Ingress: requests a second offered in the open-loop run (0: no open-loop run).
    #[arg(long, default_value_t = 1000.0)]
    open_rate: f64,
    /// Open-loop ingress and end to end: seconds of the same load sent to the fresh
    /// gateway (and the bare reference) just before the measurement and not counted
    /// in it, so the measurement is the warm gateway's (its connections open, its
    /// statements prepared); the warm-up's own p99 is in the notes. 0: measure from
    /// a cold start.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// End to end: new conversations a second offered.
    #[arg(long, default_value_t = 500.0)]
    e2e_rate: f64,
    /// End to end: `worker.poll_ms` values to measure (default: the gateway's own).
    #[arg(long, value_delimiter = ',')]
    e2e_poll_ms: Vec<u64>,
    /// Scale: stored conversations seeded (measured against 1 stored conversation).
    #[arg(long, default_value_t = 100_000)]
    stored: u64,
    /// Scale: distinct senders (active conversations) in the load.
    #[arg(long, default_value_t = 10_000)]
    active: u64,
    /// Scale: concurrency of the throughput run.
    #[arg(long, default_value_t = 64)]
    scale_concurrency: usize,
    /// Scale: longest wait for the worker to catch up after the load (memory is
    /// sampled meanwhile).
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Retention: expired messages seeded.
    #[arg(long, default_value_t = 1_000_000)]
    expired: u64,
    /// Retention: requests a second offered while the sweep runs.
    #[arg(long, default_value_t = 1000.0)]
    retention_rate: f64,
    /// Retention: seconds of load measured before the sweep starts (the reference).
    #[arg(long, default_value_t = 10)]
    before_sweep: u64,
    /// Run as the bare reference server on this port (used by the benchmark itself).
    #[arg(long, hide = true)]
    bare_server: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// What every section shares: arguments, a scratch directory, the fake APIs.
pub struct Bench {
    pub args: Args,
    pub dir: tempfile::TempDir,
    pub fakes: fakes::Fakes,
    scratch: String,
    /// Numbers the SQLite files, so every run gets a fresh one.
    runs: std::sync::atomic::AtomicU64,
}

impl Bench {
    /// SQLite, and Postgres when a server was given.
    pub fn backends(&self) -> Vec<Backend> {
        let mut backends = vec![Backend::Sqlite];
        if self.args.postgres.is_some() {
            backends.push(Backend::Postgres);
        }
        backends
    }

    /// A fresh, empty database.
    pub async fn database(&self, backend: Backend, name: &str) -> anyhow::Result<String> {
        match (backend, &self.args.postgres) {
            (Backend::Postgres, Some(admin_url)) => {
                db::recreate_postgres(admin_url, &self.scratch).await
            }
            (Backend::Postgres, None) => bail!("no --postgres server given"),
            (Backend::Sqlite, _) => {
                let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(db::sqlite_url(self.dir.path(), &format!("{name}-{run}")))
            }
        }
    }

    /// The gateway on a fresh database of `backend`, with its tenant and channels.
    pub async fn gateway(
        &self,
        backend: Backend,
        name: &str,
        tuning: &Tuning,
    ) -> anyhow::Result<Gateway> {
        let database_url = self.database(backend, name).await?;
        Gateway::start(
            &self.args.gateway,
            &database_url,
            &self.fakes,
            self.dir.path(),
            tuning,
        )
        .await
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.bare_server {
        Some(port) => runtime.block_on(process::bare_server(port)),
        None => runtime.block_on(run(args)),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bench = Bench {
        dir: tempfile::tempdir()?,
        fakes: fakes::Fakes::start().await?,
        scratch: format!("og_bench_{}", std::process::id()),
        runs: Default::default(),
        args,
    };
    let mut broken = report::Broken::default();
    println!(
        "{} UTC, load average {}",
        report::utc_now(),
        report::load_average()
    );
    println!();
    report::header();
    let mut result = Ok(());
    for section in bench.args.only.clone() {
        result = match section {
            Section::Ingress => ingress::run(&bench, &mut broken).await,
            Section::E2e => e2e::run(&bench, &mut broken).await,
            Section::Scale => scale::run(&bench, &mut broken).await,
            Section::Retention => retention::run(&bench, &mut broken).await,
        };
        if result.is_err() {
            break;
        }
    }
    if let Some(admin_url) = &bench.args.postgres {
        db::drop_postgres(admin_url, &bench.scratch).await?;
    }
    result?;
    println!();
    println!("load average at the end {}", report::load_average());
    if broken.is_empty() {
        println!("every acknowledged event committed, every reply received, every expired row deleted: yes");
        Ok(())
    } else {
        println!("NOT KEPT:");
        for what in broken.list() {
            println!("- {what}");
        }
        bail!("{} promise(s) broken", broken.list().len())
    }
}

/// Checks that every event acknowledged in `acked` is in the gateway's inbox, records
/// a broken promise when one is not, and returns a note for the table.
pub async fn check_committed(
    gateway: &Gateway,
    platform: Platform,
    acked: &[String],
    what: &str,
    broken: &mut report::Broken,
) -> anyhow::Result<String> {
    let db = db::Db::connect(&gateway.database_url).await?;
    let committed = db.inbox_ids(&gateway.channel(platform).id).await?;
    db.close().await;
    let missing = db::missing(acked, &committed);
    if missing > 0 {
        broken.add(format!(
            "{what}: {missing} of {} acknowledged events not committed",
            acked.len()
        ));
    }
    Ok(format!(
        "{}/{} acked committed",
        acked.len() - missing,
        acked.len()
    ))
}
