//! Driving the real `omnigate` binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Creates a tenant through the admin API of the gateway at `url`; returns its API key.
pub async fn create_tenant(http: &reqwest::Client, url: &str, name: &str, domain: &str) -> String {
    let created: serde_json::Value = http
        .post(format!("{url}/api/v1/tenants"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&serde_json::json!({"name": name, "domain": domain}))
        .send()
        .await
        .expect("tenant")
        .json()
        .await
        .expect("json");
    created["api_key"].as_str().expect("key").to_string()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_omnigate")
}

/// A gateway process started with `serve --config FILE`; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub url: String,
}

impl Gateway {
    pub async fn start(config: &Path, port: u16, log: &Path) -> Self {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("OMNIGATE_TEST_POSTGRES_URL");
        Self::launch(command, port, log, "/readyz").await
    }

    /// Runs `command` (an `omnigate serve` listening on `port`) with JSON logs
    /// appended to `log`, and waits until `path` answers 200.
    pub async fn launch(mut command: Command, port: u16, log: &Path, path: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = command
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn omnigate");
        let gateway = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        crate::helpers::wait_until(path, || async {
            http.get(format!("{}{path}", gateway.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        gateway
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a gateway configuration file into `dir`.
pub fn write_config(dir: &Path, port: u16, database_url: &str, graph_url: &str) -> PathBuf {
    let path = dir.join("omnigate.toml");
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
database_url = "{database_url}"
admin_token = "{admin}"
master_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
[platforms.meta]
graph_url = "{graph_url}"
app_secret = "{secret}"
verify_token = "v"
[worker]
poll_ms = 100
lease_ms = 2000
{limits}
"#,
        limits = crate::helpers::TEST_LIMITS,
        admin = crate::helpers::ADMIN_TOKEN,
        secret = crate::helpers::OPERATOR_SECRET,
    );
    std::fs::write(&path, toml).expect("write config");
    path
}
