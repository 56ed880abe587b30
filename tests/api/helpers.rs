//! Test harness: the gateway on a random port against a fresh database (SQLite file
//! in a temp dir, or a created-and-dropped PostgreSQL database when
//! `OMNIGATE_TEST_POSTGRES_URL` is set), a fake WhatsApp Graph API on loopback, and
//! helpers that sign deliveries the way Meta does.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omnigate::config::Config;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const OPERATOR_SECRET: &str = "operator-app-secret";
pub const OPERATOR_VERIFY: &str = "operator-verify-token";
/// Tests poll the admin API far faster than any client should: no rate limit.
pub const TEST_LIMITS: &str = "[limits]\nadmin_per_second = 1000000.0\nadmin_burst = 1000000";

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The Postgres backend when the suite is asked to run on it. With
    /// `OMNIGATE_TEST_REQUIRE_POSTGRES=1` (CI) a missing URL fails the test instead
    /// of skipping the Postgres case.
    pub fn postgres() -> Option<Self> {
        let url = std::env::var("OMNIGATE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let required = std::env::var("OMNIGATE_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        assert!(
            url.is_some() || !required,
            "OMNIGATE_TEST_REQUIRE_POSTGRES=1 but OMNIGATE_TEST_POSTGRES_URL is unset"
        );
        url.map(Self::Postgres)
    }
}

/// Generates `<name>::sqlite` and `<name>::postgres` tests from one `async fn
/// name(backend: Backend)`. The Postgres one passes vacuously only when
/// `OMNIGATE_TEST_POSTGRES_URL` is unset.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::helpers::Backend::postgres() {
                    Some(backend) => super::$name(backend).await,
                    None => eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run"),
                }
            }
        }
    )*};
}

/// A tenant created straight in `store` (its API key is never used); its id.
pub async fn store_tenant(store: &dyn omnigate::store::Store, name: &str) -> String {
    let id = omnigate::store::new_id();
    store
        .create_tenant(&omnigate::store::NewTenant {
            id: id.clone(),
            name: name.into(),
            domain: format!("{name}.example.com"),
            key_id: omnigate::store::new_id(),
            key_hash: omnigate::store::new_id().into_bytes(),
            key_prefix: "og_xxxxx".into(),
            created_at: omnigate::store::now_ms(),
        })
        .await
        .expect("tenant");
    id
}

