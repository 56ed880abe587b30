//! The privacy engine seen from outside: the hash-chained audit log, erasure of a
//! person everywhere (admin API and platform identity), tenant isolation.

use omnigate::config::DatabaseUrl;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    erasure_leaves_no_trace_of_the_person_in_any_table,
    erasure_by_platform_identity_finds_the_contact,
    audit_chain_detects_deleted_and_altered_entries,
    other_tenants_ids_are_answered_404,
);

const HOURS: &str = "Our opening hours are 9:00 to 17:00, Monday to Friday.";

async fn setup(backend: Backend) -> (TestApp, Tenant, String) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    (app, tenant, channel)
}

/// The contact id of the conversation with `phone` (its chat id on WhatsApp).
async fn contact_of(app: &TestApp, tenant: &Tenant, phone: &str) -> Option<String> {
    for c in app.conversations(tenant).await {
        let id = c["id"].as_str().unwrap_or_default();
        if conversation_phone(app, id).await.as_deref() == Some(phone) {
            return c["contact_id"].as_str().map(str::to_string);
        }
    }
    None
}

/// The chat id of a conversation, read from the database (the API does not show it).
async fn conversation_phone(app: &TestApp, conversation_id: &str) -> Option<String> {
    let db = Db::connect(&app.db.url).await;
    db.text(
        "SELECT external_chat_id FROM conversations WHERE id = $1",
        conversation_id,
    )
    .await
}

async fn audit(app: &TestApp, tenant: &Tenant) -> Value {
    let (status, body) = app.get_json(tenant, "/api/v1/audit").await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn erasure_leaves_no_trace_of_the_person_in_any_table(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let canary = "canary-7f3a-erase-me";
    // Person A: a text, then an unsupported message (kept as unhandled with its raw JSON).
    let a_text = wa_texts(
        "1001",
        &[("15550001", "wamid.A1", &format!("opening hours? {canary}"))],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &a_text).await, 200);
    let mut unsupported: Value =
        serde_json::from_str(&wa_texts("1001", &[("15550001", "wamid.A2", "x")])).expect("json");
    unsupported["entry"][0]["changes"][0]["value"]["messages"][0] = json!({
        "from": "15550001", "id": "wamid.A2", "timestamp": "1750000100", "type": "unsupported",
        "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
                    "error_data": {"details": format!("Message type is currently not supported {canary}")}}]
    });
    assert_eq!(
        app.deliver(&channel, "chan-secret", &unsupported.to_string())
            .await,
        200
    );
    // Person B stays.
    let b_text = wa_texts("1001", &[("15550002", "wamid.B1", "opening hours please")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &b_text).await, 200);
    wait_until("both answered", || async {
        app.graph.delivered().len() == 2
    })
    .await;
    wait_until("replies recorded", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["direction"] == "outbound" && m["status"] == "sent")
            .count()
            == 2
    })
    .await;
    let a = contact_of(&app, &tenant, "15550001")
        .await
        .expect("contact A");
    let needles = ["15550001", "User 15550001", canary];
    let db = Db::connect(&app.db.url).await;
    assert!(
        !db.scan(&needles).await.is_empty(),
        "the canaries are stored before erasure"
    );

    let res = app
        .api(&tenant)
        .delete(format!("{}/api/v1/contacts/{a}", app.url))
        .send()
        .await
        .expect("erase");
    assert_eq!(res.status(), 204);

    let found = db.scan(&needles).await;
    assert!(found.is_empty(), "left after erasure: {found:?}");
    if let Some(bytes) = db.file_bytes() {
        for needle in needles {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle} still in the SQLite file"
            );
        }
    }
    // B is untouched; A's conversation is gone.
    let conversations = app.conversations(&tenant).await;
    assert_eq!(conversations.len(), 1);
    assert!(contact_of(&app, &tenant, "15550002").await.is_some());
    // The tombstone names the contact by id only, with what was removed.
    let log = audit(&app, &tenant).await;
    assert_eq!(log["chain_ok"], true);
    let tomb = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "contact.erase")
        .expect("tombstone")
        .clone();
    assert_eq!(tomb["contact_id"], a.as_str());
    assert!(tomb["actor"]
        .as_str()
        .unwrap_or_default()
        .starts_with("api_key:og_"));
    assert_eq!(tomb["detail"]["erased"]["messages"], 3, "{tomb}");
    assert_eq!(tomb["detail"]["erased"]["identities"], 1);
    assert!(tomb["detail"]["erased"]["unhandled_events"].as_u64() >= Some(1));
    let text = log.to_string();
    for needle in needles {
        assert!(!text.contains(needle), "{needle} in the audit log");
    }
    // Erasing again: nothing is there any more.
    let res = app
        .api(&tenant)
        .delete(format!("{}/api/v1/contacts/{a}", app.url))
        .send()
        .await
        .expect("erase again");
    assert_eq!(res.status(), 404);
    // A late redelivery of A's erased message is recognised and not answered again.
    assert_eq!(app.deliver(&channel, "chan-secret", &a_text).await, 200);
    let b2 = wa_texts("1001", &[("15550002", "wamid.B2", "opening hours again")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &b2).await, 200);
    wait_until("B's second answer", || async {
        app.graph.delivered().len() >= 3
    })
    .await;
    wait_until("B's second reply recorded", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["status"] == "sent")
            .count()
            == 2
    })
    .await;
    assert_eq!(app.graph.delivered().len(), 3);
    assert_eq!(app.conversations(&tenant).await.len(), 1);
}

