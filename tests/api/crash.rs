//! SIGKILL under load, repeatedly: every message that got a 200 is stored and
//! answered; a reply goes out twice only when its send was in flight at the instant
//! of a kill, and such a re-send is flagged on the message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::process::{create_tenant, free_port, write_config, Gateway};

const SENDERS: usize = 60;
const PER_SENDER: usize = 5;
/// Acknowledgement counts at which the gateway is killed and started again.
const KILL_AT: [usize; 5] = [40, 90, 140, 190, 240];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_sqlite() {
    sigkill_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_postgres() {
    match Backend::postgres() {
        Some(backend) => sigkill_under_load(backend).await,
        None => eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run"),
    }
}

async fn sigkill_under_load(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&backend).await;
    let graph = FakeGraph::start().await;
    let port = free_port();
    let config = write_config(dir.path(), port, &db.url, &graph.url);
    let log = dir.path().join("gateway.log");
    let mut gateway = Gateway::start(&config, port, &log).await;
    let url = gateway.url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Tenant, knowledge and channel through the admin API.
    let key = create_tenant(&http, &url, "Crash", "crash.example.com").await;
    let res = http
        .post(format!("{url}/api/v1/knowledge/documents"))
        .bearer_auth(&key)
        .json(&json!({"title": "Hours", "text": "Our opening hours are 9 to 17 on weekdays."}))
        .send()
        .await
        .expect("doc");
    assert_eq!(res.status(), 201);
    let res = http
        .post(format!("{url}/api/v1/channels"))
        .bearer_auth(&key)
        .json(&json!({"platform": "whatsapp", "phone_number_id": "7001", "access_token": "EAAG-crash", "app_secret": "crash-secret"}))
        .send()
        .await
        .expect("channel");
    assert_eq!(res.status(), 201);
    let channel: serde_json::Value = res.json().await.expect("json");
    let webhook = channel["webhook_url"].as_str().expect("url").to_string();

    // Senders deliver like Meta: retry each message until it is acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (http, webhook, acked) = (http.clone(), webhook.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let from = format!("1555{s:06}");
            for m in 0..PER_SENDER {
                let wamid = format!("wamid.crash.{s}.{m}");
                let body = wa_texts("7001", &[(&from, &wamid, "what are your opening hours?")]);
                let signature = webhooks::meta::sign(b"crash-secret", body.as_bytes());
                loop {
                    let res = http
                        .post(&webhook)
                        .header("x-hub-signature-256", &signature)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if res.is_ok_and(|r| r.status() == 200) {
                        acked.lock().expect("lock").push(wamid.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    // Kill the gateway again and again mid-load, each time starting it on the same
    // database.
    for kill_at in KILL_AT {
        wait_until("enough acknowledgements", || async {
            acked.lock().expect("lock").len() >= kill_at
        })
        .await;
        gateway.kill();
        gateway = Gateway::start(&config, port, &log).await;
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let acked: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    assert_eq!(acked.len(), SENDERS * PER_SENDER);

    // Everything acknowledged is stored once and answered.
    let api = |path: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            http.get(format!("{url}{path}", url = gateway_url(port)))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let all_messages = || async {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = api(format!("/api/v1/conversations?limit=200&cursor={cursor}")).await;
            for c in page["items"].as_array().cloned().unwrap_or_default() {
                let id = c["id"].as_str().unwrap_or_default().to_string();
                let messages = api(format!("/api/v1/conversations/{id}/messages")).await;
                all.extend(messages["items"].as_array().cloned().unwrap_or_default());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        all
    };
    wait_until("every acknowledged message answered", || async {
        let all = all_messages().await;
        all.iter()
            .filter(|m| m["author"] == "assistant" && m["status"] == "sent")
            .count()
            == acked.len()
    })
    .await;
    let all = all_messages().await;
    let inbound: Vec<String> = all
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["external_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        inbound.len(),
        acked.len(),
        "each acknowledged message stored exactly once"
    );
    assert_eq!(inbound.iter().cloned().collect::<HashSet<_>>(), acked);
    let replies: Vec<&serde_json::Value> =
        all.iter().filter(|m| m["author"] == "assistant").collect();
    assert_eq!(replies.len(), acked.len(), "one reply per message");
    let flagged = replies
        .iter()
        .filter(|m| m["possible_duplicate"] == true)
        .count();

    // What the platform received: one send per reply, plus the flagged re-sends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = graph.delivered();
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for r in &delivered {
        *per_recipient
            .entry(r.body["to"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert_eq!(per_recipient.len(), SENDERS);
    assert!(per_recipient.values().all(|&n| n >= PER_SENDER));
    let duplicates = delivered.len() - acked.len();
    eprintln!(
        "crash test ({}): {} acknowledged, {} stored, {} replies, {} sends received, {} duplicate sends, {} flagged",
        match backend { Backend::Sqlite => "sqlite", Backend::Postgres(_) => "postgres" },
        acked.len(),
        inbound.len(),
        replies.len(),
        delivered.len(),
        duplicates,
        flagged
    );
    assert!(
        duplicates <= flagged,
        "an unflagged duplicate reply was sent"
    );
    assert!(
        flagged <= KILL_AT.len() * 16,
        "more flagged re-sends than sends that can be in flight"
    );
    drop(gateway);
}

fn gateway_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}
