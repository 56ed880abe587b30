//! Operations: several instances on one Postgres, graceful shutdown, health and
//! metrics, key rotation, backup, rate limits. Most cases drive the real binary.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::helpers::*;
use crate::process::{binary, create_tenant, free_port, Gateway};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A gateway configuration for one instance; `extra` is appended verbatim.
fn config_file(dir: &Path, name: &str, port: u16, db: &str, graph: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
database_url = "{db}"
admin_token = "{ADMIN_TOKEN}"
{extra}
[platforms.meta]
graph_url = "{graph}"
app_secret = "{OPERATOR_SECRET}"
verify_token = "v"
{TEST_LIMITS}
"#
    );
    std::fs::write(&path, toml).expect("write config");
    path
}

/// The `[worker]` and `[shutdown]` tables most cases use.
fn tuning(poll_ms: u64, grace_ms: u64, drain_ms: u64) -> String {
    format!(
        "\n[worker]\npoll_ms = {poll_ms}\nlease_ms = 2000\n[shutdown]\ngrace_ms = {grace_ms}\ndrain_ms = {drain_ms}\n"
    )
}

/// Tenant, knowledge document and WhatsApp channel through the admin API of `url`;
/// returns the tenant key and the channel's webhook URL path.
async fn provision(
    http: &reqwest::Client,
    url: &str,
    phone: &str,
    secret: &str,
) -> (String, String) {
    let key = create_tenant(http, url, "Ops", "ops.example.com").await;
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
        .json(&json!({"platform": "whatsapp", "phone_number_id": phone, "access_token": format!("EAAG-{phone}"), "app_secret": secret}))
        .send()
        .await
        .expect("channel");
    assert_eq!(res.status(), 201);
    let channel: Value = res.json().await.expect("json");
    let id = channel["id"].as_str().expect("id");
    (key, format!("/webhooks/whatsapp/{id}"))
}

