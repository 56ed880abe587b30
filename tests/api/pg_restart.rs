//! PostgreSQL stopped and started again under load: while the database is away every
//! delivery is answered 503 (never 2xx, never 500), so the platform retries, and after
//! it returns every acknowledged message is stored exactly once and answered.
//!
//! This restarts the shared server, so it runs only with `OMNIGATE_TEST_PG_RESTART=1`
//! (set by `.ci/run`) and on a machine where `pg_ctlcluster` controls that server.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

const SENDERS: usize = 20;
const PER_SENDER: usize = 10;
/// Acknowledgements before the database is stopped.
const STOP_AT: usize = 40;
/// 503 answers to see before the database is started again.
const UNAVAILABLE_SEEN: usize = 10;

/// Starts the cluster again when dropped, even if the test fails half-way.
struct Cluster(String);

impl Cluster {
    fn find() -> Option<Self> {
        let versions = std::fs::read_dir("/etc/postgresql").ok()?;
        let mut names: Vec<String> = versions
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names.into_iter().next().map(Self)
    }

    fn ctl(&self, action: &str) -> bool {
        Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.0, "main", action])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    if std::env::var("OMNIGATE_TEST_PG_RESTART").ok().as_deref() != Some("1") {
        eprintln!("OMNIGATE_TEST_PG_RESTART unset: the database is not restarted");
        return;
    }
    let Some(backend) = Backend::postgres() else {
        eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run");
        return;
    };
    let cluster = Cluster::find().expect("a PostgreSQL cluster under /etc/postgresql");
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Restart").await;
    app.add_document(
        &tenant,
        "Hours",
        "Our opening hours are 9 to 17 on weekdays.",
    )
    .await;
    let channel = app
        .create_whatsapp(&tenant, "9001", Some("restart-secret"))
        .await;
    let webhook = format!("{}/webhooks/whatsapp/{channel}", app.url);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Senders deliver like Meta: retry each message until it is acknowledged, and
    // remember every other answer.
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let refused: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (http, webhook) = (http.clone(), webhook.clone());
        let (acked, refused) = (acked.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let from = format!("1666{s:06}");
            for m in 0..PER_SENDER {
                let wamid = format!("wamid.restart.{s}.{m}");
                let body = wa_texts("9001", &[(&from, &wamid, "what are your opening hours?")]);
                let signature = webhooks::meta::sign(b"restart-secret", body.as_bytes());
                loop {
                    let res = http
                        .post(&webhook)
                        .header("x-hub-signature-256", &signature)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match res.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            acked.lock().expect("lock").push(wamid.clone());
                            break;
                        }
                        Ok(status) => refused.lock().expect("lock").push(status),
                        Err(_) => refused.lock().expect("lock").push(0),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    wait_until("load before the stop", || async {
        acked.lock().expect("lock").len() >= STOP_AT
    })
    .await;
    assert!(cluster.ctl("stop"), "pg_ctlcluster stop");
    wait_until("deliveries refused while the database is away", || async {
        refused.lock().expect("lock").len() >= UNAVAILABLE_SEEN
    })
    .await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 503, "not ready without a database");
    assert!(cluster.ctl("start"), "pg_ctlcluster start");

    for sender in senders {
        sender.await.expect("sender");
    }
    let refused = refused.lock().expect("lock").clone();
    assert!(
        refused.iter().all(|&s| s == 503),
        "while the database was away deliveries got {refused:?}, not only 503"
    );
    let acked: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    assert_eq!(acked.len(), SENDERS * PER_SENDER);

    // Everything acknowledged is stored once and answered once.
    wait_until("every acknowledged message answered", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["author"] == "assistant" && m["status"] == "sent")
            .count()
            >= acked.len()
    })
    .await;
    let all = app.all_messages(&tenant).await;
    let inbound: Vec<String> = all
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["external_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        inbound.len(),
        acked.len(),
        "each acknowledged message stored once"
    );
    assert_eq!(inbound.into_iter().collect::<HashSet<_>>(), acked);
    let replies: Vec<&serde_json::Value> =
        all.iter().filter(|m| m["author"] == "assistant").collect();
    assert_eq!(replies.len(), acked.len(), "one reply per message");
    // A send the platform accepted while the database could not record it is sent
    // again; each such re-send must be flagged on its message.
    let flagged = replies
        .iter()
        .filter(|m| m["possible_duplicate"] == true)
        .count();
    let sends = app.graph.delivered().len();
    eprintln!(
        "postgres restart: {} acknowledged, {} refused with 503 while away, {} sends received, {} flagged",
        acked.len(),
        refused.len(),
        sends,
        flagged
    );
    assert!(
        sends - acked.len() <= flagged,
        "an unflagged duplicate reply was sent"
    );
    drop(cluster);
}
