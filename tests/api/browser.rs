//! End to end in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from tests/browser): the sandbox page and the operator console, as a person uses
//! them. Screenshots of every page go to tests/browser/screenshots/ (git-ignored).
//!
//! Without a browser, node or `npm ci --prefix tests/browser` these tests say so
//! and pass, unless `OMNIGATE_TEST_REQUIRE_BROWSER=1` (CI), which makes them fail.

use std::path::PathBuf;
use std::process::Stdio;

use omnigate::config::Config;
use tokio_util::sync::CancellationToken;

use crate::helpers::{wait_until, Backend, TestDb};
use crate::on_both_backends;

struct Browser {
    chromium: PathBuf,
    dir: PathBuf,
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The browser and driver, or `None` (after saying why) when they are missing and
/// not required.
fn browser() -> Option<Browser> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var_os("OMNIGATE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .find_map(in_path)
        });
    let missing = match &chromium {
        None => Some("no chromium found (apt-get install -y chromium)".to_string()),
        Some(_) if in_path("node").is_none() => Some("no node found".to_string()),
        Some(_) if !dir.join("node_modules/playwright-core").is_dir() => {
            Some("playwright-core is not installed (npm ci --prefix tests/browser)".to_string())
        }
        Some(_) => None,
    };
    let required = std::env::var("OMNIGATE_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    match (missing, chromium) {
        (None, Some(chromium)) => Some(Browser { chromium, dir }),
        (why, _) => {
            let why = why.unwrap_or_default();
            assert!(!required, "OMNIGATE_TEST_REQUIRE_BROWSER=1 but {why}");
            eprintln!("browser test not run: {why}");
            None
        }
    }
}

/// The gateway as `serve --sandbox` runs it, on a random port.
struct SandboxApp {
    url: String,
    _db: TestDb,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SandboxApp {
    async fn start(backend: &Backend) -> Self {
        let db = TestDb::create(backend).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let toml = format!(
            r#"
listen = "{addr}"
database_url = "{db_url}"
master_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
sandbox = true
[worker]
poll_ms = 100
"#,
            db_url = db.url,
        );
        let config = Config::from_toml_str(&toml).expect("sandbox config");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(omnigate::run(config, listener, shutdown.clone()));
        let url = format!("http://{addr}");
        let http = reqwest::Client::new();
        wait_until("sandbox ready", || async {
            http.get(format!("{url}/sandbox"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        Self {
            url,
            _db: db,
            shutdown,
            handle,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("join")
            .expect("gateway exits cleanly");
    }
}

/// Runs `tests/browser/<script>` against `url`; panics with its output on failure,
/// returns its standard output.
async fn drive(browser: &Browser, script: &str, url: &str, backend: &Backend) -> String {
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let shots = browser.dir.join("screenshots").join(name);
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let output = tokio::process::Command::new("node")
        .arg(browser.dir.join(script))
        .env("OG_BASE_URL", url)
        .env("OG_CHROMIUM", &browser.chromium)
        .env("OG_SCREENSHOTS", &shots)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("{stdout}");
    stdout.into_owned()
}

/// In the sandbox, a customer writes on the WhatsApp and Slack tabs and sees the
/// offline answerer's reply (with its delivery status on WhatsApp).
async fn sandbox_replies_in_the_browser(backend: Backend) {
    let Some(browser) = browser() else { return };
    let app = SandboxApp::start(&backend).await;
    drive(&browser, "sandbox.mjs", &app.url, &backend).await;
    app.stop().await;
}

on_both_backends!(sandbox_replies_in_the_browser);

/// In the console: sign in, open the conversation the sandbox made, take over,
/// reply as an agent (seen in the sandbox), release, export and erase the contact.
async fn console_in_the_browser(backend: Backend) {
    let Some(browser) = browser() else { return };
    let app = SandboxApp::start(&backend).await;
    let stdout = drive(&browser, "console.mjs", &app.url, &backend).await;
    // The erasure really happened: the admin API no longer knows the contact.
    let contact_id = stdout
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["contact_id"].as_str().map(str::to_string))
        .expect("the script names the erased contact");
    let http = reqwest::Client::new();
    let demo: serde_json::Value = http
        .get(format!("{}/sandbox/demo", app.url))
        .send()
        .await
        .expect("demo")
        .json()
        .await
        .expect("json");
    let key = demo["api_key"].as_str().expect("key");
    let res = http
        .get(format!("{}/api/v1/contacts/{contact_id}", app.url))
        .bearer_auth(key)
        .send()
        .await
        .expect("contact");
    assert_eq!(res.status(), 404);
    app.stop().await;
}

on_both_backends!(console_in_the_browser);