async fn post_delivery(http: &reqwest::Client, url: &str, secret: &str, body: &str) -> Option<u16> {
    let signature = webhooks::meta::sign(secret.as_bytes(), body.as_bytes());
    http.post(url)
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Every message of every conversation, through the admin API of `url`.
async fn all_messages(http: &reqwest::Client, url: &str, key: &str) -> Vec<Value> {
    let get = |path: String| async move {
        http.get(format!("{url}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .expect("get")
            .json::<Value>()
            .await
            .expect("json")
    };
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(format!("/api/v1/conversations?limit=200&cursor={cursor}")).await;
        for c in page["items"].as_array().cloned().unwrap_or_default() {
            let id = c["id"].as_str().unwrap_or_default().to_string();
            let mut messages = get(format!("/api/v1/conversations/{id}/messages")).await["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for m in &mut messages {
                m["conversation_id"] = json!(id);
            }
            all.extend(messages);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    all
}

fn sent_replies(all: &[Value]) -> usize {
    all.iter()
        .filter(|m| m["author"] == "assistant" && m["status"] == "sent")
        .count()
}

/// Sends the fake platform accepted, per recipient.
fn sends_per_recipient(requests: &[GraphRequest]) -> HashMap<String, usize> {
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in requests.iter().filter(|r| r.answered == 200) {
        let to = r.body["to"].as_str().unwrap_or_default();
        *per.entry(to.to_string()).or_default() += 1;
    }
    per
}

/// In each conversation, inbound messages were handled in the order they were sent
/// (`...{m}` ids), each followed by its reply before the next was handled.
fn assert_conversation_order(all: &[Value]) {
    let mut by_conversation: HashMap<&str, Vec<&Value>> = HashMap::new();
    for m in all {
        by_conversation
            .entry(m["conversation_id"].as_str().unwrap_or_default())
            .or_default()
            .push(m);
    }
    for (conversation, messages) in by_conversation {
        let kinds: Vec<&str> = messages
            .iter()
            .map(|m| m["author"].as_str().unwrap_or_default())
            .collect();
        let alternating = kinds
            .chunks(2)
            .all(|pair| pair == ["customer", "assistant"]);
        assert!(alternating, "{conversation}: {kinds:?}");
        let order: Vec<u64> = messages
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .filter_map(|m| m["external_id"].as_str()?.rsplit('.').next()?.parse().ok())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{conversation} handled out of order");
    }
}

// -- scale-out -----------------------------------------------------------------------

const SENDERS: usize = 30;
const PER_SENDER: usize = 6;

/// Two instances on one Postgres take webhooks alternately (as behind a load
/// balancer) and work the same queue: while both run, every message is answered
/// exactly once and in conversation order; then one is killed mid-load and the other
/// takes over its leases: every acknowledged message is still answered, and a reply
/// goes out twice only if it was in flight at the kill (then it is flagged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgres_postgres() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&backend).await;
    let graph = FakeGraph::start().await;
    let tune = format!("master_key = \"{KEY_A}\"{}", tuning(100, 0, 20_000));
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = config_file(dir.path(), "a", port_a, &db.url, &graph.url, &tune);
    let config_b = config_file(dir.path(), "b", port_b, &db.url, &graph.url, &tune);
    let mut a = Gateway::start(&config_a, port_a, &dir.path().join("a.log")).await;
    let b = Gateway::start(&config_b, port_b, &dir.path().join("b.log")).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (key, path) = provision(&http, &a.url, "8001", "scale-secret").await;
    let urls = [format!("{}{path}", a.url), format!("{}{path}", b.url)];

    // Phase 1: both instances up. Each sender's messages alternate between them.
    let load = |phase: usize, urls: Vec<String>| {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            let (http, urls, acked) = (http.clone(), urls.clone(), acked.clone());
            senders.push(tokio::spawn(async move {
                let from = format!("1666{phase}{s:05}");
                for m in 0..PER_SENDER {
                    let wamid = format!("wamid.scale.{phase}.{s}.{m}");
                    let body = wa_texts("8001", &[(&from, &wamid, "what are your opening hours?")]);
                    // Like a load balancer with retries: the next instance on failure.
                    let mut target = s + m;
                    loop {
                        let url = &urls[target % urls.len()];
                        if post_delivery(&http, url, "scale-secret", &body).await == Some(200) {
                            acked.lock().expect("lock").push(wamid.clone());
                            break;
                        }
                        target += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        (acked, senders)
    };
    let (acked, senders) = load(1, urls.to_vec());
    for sender in senders {
        sender.await.expect("sender");
    }
    let phase1: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    assert_eq!(phase1.len(), SENDERS * PER_SENDER);
    wait_until("phase 1 answered", || async {
        sent_replies(&all_messages(&http, &b.url, &key).await) == phase1.len()
    })
    .await;
    let per = sends_per_recipient(&graph.requests());
    assert_eq!(per.len(), SENDERS, "every sender answered");
    assert!(
        per.values().all(|&n| n == PER_SENDER),
        "a message was answered twice (or not at all) while both instances ran: {per:?}"
    );
    let all = all_messages(&http, &b.url, &key).await;
    assert_conversation_order(&all);
    for instance in [&a.url, &b.url] {
        let done = handled_done(&http, instance).await;
        assert!(done > 0, "{instance} processed no event");
    }

    // Phase 2: A is killed mid-load; senders fall back to B.
    let (acked, senders) = load(2, urls.to_vec());
    wait_until("some phase 2 acknowledgements", || async {
        acked.lock().expect("lock").len() >= SENDERS * PER_SENDER / 3
    })
    .await;
    a.kill();
    for sender in senders {
        sender.await.expect("sender");
    }
    let phase2: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    assert_eq!(phase2.len(), SENDERS * PER_SENDER);
    let total = phase1.len() + phase2.len();
    wait_until("phase 2 answered by the survivor", || async {
        sent_replies(&all_messages(&http, &b.url, &key).await) == total
    })
    .await;
    let all = all_messages(&http, &b.url, &key).await;
    let inbound: Vec<&str> = all
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["external_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        inbound.len(),
        total,
        "each acknowledged message stored once"
    );
    let replies: Vec<&Value> = all.iter().filter(|m| m["author"] == "assistant").collect();
    assert_eq!(replies.len(), total, "one reply per message");
    assert_conversation_order(&all);
    // Flagged re-sends per recipient (each sender is one conversation).
    let mut flagged: HashMap<String, usize> = HashMap::new();
    for m in all.iter().filter(|m| m["possible_duplicate"] == true) {
        let conversation = m["conversation_id"].as_str().unwrap_or_default();
        // wamid.scale.{phase}.{sender}.{m} names the recipient 1666{phase}{sender:05}.
        let parts: Vec<usize> = all
            .iter()
            .find(|i| i["conversation_id"] == conversation && i["direction"] == "inbound")
            .and_then(|i| i["external_id"].as_str())
            .map(|id| {
                id.split('.')
                    .skip(2)
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let recipient = format!("1666{}{:05}", parts[0], parts[1]);
        *flagged.entry(recipient).or_default() += 1;
    }
    let per = sends_per_recipient(&graph.requests());
    assert_eq!(per.len(), 2 * SENDERS, "every sender answered");
    let mut resent = 0;
    for (recipient, n) in &per {
        let allowed = PER_SENDER + flagged.get(recipient).copied().unwrap_or(0);
        assert!(
            *n >= PER_SENDER && *n <= allowed,
            "{recipient} got {n} replies to {PER_SENDER} messages (flagged re-sends: {allowed} allowed)"
        );
        resent += n - PER_SENDER;
    }
    eprintln!(
        "scale-out: {total} messages over two instances, one killed; {resent} re-sent, {} flagged",
        flagged.values().sum::<usize>()
    );
    drop(b);
}

/// `omnigate_events_handled_total{result="done"}` of one instance.
async fn handled_done(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    metric(&text, "omnigate_events_handled_total{result=\"done\"}")
}

/// The value of one series in a Prometheus text page (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// An ingress-only instance stores and acknowledges; a worker-only instance, which
/// polls only every ten minutes, answers at once: woken by Postgres NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_worker_roles_wake_by_notify_postgres() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&backend).await;
    let graph = FakeGraph::start().await;
    let (port_i, port_w) = (free_port(), free_port());
    let ingress = config_file(
        dir.path(),
        "ingress",
        port_i,
        &db.url,
        &graph.url,
        &format!(
            "master_key = \"{KEY_A}\"\nrole = \"ingress\"{}",
            tuning(100, 0, 5_000)
        ),
    );
    let worker = config_file(
        dir.path(),
        "worker",
        port_w,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{}", tuning(600_000, 0, 5_000)),
    );
    let i = Gateway::start(&ingress, port_i, &dir.path().join("i.log")).await;
    let mut command = std::process::Command::new(binary());
    command
        .args(["serve", "--role", "worker", "--config"])
        .arg(&worker)
        .env_remove("OMNIGATE_TEST_POSTGRES_URL");
    let w = Gateway::launch(command, port_w, &dir.path().join("w.log"), "/readyz").await;
    let http = reqwest::Client::new();

    // The worker serves health and metrics only; the ingress instance the API.
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.expect("get").status().as_u16() }
    };
    assert_eq!(status(format!("{}/healthz", w.url)).await, 200);
    assert_eq!(status(format!("{}/metrics", w.url)).await, 200);
    assert_eq!(status(format!("{}/api/v1/channels", w.url)).await, 404);
    let (key, path) = provision(&http, &i.url, "8002", "role-secret").await;

    // The worker's LISTEN is in place before anything is announced.
    let db_name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    wait_until("worker listening", || {
        let (db_name, pool) = (db_name.clone(), pool.clone());
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(db_name)
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            n > 0
        }
    })
    .await;
    pool.close().await;

    let body = wa_texts("8002", &[("15557770001", "wamid.role.1", "opening hours?")]);
    let url = format!("{}{path}", i.url);
    assert_eq!(
        post_delivery(&http, &url, "role-secret", &body).await,
        Some(200)
    );
    wait_until("answered by the worker instance", || async {
        sent_replies(&all_messages(&http, &i.url, &key).await) == 1
    })
    .await;
    assert_eq!(sends_per_recipient(&graph.requests())["15557770001"], 1);
    // The ingress instance never works the queue: it starts no worker.
    let ingress_log = std::fs::read_to_string(dir.path().join("i.log")).expect("log");
    assert!(ingress_log.contains("\"role\":\"ingress\""));
    drop((i, w));
}

/// An instance's own announcements do not come back to wake its queues (it woke them
/// already; each echo cost an empty claim), while another instance's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_announcements_are_not_echoed_postgres() {
    use futures_util::FutureExt as _;
    use omnigate::store::Wake;
    let Some(backend) = Backend::postgres() else {
        eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run");
        return;
    };
    let db = TestDb::create(&backend).await;
    let url = omnigate::config::DatabaseUrl::new(db.url.clone());
    let (this, other) = (
        omnigate::store::open(&url).await.unwrap(),
        omnigate::store::open(&url).await.unwrap(),
    );
    let (inbox, outbox) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let listening = tokio::spawn({
        let (this, inbox, outbox, stop) =
            (this.clone(), inbox.clone(), outbox.clone(), stop.clone());
        async move { this.listen(inbox, outbox, stop).await }
    });
    // Listening starts by waking both queues (announcements may have been missed).
    for queue in [&inbox, &outbox] {
        tokio::time::timeout(Duration::from_secs(30), queue.notified())
            .await
            .expect("the first wake-up");
    }

    // Notifications arrive in commit order: once the other instance's announcement
    // woke one queue, this instance's announcement made just before it was seen.
    for (own, own_queue, theirs, their_queue) in [
        (Wake::Inbox, &inbox, Wake::Outbox, &outbox),
        (Wake::Outbox, &outbox, Wake::Inbox, &inbox),
    ] {
        this.announce(own).await.unwrap();
        other.announce(theirs).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), their_queue.notified())
            .await
            .expect("woken by the other instance");
        assert!(
            own_queue.notified().now_or_never().is_none(),
            "woken by its own {own:?} announcement"
        );
    }
    stop.cancel();
    listening.await.unwrap();
}

// -- graceful shutdown ---------------------------------------------------------------

/// A Graph API stand-in whose sends wait at a gate until it is opened.
#[derive(Clone)]
struct GatedGraph {
    url: String,
    state: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    closed: AtomicBool,
    open: Notify,
    received: Mutex<Vec<Value>>,
    answered: Mutex<Vec<Value>>,
}

impl GatedGraph {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(GateState::default());
        state.closed.store(true, Ordering::SeqCst);
        let router = Router::new()
            .route("/{version}/{phone}/messages", post(gated_send))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    fn open(&self) {
        self.state.closed.store(false, Ordering::SeqCst);
        self.state.open.notify_waiters();
    }

    fn received(&self) -> usize {
        self.state.received.lock().expect("lock").len()
    }

    fn answered(&self) -> Vec<Value> {
        self.state.answered.lock().expect("lock").clone()
    }
}

async fn gated_send(State(state): State<Arc<GateState>>, Json(body): Json<Value>) -> Json<Value> {
    state.received.lock().expect("lock").push(body.clone());
    loop {
        let opened = state.open.notified();
        if !state.closed.load(Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    let n = {
        let mut answered = state.answered.lock().expect("lock");
        answered.push(body.clone());
        answered.len()
    };
    Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}], "messages": [{"id": format!("wamid.gated.{n}")}]}),
    )
}