/// A database for one test; dropped (Postgres) or deleted (SQLite) afterwards.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    pub async fn create(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("omnigate.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_drop: None,
                }
            }
            Backend::Postgres(admin_url) => {
                use sqlx::Connection;
                let name = format!("og_test_{}", uuid_simple());
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .expect("connect to postgres");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let _ = conn.close().await;
                let mut url = reqwest::Url::parse(admin_url).expect("postgres url");
                url.set_path(&format!("/{name}"));
                Self {
                    url: url.to_string(),
                    _dir: None,
                    pg_drop: Some((admin_url.clone(), name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg_drop.take() else {
            return;
        };
        // Drop runs outside async context: use a private runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn uuid_simple() -> String {
    omnigate::store::new_id().replace('-', "")
}

/// One scripted answer of the fake Graph API.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// A request the fake Graph API received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub answered: u16,
}

#[derive(Default)]
struct GraphState {
    script: Vec<Scripted>,
    requests: Vec<GraphRequest>,
    sent: u64,
}

/// A stand-in for `graph.facebook.com` that speaks the Cloud API's send wire format.
#[derive(Clone)]
pub struct FakeGraph {
    pub url: String,
    state: Arc<Mutex<GraphState>>,
}

impl FakeGraph {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake graph");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(GraphState::default()));
        let router = Router::new()
            .route("/{version}/{phone}/messages", post(graph_send))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    /// Queues answers used (in order) before the default success.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().expect("lock").script.extend(answers);
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Requests answered 200 (messages the platform accepted).
    pub fn delivered(&self) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }
}

async fn graph_send(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let mut state = state.lock().expect("lock");
    let scripted = if state.script.is_empty() {
        None
    } else {
        Some(state.script.remove(0))
    };
    let (status, extra, reply) = match scripted {
        Some(s) => (s.status, s.headers, s.body),
        // Messenger / Instagram Send API.
        None if body.0.get("recipient").is_some() => {
            state.sent += 1;
            let to = body
                .0
                .pointer("/recipient/id")
                .cloned()
                .unwrap_or(Value::Null);
            let id = format!("m_out.{}", state.sent);
            (200, vec![], json!({"recipient_id": to, "message_id": id}))
        }
        None => {
            state.sent += 1;
            let to = body.0.get("to").cloned().unwrap_or(Value::Null);
            let id = format!("wamid.out.{}", state.sent);
            (
                200,
                vec![],
                json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": id}]}),
            )
        }
    };
    state.requests.push(GraphRequest {
        path: format!("/{version}/{phone}/messages"),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.0,
        answered: status,
    });
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(reply),
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

/// A running gateway.
pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub graph: FakeGraph,
    pub db: TestDb,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, "").await
    }

    /// Starts the gateway with extra TOML appended to the test configuration.
    pub async fn spawn_with(backend: Backend, extra_toml: &str) -> Self {
        let db = TestDb::create(&backend).await;
        let graph = FakeGraph::start().await;
        Self::start(db, graph, extra_toml).await
    }

    pub async fn start(db: TestDb, graph: FakeGraph, extra_toml: &str) -> Self {
        init_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let toml = format!(
            r#"
listen = "{addr}"
database_url = "{db_url}"
public_url = "http://{addr}"
admin_token = "{ADMIN_TOKEN}"
master_key = "{master_key}"
[platforms.meta]
graph_url = "{graph_url}"
api_version = "v21.0"
app_secret = "{OPERATOR_SECRET}"
verify_token = "{OPERATOR_VERIFY}"
[worker]
poll_ms = 100
lease_ms = 5000
{extra_toml}
{limits}
"#,
            db_url = db.url,
            master_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            graph_url = graph.url,
            limits = if extra_toml.contains("[limits]") {
                ""
            } else {
                TEST_LIMITS
            },
        );
        let config = Config::from_toml_str(&toml).expect("test config");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(omnigate::run(config, listener, shutdown.clone()));
        let app = Self {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            graph,
            db,
            shutdown,
            handle: Some(handle),
        };
        wait_until("gateway ready", || async {
            app.http
                .get(format!("{}/readyz", app.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        app
    }

    /// Stops the gateway gracefully and returns its database and fake API (to restart).
    pub async fn stop(mut self) -> (TestDb, FakeGraph) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("join").expect("gateway exits cleanly");
        }
        let db = std::mem::replace(
            &mut self.db,
            TestDb {
                url: String::new(),
                _dir: None,
                pg_drop: None,
            },
        );
        (db, self.graph.clone())
    }

    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let res = self
            .http
            .post(format!("{}/api/v1/tenants", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "domain": format!("{}.example.com", name.to_lowercase())}))
            .send()
            .await
            .expect("create tenant");
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.expect("json");
        Tenant {
            id: body["id"].as_str().expect("id").to_string(),
            key: body["api_key"].as_str().expect("key").to_string(),
        }
    }

    /// Connects a WhatsApp number with its own app secret; returns the channel id.
    pub async fn create_whatsapp(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
        app_secret: Option<&str>,
    ) -> String {
        let mut body = json!({
            "platform": "whatsapp",
            "phone_number_id": phone_number_id,
            "access_token": format!("EAAG-token-{phone_number_id}"),
            "verify_token": "channel-verify-token",
            "waba_id": "102290129340398",
        });
        if let Some(secret) = app_secret {
            body["app_secret"] = json!(secret);
        }
        let res = self
            .api(tenant)
            .post(format!("{}/api/v1/channels", self.url))
            .json(&body)
            .build()
            .expect("req");
        let res = self.http.execute(res).await.expect("create channel");
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
        let body: Value = res.json().await.expect("json");
        body["id"].as_str().expect("id").to_string()
    }

    /// A request builder authenticated as `tenant`.
    pub fn api(&self, tenant: &Tenant) -> AuthedClient<'_> {
        AuthedClient {
            http: &self.http,
            key: tenant.key.clone(),
        }
    }

    /// POSTs a Meta-signed delivery to a channel's own route.
    pub async fn deliver(&self, channel_id: &str, secret: &str, body: &str) -> u16 {
        self.post_signed(&format!("/webhooks/whatsapp/{channel_id}"), secret, body)
            .await
    }

    pub async fn post_signed(&self, path: &str, secret: &str, body: &str) -> u16 {
        let signature = webhooks::meta::sign(secret.as_bytes(), body.as_bytes());
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.to_string())
            .send()
            .await
            .expect("deliver")
            .status()
            .as_u16()
    }

    pub async fn get_json(&self, tenant: &Tenant, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&tenant.key)
            .send()
            .await
            .expect("get");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn conversations(&self, tenant: &Tenant) -> Vec<Value> {
        let (status, body) = self
            .get_json(tenant, "/api/v1/conversations?limit=200")
            .await;
        assert_eq!(status, 200);
        body["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn messages(&self, tenant: &Tenant, conversation_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(
                tenant,
                &format!("/api/v1/conversations/{conversation_id}/messages"),
            )
            .await;
        assert_eq!(status, 200);
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every message of every conversation of `tenant`.
    pub async fn all_messages(&self, tenant: &Tenant) -> Vec<Value> {
        let mut all = Vec::new();
        for c in self.conversations(tenant).await {
            all.extend(self.messages(tenant, c["id"].as_str().expect("id")).await);
        }
        all
    }

    pub async fn add_document(&self, tenant: &Tenant, title: &str, text: &str) {
        let res = self
            .http
            .post(format!("{}/api/v1/knowledge/documents", self.url))
            .bearer_auth(&tenant.key)
            .json(&json!({"title": title, "text": text}))
            .send()
            .await
            .expect("add document");
        assert_eq!(res.status(), 201);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct AuthedClient<'a> {
    http: &'a reqwest::Client,
    key: String,
}

impl AuthedClient<'_> {
    pub fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(&self.key)
    }
    pub fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.http.post(url).bearer_auth(&self.key)
    }
    pub fn delete(&self, url: String) -> reqwest::RequestBuilder {
        self.http.delete(url).bearer_auth(&self.key)
    }
    pub fn put(&self, url: String) -> reqwest::RequestBuilder {
        self.http.put(url).bearer_auth(&self.key)
    }
    pub fn patch(&self, url: String) -> reqwest::RequestBuilder {
        self.http.patch(url).bearer_auth(&self.key)
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub key: String,
}