async fn erasure_by_platform_identity_finds_the_contact(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let body = wa_texts("1001", &[("15550003", "wamid.C1", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("conversation", || async {
        contact_of(&app, &tenant, "15550003").await.is_some()
    })
    .await;
    let contact = contact_of(&app, &tenant, "15550003")
        .await
        .expect("contact");
    let store = omnigate::store::open(&DatabaseUrl::new(app.db.url.clone()))
        .await
        .expect("store");
    use omnigate::privacy::erasure;
    let found = erasure::find_by_identity(
        store.as_ref(),
        channels::ChannelKind::WhatsApp,
        None,
        "15550003",
    )
    .await
    .expect("find");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tenant_id, tenant.id);
    assert_eq!(found[0].contact_id, contact);
    let none = erasure::find_by_identity(
        store.as_ref(),
        channels::ChannelKind::WhatsApp,
        Some("another-channel"),
        "15550003",
    )
    .await
    .expect("find");
    assert!(none.is_empty());
    wait_until("answered", || async { app.graph.delivered().len() == 1 }).await;
    let reports = erasure::erase_identity(
        store.as_ref(),
        channels::ChannelKind::WhatsApp,
        Some(&channel),
        "15550003",
        "platform:meta",
        "meta_data_deletion",
    )
    .await
    .expect("erase");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].contact_id, contact);
    assert!(app.conversations(&tenant).await.is_empty());
    let log = audit(&app, &tenant).await;
    assert_eq!(log["chain_ok"], true);
    let tomb = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "contact.erase")
        .expect("tombstone");
    assert_eq!(tomb["actor"], "platform:meta");
    assert_eq!(tomb["detail"]["reason"], "meta_data_deletion");
    // Nobody left to find: a second callback erases nothing.
    let again = erasure::erase_identity(
        store.as_ref(),
        channels::ChannelKind::WhatsApp,
        None,
        "15550003",
        "platform:meta",
        "meta_data_deletion",
    )
    .await
    .expect("erase again");
    assert!(again.is_empty());
}

async fn audit_chain_detects_deleted_and_altered_entries(backend: Backend) {
    let (app, tenant, _channel) = setup(backend).await;
    let store = omnigate::store::open(&DatabaseUrl::new(app.db.url.clone()))
        .await
        .expect("store");
    for i in 0..5 {
        omnigate::audit::record(
            store.as_ref(),
            &omnigate::audit::Audit::new(&tenant.id, "system", "test.entry")
                .target(&format!("t{i}")),
        )
        .await
        .expect("record");
    }
    let log = audit(&app, &tenant).await;
    assert_eq!(log["chain_ok"], true);
    // The API key's and the channel's creation (credential changes), and the five above.
    assert_eq!(log["entries"], 7);
    let db = Db::connect(&app.db.url).await;
    // The table refuses updates outright.
    assert!(db
        .execute("UPDATE audit_log SET action = 'forged' WHERE n = 2")
        .await
        .is_err());
    // Altered behind the trigger's back: detected at that entry.
    db.drop_append_only_trigger().await;
    db.execute("UPDATE audit_log SET target = 'forged' WHERE n = 2")
        .await
        .expect("alter");
    let log = audit(&app, &tenant).await;
    assert_eq!(log["chain_ok"], false);
    assert_eq!(log["first_bad"], 2);
    db.execute("DELETE FROM audit_log WHERE n = 2")
        .await
        .expect("delete");
    let log = audit(&app, &tenant).await;
    assert_eq!(log["chain_ok"], false);
    assert_eq!(log["first_bad"], 2);
    // Cutting off the newest entries is detected too (the head remembers them).
    let other = app.create_tenant("Other").await;
    for _ in 0..3 {
        omnigate::audit::record(
            store.as_ref(),
            &omnigate::audit::Audit::new(&other.id, "system", "test.entry"),
        )
        .await
        .expect("record");
    }
    assert_eq!(audit(&app, &other).await["chain_ok"], true);
    db.execute(&format!(
        "DELETE FROM audit_log WHERE tenant_id = '{}' AND n = 3",
        other.id
    ))
    .await
    .expect("delete");
    let log = audit(&app, &other).await;
    assert_eq!(log["chain_ok"], false);
    assert_eq!(log["first_bad"], 3);
}

