//! The binary's command line: config errors, environment overrides, tenant creation,
//! start with no configuration, clean exit on SIGTERM.

use std::process::Command;

use serde_json::Value;

use crate::process::{binary, free_port, Gateway};

fn omnigate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("OMNIGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn bad_config_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\n[platforms.meta]\napp_secrett = \"x\"\n",
    )
    .expect("write");
    let out = omnigate(dir.path())
        .args(["migrate", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("platforms.meta.app_secrett"), "{stderr}");

    let out = omnigate(dir.path())
        .arg("migrate")
        .env("OMNIGATE_LISTEN", "nowhere")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );

    let out = omnigate(dir.path())
        .arg("migrate")
        .env("OMNIGATE_PLATFORMS__META__GRAPH_URL", "::")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("platforms.meta.graph_url"), "{stderr}");

    let out = omnigate(dir.path())
        .arg("migrate")
        .env("OMNIGATE_NOT_A_KEY", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `not_a_key`"), "{stderr}");

    // The test suite's own switches are not configuration.
    let out = omnigate(dir.path())
        .arg("migrate")
        .env("OMNIGATE_TEST_REQUIRE_POSTGRES", "1")
        .env("OMNIGATE_TEST_POSTGRES_URL", "postgres://127.0.0.1:1/x")
        .env(
            "OMNIGATE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("m.db").display()),
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = omnigate(dir.path())
        .arg("migrate")
        .env("OMNIGATE_DATABASE_URL", "postgres://127.0.0.1:1/x")
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "postgres without master_key is refused before connecting"
    );
}

#[test]
fn tenant_create_prints_id_and_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let out = omnigate(dir.path())
        .args([
            "tenant",
            "create",
            "Acme",
            "--domain",
            "acme.example.com",
            "--json",
        ])
        .env("OMNIGATE_DATABASE_URL", &url)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    let key = created["api_key"].as_str().expect("key");
    assert!(key.starts_with("og_") && created["id"].is_string());
    // Only the hash is stored.
    let db = std::fs::read(dir.path().join("t.db")).expect("db");
    let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
    assert!(!wal.windows(key.len()).any(|w| w == key.as_bytes()));
}

/// `omnigate serve` with no configuration but the listen address, in `dir`, logging
/// (appending) to `log`; returns once `/healthz` answers.
async fn serve_bare(dir: &std::path::Path, log: &std::path::Path) -> Gateway {
    let port = free_port();
    let mut command = omnigate(dir);
    command
        .arg("serve")
        .env("OMNIGATE_LISTEN", format!("127.0.0.1:{port}"));
    Gateway::launch(command, port, log, "/healthz").await
}

#[tokio::test]
async fn serve_with_no_config_runs_on_sqlite_and_exits_cleanly_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let mut gateway = serve_bare(dir.path(), &log).await;
    assert!(dir.path().join("omnigate.db").exists());
    let key_file = dir.path().join("omnigate.db.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = gateway.terminate();
    assert!(status.success(), "exit status {status:?}");
    let warning = "generated one beside the database";
    let logs = std::fs::read_to_string(&log).expect("log");
    assert_eq!(logs.matches(warning).count(), 1, "{logs}");
    // Started again, it reuses the key and does not warn again.
    let mut gateway = serve_bare(dir.path(), &log).await;
    assert!(gateway.terminate().success());
    let logs = std::fs::read_to_string(&log).expect("log");
    assert_eq!(logs.matches(warning).count(), 1);
}