async fn sigterm(gateway: &Gateway) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status();
}

/// SIGTERM while replies are in flight: readiness goes false at once while webhooks
/// are still acknowledged during the grace period; in-flight sends finish and are
/// recorded; the process exits 0 with nothing leased. Restarted, the gateway answers
/// everything else, and no message is answered twice.
async fn sigterm_drains_in_flight_work(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&backend).await;
    let graph = GatedGraph::start().await;
    let port = free_port();
    let config = config_file(
        dir.path(),
        "g",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{}", tuning(100, 8_000, 60_000)),
    );
    let log = dir.path().join("g.log");
    let mut gateway = Gateway::start(&config, port, &log).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let (key, path) = provision(&http, &gateway.url, "8003", "drain-secret").await;
    let webhook = format!("{}{path}", gateway.url);
    for s in 0..6 {
        let body = wa_texts(
            "8003",
            &[(
                &format!("1555888000{s}"),
                &format!("wamid.drain.{s}"),
                "opening hours?",
            )],
        );
        assert_eq!(
            post_delivery(&http, &webhook, "drain-secret", &body).await,
            Some(200)
        );
    }
    wait_until("a reply in flight", || async { graph.received() > 0 }).await;

    sigterm(&gateway).await;
    wait_until("not ready while draining", || async {
        http.get(format!("{}/readyz", gateway.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let alive = http
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(alive.status(), 200);
    let late = wa_texts(
        "8003",
        &[("15558880099", "wamid.drain.late", "opening hours?")],
    );
    assert_eq!(
        post_delivery(&http, &webhook, "drain-secret", &late).await,
        Some(200),
        "a webhook during the grace period is acknowledged"
    );

    graph.open();
    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.child.wait().expect("wait");
        (status, gateway)
    })
    .await
    .expect("join");
    let (status, gateway) = status;
    assert!(status.success(), "exit status {status:?}");
    drop(gateway);

    // Nothing is left half-done: no leased event, no send between call and record.
    let leftovers = half_done(&db.url).await;
    assert_eq!(
        leftovers,
        (0, 0),
        "(inbox processing, outbox sending) after shutdown"
    );
    let sent_before = graph.answered().len();
    assert!(sent_before > 0);

    let gateway = Gateway::start(&config, port, &log).await;
    wait_until("everything answered after the restart", || async {
        sent_replies(&all_messages(&http, &gateway.url, &key).await) == 7
    })
    .await;
    let all = all_messages(&http, &gateway.url, &key).await;
    assert!(all.iter().all(|m| m["possible_duplicate"] != true));
    let mut per: HashMap<String, usize> = HashMap::new();
    for body in graph.answered() {
        *per.entry(body["to"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(per.len(), 7, "{per:?}");
    assert!(
        per.values().all(|&n| n == 1),
        "a message answered twice: {per:?}"
    );
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(log_text.contains("draining: not ready, still accepting"));
    drop(gateway);
}

/// Inbox events under lease and sends marked in flight, straight from the database.
async fn half_done(url: &str) -> (i64, i64) {
    use sqlx::Connection;
    const INBOX: &str =
        "SELECT COUNT(*) FROM inbox_events WHERE state = 'processing' OR lease_owner IS NOT NULL";
    const OUTBOX: &str =
        "SELECT COUNT(*) FROM outbox WHERE state = 'sending' OR lease_owner IS NOT NULL";
    macro_rules! counts {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await.expect("connect");
            let inbox: i64 = sqlx::query_scalar(INBOX)
                .fetch_one(&mut conn)
                .await
                .expect("count");
            let outbox: i64 = sqlx::query_scalar(OUTBOX)
                .fetch_one(&mut conn)
                .await
                .expect("count");
            (inbox, outbox)
        }};
    }
    if url.starts_with("sqlite") {
        counts!(sqlx::SqliteConnection)
    } else {
        counts!(sqlx::PgConnection)
    }
}

crate::on_both_backends!(sigterm_drains_in_flight_work);

// -- health, metrics, request ids, logs ----------------------------------------------

/// `/metrics` counts webhooks by outcome, sends by result and the latencies, and
/// shows the inbox gauges; every response carries a request id, which the JSON log
/// lines of that request repeat; logs hold neither secrets nor message text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_request_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&Backend::Sqlite).await;
    let graph = FakeGraph::start().await;
    let port = free_port();
    let config = config_file(
        dir.path(),
        "m",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{}", tuning(100, 0, 5_000)),
    );
    let log = dir.path().join("m.log");
    let gateway = Gateway::start(&config, port, &log).await;
    let http = reqwest::Client::new();
    let (key, path) = provision(&http, &gateway.url, "8004", "metrics-secret").await;
    let webhook = format!("{}{path}", gateway.url);
    let text = "canary-text-5501 when do you open?";
    let body = wa_texts("8004", &[("15550004444", "wamid.metrics.1", text)]);

    assert_eq!(
        post_delivery(&http, &webhook, "metrics-secret", &body).await,
        Some(200)
    );
    assert_eq!(
        post_delivery(&http, &webhook, "metrics-secret", &body).await,
        Some(200)
    );
    let bad = http
        .post(&webhook)
        .header("x-hub-signature-256", "sha256=00")
        .header("x-request-id", "req-badsig-1")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.headers()["x-request-id"], "req-badsig-1");
    let huge = http
        .post(&webhook)
        .header("x-hub-signature-256", "sha256=00")
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), 413);
    wait_until("answered", || async {
        sent_replies(&all_messages(&http, &gateway.url, &key).await) == 1
    })
    .await;

    let health = http
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let generated = health.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert!(!generated.is_empty());
    let ready = http
        .get(format!("{}/readyz", gateway.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    let page = http
        .get(format!("{}/metrics", gateway.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/plain; version=0.0.4"));
    let page = page.text().await.expect("text");
    let webhook_count = |outcome: &str| {
        metric(
            &page,
            &format!(
                "omnigate_webhook_requests_total{{platform=\"whatsapp\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(webhook_count("ok"), 1, "{page}");
    assert_eq!(webhook_count("duplicate"), 1);
    assert_eq!(webhook_count("bad_signature"), 1);
    assert_eq!(webhook_count("too_large"), 1);
    assert!(page.contains("# TYPE omnigate_webhook_requests_total counter"));
    assert_eq!(
        metric(
            &page,
            "omnigate_outbound_sends_total{platform=\"whatsapp\",result=\"sent\"}"
        ),
        1
    );
    assert_eq!(
        metric(&page, "omnigate_events_handled_total{result=\"done\"}"),
        1
    );
    assert_eq!(metric(&page, "omnigate_event_processing_seconds_count"), 1);
    assert_eq!(metric(&page, "omnigate_event_end_to_end_seconds_count"), 1);
    assert!(page.contains("omnigate_event_end_to_end_seconds_bucket{le=\"+Inf\"} 1"));
    assert!(page.contains("# TYPE omnigate_inbox_open_events gauge"));
    assert_eq!(metric(&page, "omnigate_inbox_open_events"), 0);
    assert_eq!(metric(&page, "omnigate_inbox_oldest_event_age_seconds"), 0);

    drop(gateway);
    let lines = std::fs::read_to_string(&log).expect("log");
    let rejected: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "rejected webhook")
        .collect();
    assert_eq!(rejected.len(), 1, "{lines}");
    assert_eq!(rejected[0]["span"]["request_id"], "req-badsig-1");
    for secret in [
        "canary-text-5501",
        "metrics-secret",
        "EAAG-8004",
        KEY_A,
        ADMIN_TOKEN,
        &key,
    ] {
        assert!(!lines.contains(secret), "the log holds {secret}");
    }
}

// -- limits ----------------------------------------------------------------------------

/// A tenant over its admin API budget gets 429 with `Retry-After`; other tenants are
/// not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rate_limit_is_per_tenant() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        "[limits]\nadmin_per_second = 0.01\nadmin_burst = 3",
    )
    .await;
    let (a, b) = (
        app.create_tenant("RateA").await,
        app.create_tenant("RateB").await,
    );
    let get = |tenant: &Tenant| {
        app.http
            .get(format!("{}/api/v1/channels", app.url))
            .bearer_auth(&tenant.key)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get(&a).await.expect("get").status(), 200);
    }
    let refused = get(&a).await.expect("get");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(get(&b).await.expect("get").status(), 200);
    // A wrong key is still 401, not 429.
    let anonymous = app
        .http
        .get(format!("{}/api/v1/channels", app.url))
        .bearer_auth("og_wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), 401);
}

/// Admin API bodies over `limits.admin_body_bytes` are refused with 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_body_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[limits]\nadmin_body_bytes = 1024").await;
    let tenant = app.create_tenant("Body").await;
    let res = app
        .http
        .post(format!("{}/api/v1/knowledge/documents", app.url))
        .bearer_auth(&tenant.key)
        .json(&json!({"title": "Big", "text": "x".repeat(2048)}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 413);
    let (_, body) = app
        .get_json(&tenant, "/api/v1/knowledge/search?q=big")
        .await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0));
}

// -- key rotation and backup -----------------------------------------------------------

fn run_cli(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("OMNIGATE_TEST_POSTGRES_URL")
        .output()
        .expect("run omnigate")
}

/// `rotate-key` re-seals credentials under the new key while instances that list
/// both keys keep working; afterwards the old key can be dropped and the channel
/// still sends with its own token.
async fn rotate_key_reseals_credentials(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&backend).await;
    let graph = FakeGraph::start().await;
    let port = free_port();
    let tune = tuning(100, 0, 5_000);
    let old = config_file(
        dir.path(),
        "old",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{tune}"),
    );
    let both = config_file(
        dir.path(),
        "both",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_B}\"\nprevious_master_keys = [\"{KEY_A}\"]{tune}"),
    );
    let new = config_file(
        dir.path(),
        "new",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_B}\"{tune}"),
    );
    let log = dir.path().join("r.log");
    let http = reqwest::Client::new();

    let mut gateway = Gateway::start(&old, port, &log).await;
    let (key, path) = provision(&http, &gateway.url, "8005", "rotate-secret").await;
    assert!(gateway.terminate().success());

    // Step 1: instances run with the new key and the old one; old ciphertexts open.
    let mut gateway = Gateway::start(&both, port, &log).await;
    let webhook = format!("{}{path}", gateway.url);
    let body = wa_texts(
        "8005",
        &[("15550005555", "wamid.rotate.1", "opening hours?")],
    );
    assert_eq!(
        post_delivery(&http, &webhook, "rotate-secret", &body).await,
        Some(200)
    );
    // Step 2: re-seal while it runs.
    let out = run_cli(&both, &["rotate-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("re-sealed 1, already current 0"),
        "{stdout}"
    );
    let again = run_cli(&both, &["rotate-key"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-sealed 0, already current 1"));
    wait_until("answered during the rotation", || async {
        sent_replies(&all_messages(&http, &gateway.url, &key).await) == 1
    })
    .await;
    assert!(gateway.terminate().success());

    // Step 3: the old key is gone from the configuration.
    let gateway = Gateway::start(&new, port, &log).await;
    let body = wa_texts(
        "8005",
        &[("15550005555", "wamid.rotate.2", "opening hours?")],
    );
    assert_eq!(
        post_delivery(&http, &webhook, "rotate-secret", &body).await,
        Some(200)
    );
    wait_until("answered under the new key alone", || async {
        sent_replies(&all_messages(&http, &gateway.url, &key).await) == 2
    })
    .await;
    let sends = graph.delivered();
    assert_eq!(sends.len(), 2);
    assert!(sends
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer EAAG-8005")));
    drop(gateway);

    // The old key alone no longer opens anything: rotate-key says so and fails.
    let out = run_cli(&old, &["rotate-key"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configured key opens"));
}

crate::on_both_backends!(rotate_key_reseals_credentials);

/// `backup FILE` copies the live SQLite database, verifies the copy and reports its
/// counts; a gateway started on the copy has the same conversations. On Postgres it
/// refuses and points to pg_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_live_sqlite_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create(&Backend::Sqlite).await;
    let graph = FakeGraph::start().await;
    let port = free_port();
    let tune = tuning(100, 0, 5_000);
    let config = config_file(
        dir.path(),
        "live",
        port,
        &db.url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{tune}"),
    );
    let log = dir.path().join("b.log");
    let http = reqwest::Client::new();
    let mut gateway = Gateway::start(&config, port, &log).await;
    let (key, path) = provision(&http, &gateway.url, "8006", "backup-secret").await;
    let body = wa_texts(
        "8006",
        &[("15550006666", "wamid.backup.1", "opening hours?")],
    );
    let webhook = format!("{}{path}", gateway.url);
    assert_eq!(
        post_delivery(&http, &webhook, "backup-secret", &body).await,
        Some(200)
    );
    wait_until("answered", || async {
        sent_replies(&all_messages(&http, &gateway.url, &key).await) == 1
    })
    .await;

    let file = dir.path().join("copy.db");
    let out = run_cli(&config, &["backup", file.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["integrity"], "ok");
    assert_eq!(report["tenants"], 1);
    assert_eq!(report["channels"], 1);
    assert_eq!(report["messages"], 2);
    let verified = run_cli(
        &config,
        &["backup", "--verify", file.to_str().expect("utf-8")],
    );
    assert!(verified.status.success());
    let again = run_cli(&config, &["backup", file.to_str().expect("utf-8")]);
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    assert!(gateway.terminate().success());

    // Restore: a gateway on the copy.
    let restored_url = format!("sqlite://{}", file.display());
    let restored = config_file(
        dir.path(),
        "restored",
        port,
        &restored_url,
        &graph.url,
        &format!("master_key = \"{KEY_A}\"{tune}"),
    );
    let gateway = Gateway::start(&restored, port, &log).await;
    let all = all_messages(&http, &gateway.url, &key).await;
    assert_eq!(all.len(), 2);
    assert_eq!(sent_replies(&all), 1);
    drop(gateway);

    if let Some(backend) = Backend::postgres() {
        let pg = TestDb::create(&backend).await;
        let pg_config = config_file(
            dir.path(),
            "pg",
            port,
            &pg.url,
            &graph.url,
            &format!("master_key = \"{KEY_A}\"{tune}"),
        );
        let out = run_cli(
            &pg_config,
            &["backup", dir.path().join("pg.db").to_str().expect("utf-8")],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
    }
}

// -- OpenAPI ---------------------------------------------------------------------------

/// Every string literal naming an `/api/v1/` path in a `.route(` call under `src/`.
fn api_paths_in_source() -> HashSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut paths = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read");
        for (i, _) in text.match_indices(".route(") {
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            if text[line_start..i].contains("//") {
                continue;
            }
            let rest = text[i..].trim_start_matches(".route(").trim_start();
            if let Some(literal) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                if literal.starts_with("/api/v1/") {
                    paths.insert(literal.to_string());
                }
            }
        }
    }
    paths
}

/// `GET /api/v1/openapi.json` is a valid OpenAPI 3 document; every method the router
/// answers on every admin API path of the source is in it, and each operation's
/// declared security matches what the router does without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_admin_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.expect("json");
    let parsed: openapiv3::OpenAPI =
        serde_json::from_value(doc.clone()).expect("a valid OpenAPI 3.0 document");
    assert!(parsed.openapi.starts_with("3.0"));

    let mut operation_ids = HashSet::new();
    let mut documented = HashSet::new();
    for (path, item) in parsed.paths.iter() {
        let openapiv3::ReferenceOr::Item(item) = item else {
            panic!("{path} is a reference")
        };
        let template: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.iter() {
            documented.insert((method.to_uppercase(), path.clone()));
            let id = op.operation_id.clone().expect("operationId");
            assert!(operation_ids.insert(id.clone()), "operationId {id} twice");
            assert!(
                !op.responses.responses.is_empty(),
                "{method} {path} has no responses"
            );
            let declared: HashSet<String> = op
                .parameters
                .iter()
                .filter_map(|p| match p {
                    openapiv3::ReferenceOr::Item(openapiv3::Parameter::Path {
                        parameter_data,
                        ..
                    }) => Some(parameter_data.name.clone()),
                    _ => None,
                })
                .collect();
            for name in &template {
                assert!(
                    declared.contains(*name),
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
        }
    }
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }

    // The router: every method it answers (anything but 405) on every admin path.
    let source_paths = api_paths_in_source();
    assert!(source_paths.len() >= 10, "{source_paths:?}");
    for path in &source_paths {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let res = app
                .http
                .request(
                    method.parse().expect("method"),
                    format!("{}{concrete}", app.url),
                )
                .send()
                .await
                .expect("request");
            if res.status() == 405 {
                continue;
            }
            assert_ne!(res.status(), 404, "{method} {path} not routed");
            assert!(
                documented.contains(&(method.to_string(), path.clone())),
                "{method} {path} is routed but not in the OpenAPI document"
            );
            // Without credentials: 401 exactly where the document asks for a key.
            let op = &doc["paths"][path][method.to_ascii_lowercase()];
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(res.status() == 401, secured, "{method} {path}: security");
        }
    }
    for (method, path) in &documented {
        assert!(
            source_paths.contains(path),
            "{method} {path} documented but not in the source"
        );
    }
    let channels = &doc["paths"]["/api/v1/channels"]["post"];
    assert_eq!(
        channels["requestBody"]["content"]["application/json"]["schema"]["required"],
        json!(["platform"])
    );
    assert!(channels["responses"]["201"].is_object());
    assert_eq!(
        doc["paths"]["/api/v1/tenants"]["post"]["security"],
        json!([{"operatorToken": []}])
    );
}
