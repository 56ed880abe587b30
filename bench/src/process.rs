//! The processes measured: the bare axum reference and the release gateway, each a
//! child process, and what /proc says about them (CPU time, resident memory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::fakes::Fakes;
use crate::load::{Platform, META_SECRET, PHONE_ID, SLACK_BOT_TOKEN, SLACK_SECRET, SLACK_TEAM};

const ADMIN: &str = "bench-admin-token";
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A child process, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu(&self) -> Option<Duration> {
        cpu_time(self.pid())
    }

    pub fn memory(&self) -> Option<Memory> {
        memory(self.pid())
    }
}

/// The reference: an axum handler that reads the body and answers 200, on the same
/// paths the gateway's channel routes have.
pub async fn bare_server(port: u16) -> anyhow::Result<()> {
    let router = axum::Router::new().route(
        "/webhooks/{platform}/{id}",
        axum::routing::post(|_body: axum::body::Bytes| async { "ok" }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

pub async fn start_bare() -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--bare-server", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Server { child, base };
    wait_ready(&server.base).await?;
    Ok(server)
}

/// The bare server's URL for a platform's deliveries.
pub fn bare_url(bare: &Server, platform: Platform) -> String {
    format!("{}/webhooks/{}/bench", bare.base, platform.as_str())
}

/// Settings a section changes from the gateway's defaults.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Aim `[ai.anthropic]` at the fake LLM (otherwise no provider: the offline
    /// knowledge answerer replies).
    pub llm: bool,
    /// `worker.poll_ms`.
    pub poll_ms: Option<u64>,
    /// `retention.sweep_interval_minutes`.
    pub sweep_minutes: Option<u64>,
}

/// The gateway with one tenant and one WhatsApp and one Slack channel.
pub struct Gateway {
    pub server: Server,
    binary: PathBuf,
    config: PathBuf,
    pub database_url: String,
    pub tenant_id: String,
    pub whatsapp: Channel,
    pub slack: Channel,
}

pub struct Channel {
    pub id: String,
    pub webhook_url: String,
}

impl Gateway {
    /// Starts the gateway on a fresh `database_url` and creates the tenant and channels
    /// through the admin API.
    pub async fn start(
        binary: &Path,
        database_url: &str,
        fakes: &Fakes,
        dir: &Path,
        tuning: &Tuning,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = dir.join(format!("gateway-{port}.toml"));
        std::fs::write(&config, config_toml(port, database_url, fakes, tuning))?;
        let server = spawn(binary, &config, port).await?;
        let http = reqwest::Client::new();
        let base = server.base.clone();
        let tenant: Value = http
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "Bench", "domain": "bench.example.com"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let key = tenant["api_key"].as_str().context("api key")?;
        let mut channels = Vec::new();
        for body in [
            json!({"platform": "whatsapp", "phone_number_id": PHONE_ID, "access_token": "EAAG-bench", "app_secret": META_SECRET}),
            json!({"platform": "slack", "team_id": SLACK_TEAM, "bot_token": SLACK_BOT_TOKEN, "signing_secret": SLACK_SECRET}),
        ] {
            let created: Value = http
                .post(format!("{base}/api/v1/channels"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            channels.push(Channel {
                id: created["id"].as_str().context("channel id")?.to_string(),
                webhook_url: created["webhook_url"]
                    .as_str()
                    .context("webhook url")?
                    .to_string(),
            });
        }
        let slack = channels.pop().context("slack channel")?;
        let whatsapp = channels.pop().context("whatsapp channel")?;
        Ok(Self {
            server,
            binary: binary.to_path_buf(),
            config,
            database_url: database_url.to_string(),
            tenant_id: tenant["id"].as_str().context("tenant id")?.to_string(),
            whatsapp,
            slack,
        })
    }

    pub fn channel(&self, platform: Platform) -> &Channel {
        match platform {
            Platform::Whatsapp => &self.whatsapp,
            Platform::Slack => &self.slack,
        }
    }

    /// Stops the process (SIGKILL: the gateway is idle, and crash-safe anyway).
    pub fn stop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }

    /// Starts the process again on the same configuration and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let port: u16 = self
            .server
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("port")?;
        self.server = spawn(&self.binary, &self.config, port).await?;
        Ok(())
    }
}

/// The sum of a metric's samples whose labels contain `labels`, from the Prometheus
/// text at `{base}/metrics`.
pub async fn metric(base: &str, name: &str, labels: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    Ok(sum_samples(&text, name, labels))
}

fn sum_samples(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']) && rest.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // An empty sum is -0.0.
        .sum::<f64>()
        + 0.0
}

fn config_toml(port: u16, database_url: &str, fakes: &Fakes, tuning: &Tuning) -> String {
    let mut toml = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{database_url}\"\nadmin_token = \"{ADMIN}\"\n\
         master_key = \"{MASTER_KEY}\"\n\
         [platforms.meta]\ngraph_url = \"{}\"\n\
         [platforms.slack]\napi_url = \"{}\"\n",
        fakes.graph_url, fakes.slack_api_url
    );
    if tuning.llm {
        toml.push_str(&format!(
            "[ai]\nproviders = [\"anthropic\"]\n[ai.anthropic]\nbase_url = \"{}\"\napi_key = \"bench-anthropic-key\"\nmodel = \"claude-bench\"\n",
            fakes.llm_url
        ));
    }
    if let Some(ms) = tuning.poll_ms {
        toml.push_str(&format!("[worker]\npoll_ms = {ms}\n"));
    }
    if let Some(minutes) = tuning.sweep_minutes {
        toml.push_str(&format!(
            "[retention]\nsweep_interval_minutes = {minutes}\n"
        ));
    }
    toml
}

async fn spawn(binary: &Path, config: &Path, port: u16) -> anyhow::Result<Server> {
    let child = Command::new(binary)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    // Owned from here on, so an error below still stops the process.
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&format!("{}/healthz", server.base)).await?;
    Ok(server)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up")
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

/// Resident memory of a process now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_summed_by_name_and_labels() {
        let text = "# TYPE omnigate_retention_deleted_total counter\n\
                    omnigate_retention_deleted_total{class=\"messages\"} 1000000\n\
                    omnigate_retention_deleted_total{class=\"raw_events\"} 7\n\
                    omnigate_retention_deleted_total_other 5\n\
                    omnigate_event_processing_seconds_sum 1.5\n";
        let name = "omnigate_retention_deleted_total";
        assert_eq!(sum_samples(text, name, "class=\"messages\""), 1_000_000.0);
        assert_eq!(sum_samples(text, name, ""), 1_000_007.0);
        assert_eq!(
            sum_samples(text, "omnigate_event_processing_seconds_sum", ""),
            1.5
        );
        assert!(sum_samples(text, "omnigate_missing", "").is_sign_positive());
    }
}