async fn other_tenants_ids_are_answered_404(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let other = app.create_tenant("Other").await;
    let body = wa_texts("1001", &[("15550004", "wamid.D1", "hello")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("conversation", || async {
        !app.conversations(&tenant).await.is_empty()
    })
    .await;
    let contact = app.conversations(&tenant).await[0]["contact_id"]
        .as_str()
        .expect("contact")
        .to_string();
    let res = app
        .api(&other)
        .delete(format!("{}/api/v1/contacts/{contact}", app.url))
        .send()
        .await
        .expect("erase");
    assert_eq!(res.status(), 404);
    assert_eq!(app.conversations(&tenant).await.len(), 1);
    // The other tenant's log holds only its own creation.
    let log = audit(&app, &other).await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["credentials.create"]);
    let res = app
        .http
        .delete(format!("{}/api/v1/contacts/{contact}", app.url))
        .send()
        .await
        .expect("no key");
    assert_eq!(res.status(), 401);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Direct access to the test database, to look where the API cannot.
pub enum Db {
    Sqlite(sqlx::SqlitePool, std::path::PathBuf),
    Postgres(sqlx::PgPool),
}

impl Db {
    pub async fn connect(url: &str) -> Self {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
            Self::Sqlite(pool, path.into())
        } else {
            Self::Postgres(sqlx::PgPool::connect(url).await.expect("postgres"))
        }
    }

    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p, _) => sqlx::query(sql).execute(p).await?.rows_affected(),
            Self::Postgres(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
        })
    }

    pub async fn text(&self, sql: &str, arg: &str) -> Option<String> {
        match self {
            Self::Sqlite(p, _) => sqlx::query_scalar(sql).bind(arg).fetch_optional(p).await,
            Self::Postgres(p) => sqlx::query_scalar(sql).bind(arg).fetch_optional(p).await,
        }
        .expect("query")
    }

    pub async fn drop_append_only_trigger(&self) {
        match self {
            Self::Sqlite(..) => self.execute("DROP TRIGGER audit_log_append_only").await,
            Self::Postgres(_) => {
                self.execute("DROP TRIGGER audit_log_append_only ON audit_log")
                    .await
            }
        }
        .expect("drop trigger");
    }

    /// `table.column` of every stored value containing one of `needles`, over every
    /// column of every table.
    pub async fn scan(&self, needles: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        match self {
            Self::Sqlite(p, _) => {
                let tables: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                        .fetch_all(p)
                        .await
                        .expect("tables");
                for table in tables {
                    let columns: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                            .bind(&table)
                            .fetch_all(p)
                            .await
                            .expect("columns");
                    for column in columns {
                        for needle in needles {
                            let n: i64 = sqlx::query_scalar(&format!(
                                "SELECT COUNT(*) FROM \"{table}\" WHERE instr(CAST(\"{column}\" AS TEXT), $1) > 0"
                            ))
                            .bind(needle)
                            .fetch_one(p)
                            .await
                            .expect("scan");
                            if n > 0 {
                                found.push(format!("{table}.{column}: {needle}"));
                            }
                        }
                    }
                }
            }
            Self::Postgres(p) => {
                let columns: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = 'public'",
                )
                .fetch_all(p)
                .await
                .expect("columns");
                for (table, column, ty) in columns {
                    let value = if ty == "bytea" {
                        format!("encode(\"{column}\", 'escape')")
                    } else {
                        format!("\"{column}\"::text")
                    };
                    for needle in needles {
                        let n: i64 = sqlx::query_scalar(&format!(
                            "SELECT COUNT(*) FROM \"{table}\" WHERE strpos({value}, $1) > 0"
                        ))
                        .bind(needle)
                        .fetch_one(p)
                        .await
                        .expect("scan");
                        if n > 0 {
                            found.push(format!("{table}.{column}: {needle}"));
                        }
                    }
                }
            }
        }
        found
    }

    /// The SQLite database file and its WAL, as bytes.
    pub fn file_bytes(&self) -> Option<Vec<u8>> {
        let Self::Sqlite(_, path) = self else {
            return None;
        };
        let mut bytes = std::fs::read(path).expect("database file");
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        if let Ok(more) = std::fs::read(&wal) {
            bytes.extend(more);
        }
        Some(bytes)
    }
}