/// Polls `check` until it holds; fails the test after a generous deadline. This is
/// waiting for asynchronous work, not a timing assertion.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,omnigate=debug")
            .with_test_writer()
            .try_init();
    }
}

/// A WhatsApp Cloud API delivery holding the given inbound text messages
/// `(from, wamid, text)` for one phone number id.
pub fn wa_texts(phone_number_id: &str, messages: &[(&str, &str, &str)]) -> String {
    let contacts: Vec<Value> = messages
        .iter()
        .map(|(from, _, _)| json!({"profile": {"name": format!("User {from}")}, "wa_id": from}))
        .collect();
    let msgs: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (from, id, text))| {
            json!({"from": from, "id": id, "timestamp": (1_750_000_000 + i).to_string(), "type": "text", "text": {"body": text}})
        })
        .collect();
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "contacts": contacts,
            "messages": msgs
        }}]}]
    })
    .to_string()
}

/// A delivery holding one status of an outbound message.
pub fn wa_status(
    phone_number_id: &str,
    wamid: &str,
    status: &str,
    recipient: &str,
    error_code: Option<i64>,
) -> String {
    let mut st = json!({"id": wamid, "status": status, "timestamp": "1750030073", "recipient_id": recipient});
    if let Some(code) = error_code {
        st["errors"] = json!([{"code": code, "title": "Failure", "message": "Failure", "error_data": {"details": "details"}}]);
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "statuses": [st]
        }}]}]
    })
    .to_string()
}
