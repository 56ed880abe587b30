//! Retention: settings within the platform's maximums, and `omnigate retention run`
//! deleting expired data so its text is gone from every table and the SQLite file,
//! while dedupe keys stay and a late redelivery is not answered again.

use std::process::Command;

use omnigate::config::{DatabaseUrl, Retention};
use omnigate::privacy::retention::{self, RetentionSettings, DAY_MS};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::privacy::Db;
use crate::process::binary;

on_both_backends!(
    retention_zero_then_run_removes_handled_messages_everywhere,
    retention_settings_stay_within_the_maximums,
    sweep_deletes_exactly_what_expired_at_the_boundary,
    a_sweep_stopped_part_way_audits_what_it_deleted,
);

const HOURS: &str = "Our opening hours are 9:00 to 17:00, Monday to Friday.";

/// Runs `omnigate retention run` on the test database; its JSON report.
fn retention_run(db_url: &str, dry_run: bool) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("omnigate.toml");
    std::fs::write(&config, format!("database_url = \"{db_url}\"\n")).expect("config");
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("OMNIGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["retention", "run", "--json", "--config"])
        .arg(&config);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

async fn retention_zero_then_run_removes_handled_messages_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    let res = app
        .api(&tenant)
        .put(format!("{}/api/v1/settings/retention", app.url))
        .json(&json!({"messages_days": 0, "raw_events_days": 0, "analytics_days": 0, "audit_days": 730}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let marker = "marker-retention-5d1c0e";
    let body = wa_texts(
        "1001",
        &[("15550201", "wamid.R1", &format!("opening hours? {marker}"))],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("reply sent", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "sent")
    })
    .await;
    let db = Db::connect(&app.db.url).await;
    assert!(!db.scan(&[marker]).await.is_empty());

    let dry = retention_run(&app.db.url, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["classes"]["messages"], 2, "{dry}");
    assert!(dry["classes"]["raw_events"].as_u64() >= Some(1), "{dry}");
    assert!(
        !db.scan(&[marker]).await.is_empty(),
        "a dry run deletes nothing"
    );

    let report = retention_run(&app.db.url, false);
    assert_eq!(report["classes"]["messages"], 2, "{report}");
    assert_eq!(report["classes"]["dedupe_keys"], 0, "kept at least 7 days");
    let found = db.scan(&[marker]).await;
    assert!(found.is_empty(), "{found:?}");
    if let Some(bytes) = db.file_bytes() {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the marker is still in the SQLite file"
        );
    }
    assert!(app.all_messages(&tenant).await.is_empty());
    // The sweep is in the audit log with its counts; a second run finds nothing.
    let (_, audit) = app.get_json(&tenant, "/api/v1/audit?limit=1000").await;
    assert_eq!(audit["chain_ok"], true);
    let sweep = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "retention.sweep")
        .expect("sweep entry")
        .clone();
    assert_eq!(sweep["detail"]["messages"], 2);
    assert_eq!(sweep["actor"], "system");
    let again = retention_run(&app.db.url, false);
    assert_eq!(again["classes"]["messages"], 0);

    // A late redelivery of the expired message is recognised: no second answer.
    // (The assistant found no sure answer to the marker and handed off: take it back.)
    let conversation = app.conversations(&tenant).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let res = app
        .api(&tenant)
        .post(format!(
            "{}/api/v1/conversations/{conversation}/release",
            app.url
        ))
        .send()
        .await
        .expect("release");
    assert_eq!(res.status(), 200);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    let next = wa_texts("1001", &[("15550201", "wamid.R2", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &next).await, 200);
    wait_until("the new message answered", || async {
        app.graph.delivered().len() >= 2
    })
    .await;
    wait_until("recorded", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["external_id"] == "wamid.R2")
    })
    .await;
    assert_eq!(app.graph.delivered().len(), 2);
    let inbound: Vec<Value> = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
}

async fn retention_settings_stay_within_the_maximums(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[retention]\nmax_messages_days = 120\n").await;
    let tenant = app.create_tenant("Acme").await;
    let other = app.create_tenant("Other").await;
    let (status, body) = app.get_json(&tenant, "/api/v1/settings/retention").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages_days"], 120);
    assert_eq!(body["raw_events_days"], 7);
    assert_eq!(body["analytics_days"], 180);
    assert_eq!(body["audit_days"], 730);
    let put = |tenant: &Tenant, body: Value| {
        app.api(tenant)
            .put(format!("{}/api/v1/settings/retention", app.url))
            .json(&body)
            .send()
    };
    for bad in [
        json!({"messages_days": 121, "raw_events_days": 7, "analytics_days": 180, "audit_days": 730}),
        json!({"messages_days": 30, "raw_events_days": 31, "analytics_days": 180, "audit_days": 730}),
        json!({"messages_days": 30, "raw_events_days": 7, "analytics_days": 181, "audit_days": 730}),
        json!({"messages_days": 30, "raw_events_days": 7, "analytics_days": 180, "audit_days": 731}),
        json!({"messages_days": -1, "raw_events_days": 7, "analytics_days": 180, "audit_days": 730}),
    ] {
        let res = put(&tenant, bad.clone()).await.expect("put");
        assert_eq!(res.status(), 422, "{bad}");
    }
    let res = put(&tenant, json!({"messages_days": 30}))
        .await
        .expect("put");
    assert_eq!(res.status(), 422, "every field is required");
    let res = put(
        &tenant,
        json!({"messages_days": 100, "raw_events_days": 2, "analytics_days": 30, "audit_days": 365}),
    )
    .await
    .expect("put");
    assert_eq!(res.status(), 200);
    let (_, body) = app.get_json(&tenant, "/api/v1/settings/retention").await;
    assert_eq!(body["messages_days"], 100);
    assert_eq!(body["raw_events_days"], 2);
    assert_eq!(body["audit_days"], 365);
    let (_, theirs) = app.get_json(&other, "/api/v1/settings/retention").await;
    assert_eq!(theirs["messages_days"], 120);
    let (_, audit) = app.get_json(&tenant, "/api/v1/audit").await;
    assert_eq!(audit["items"][0]["action"], "settings.retention");
}

async fn sweep_deletes_exactly_what_expired_at_the_boundary(backend: Backend) {
    let test_db = TestDb::create(&backend).await;
    let store = omnigate::store::open(&DatabaseUrl::new(test_db.url.clone()))
        .await
        .expect("store");
    let db = Db::connect(&test_db.url).await;
    let now: i64 = 1_800_000_000_000;
    let limits = Retention::default();
    let mut tenants = Vec::new();
    for name in ["short", "default"] {
        let id = store_tenant(store.as_ref(), name).await;
        for sql in [
            format!("INSERT INTO channels (id, tenant_id, platform, account_id, created_at) VALUES ('ch-{name}', '{id}', 'whatsapp', '{name}', 0)"),
            format!("INSERT INTO contacts (id, tenant_id, created_at) VALUES ('ct-{name}', '{id}', 0)"),
            format!("INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_chat_id, last_message_at, created_at) VALUES ('cv-{name}', '{id}', 'ch-{name}', 'ct-{name}', '1', 0, 0)"),
        ] {
            db.execute(&sql).await.expect("seed");
        }
        tenants.push(id);
    }
    let short = &tenants[0];
    let settings = RetentionSettings {
        messages_days: 3,
        raw_events_days: 1,
        analytics_days: 30,
        audit_days: 730,
    };
    store
        .put_retention_settings(
            short,
            &settings,
            &omnigate::audit::Audit::new(short, "system", "test"),
        )
        .await
        .expect("settings");
    let cutoff = now - 3 * DAY_MS;
    let raw_cutoff = now - DAY_MS;
    for (i, tenant) in tenants.iter().enumerate() {
        let name = if i == 0 { "short" } else { "default" };
        for (k, at) in [cutoff - 1, cutoff, cutoff + 1].into_iter().enumerate() {
            db.execute(&format!(
                "INSERT INTO messages (id, tenant_id, conversation_id, direction, author, kind, text, status, created_at) \
                 VALUES ('m-{name}-{k}', '{tenant}', 'cv-{name}', 'inbound', 'customer', 'text', 'x', 'received', {at})"
            ))
            .await
            .expect("message");
        }
        for (k, at) in [raw_cutoff - 1, raw_cutoff, raw_cutoff + 1]
            .into_iter()
            .enumerate()
        {
            db.execute(&format!(
                "INSERT INTO unhandled_events (id, tenant_id, platform, reason, raw, received_at) \
                 VALUES ('u-{name}-{k}', '{tenant}', 'whatsapp', 'r', '{{}}', {at})"
            ))
            .await
            .expect("unhandled");
        }
        // Handled inbox rows: 6 and 8 days old; dedupe keys live at least 7 days.
        for (k, days) in [6, 8].into_iter().enumerate() {
            db.execute(&format!(
                "INSERT INTO inbox_events (tenant_id, channel_id, platform, external_id, kind, conv_key, platform_ts, \
                 state, available_at, received_at, done_at) VALUES ('{tenant}', 'ch-{name}', 'whatsapp', 'w{k}', \
                 'message', 'k', 0, 'done', 0, 0, {})",
                now - days * DAY_MS
            ))
            .await
            .expect("inbox");
        }
    }
    // An expired reply still waiting to be sent is not deleted under the dispatcher.
    db.execute(&format!(
        "INSERT INTO messages (id, tenant_id, conversation_id, direction, author, kind, text, status, created_at) \
         VALUES ('m-pending', '{short}', 'cv-short', 'outbound', 'assistant', 'text', 'x', 'queued', 0)"
    ))
    .await
    .expect("pending");
    db.execute(&format!(
        "INSERT INTO outbox (tenant_id, channel_id, conversation_id, message_id, part, recipient, text, \
         next_attempt_at, created_at) VALUES ('{short}', 'ch-short', 'cv-short', 'm-pending', 0, '1', 'x', 0, 0)"
    ))
    .await
    .expect("outbox");

    let dry = retention::sweep(store.as_ref(), &limits, now, true)
        .await
        .expect("dry");
    assert_eq!(dry.classes["messages"], 2);
    assert_eq!(dry.classes["unhandled_events"], 2);
    assert_eq!(dry.classes["dedupe_keys"], 2);
    let counted = |class: &str| {
        let line = format!("omnigate_retention_deleted_total{{class=\"{class}\"}} ");
        omnigate::metrics::render()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_string))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = counted("messages");
    let report = retention::sweep(store.as_ref(), &limits, now, false)
        .await
        .expect("sweep");
    assert_eq!(
        report.classes, dry.classes,
        "the dry run counts what is deleted"
    );
    // Deletions are counted in the metrics (other tests of this binary may add theirs).
    assert!(
        counted("messages") >= before + 2.0,
        "{}",
        omnigate::metrics::render()
    );
    let left = |table: &'static str, column: &'static str| {
        let db = &db;
        async move {
            let mut ids = Vec::new();
            for prefix in ["short", "default"] {
                let sql = format!(
                    "SELECT {column} FROM {table} WHERE {column} LIKE '%{prefix}%' ORDER BY {column}"
                );
                let found: Vec<String> = match db {
                    Db::Sqlite(p, _) => sqlx::query_scalar(&sql).fetch_all(p).await,
                    Db::Postgres(p) => sqlx::query_scalar(&sql).fetch_all(p).await,
                }
                .expect("ids");
                ids.extend(found);
            }
            ids
        }
    };
    assert_eq!(
        left("messages", "id").await,
        vec!["m-short-2", "m-default-0", "m-default-1", "m-default-2"]
    );
    assert_eq!(
        left("unhandled_events", "id").await,
        vec!["u-short-2", "u-default-0", "u-default-1", "u-default-2"]
    );
    assert!(db
        .text("SELECT id FROM messages WHERE id = $1", "m-pending")
        .await
        .is_some());
    let keys: i64 = match &db {
        Db::Sqlite(p, _) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox_events")
                .fetch_one(p)
                .await
        }
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox_events")
                .fetch_one(p)
                .await
        }
    }
    .expect("count");
    assert_eq!(keys, 2, "8-day-old keys went, 6-day-old ones stay");
    let again = retention::sweep(store.as_ref(), &limits, now, false)
        .await
        .expect("again");
    assert_eq!(again.total(), 0, "a second sweep deletes nothing");
    assert!(
        omnigate::audit::verify(store.as_ref(), short)
            .await
            .expect("verify")
            .ok
    );

    // Audit entries past their period go; the chain still verifies from its anchor.
    let later = now + 800 * DAY_MS;
    omnigate::audit::record(
        store.as_ref(),
        &omnigate::audit::Audit {
            at: later,
            ..omnigate::audit::Audit::new(short, "system", "test.recent")
        },
    )
    .await
    .expect("record");
    let pruned = retention::sweep(store.as_ref(), &limits, later, false)
        .await
        .expect("prune");
    assert!(pruned.classes["audit"] >= 2, "{:?}", pruned.classes);
    let report = omnigate::audit::verify(store.as_ref(), short)
        .await
        .expect("verify");
    assert!(report.ok, "{report:?}");
    let (entries, _) = store.audit_chain(short).await.expect("chain");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["test.recent", "retention.sweep"]);
}

/// The scheduled sweep stops between two batches when the gateway shuts down; what it
/// deleted by then is in the tenant's audit log (marked interrupted) and in its
/// report, and the next sweep deletes the rest.
async fn a_sweep_stopped_part_way_audits_what_it_deleted(backend: Backend) {
    const SEEDED: i64 = 2_000;
    let test_db = TestDb::create(&backend).await;
    let store = omnigate::store::open(&DatabaseUrl::new(test_db.url.clone()))
        .await
        .expect("store");
    let db = Db::connect(&test_db.url).await;
    let tenant = store_tenant(store.as_ref(), "t").await;
    for sql in [
        format!("INSERT INTO channels (id, tenant_id, platform, account_id, created_at) VALUES ('ch', '{tenant}', 'whatsapp', '1', 0)"),
        format!("INSERT INTO contacts (id, tenant_id, created_at) VALUES ('ct', '{tenant}', 0)"),
        format!("INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_chat_id, last_message_at, created_at) VALUES ('cv', '{tenant}', 'ch', 'ct', '1', 0, 0)"),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SEEDED}) \
             INSERT INTO messages (id, tenant_id, conversation_id, direction, author, kind, text, status, created_at) \
             SELECT 'm-' || i, '{tenant}', 'cv', 'inbound', 'customer', 'text', 'x', 'received', 0 FROM n"
        ),
    ] {
        db.execute(&sql).await.expect("seed");
    }
    let left = || async {
        let sql = "SELECT COUNT(*) FROM messages";
        match &db {
            Db::Sqlite(p, _) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Db::Postgres(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        }
        .expect("count")
    };
    assert_eq!(left().await, SEEDED);
    // One row a batch, at the background pace: the sweep takes a while.
    let limits = Retention {
        batch_size: 1,
        ..Retention::default()
    };
    let now = 400 * DAY_MS;
    let stop = tokio_util::sync::CancellationToken::new();
    let sweeping = {
        let (store, limits, stop) = (store.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            retention::sweep_at(
                store.as_ref(),
                &limits,
                now,
                false,
                retention::Pace::Background,
                &stop,
            )
            .await
        })
    };
    wait_until("the sweep deleted a message", || async {
        left().await < SEEDED
    })
    .await;
    stop.cancel();
    let report = sweeping.await.expect("join").expect("sweep");
    let remaining = left().await;
    let deleted = (SEEDED - remaining) as u64;
    assert!(report.interrupted, "{report:?}");
    assert!(remaining > 0, "the sweep stopped before the end");
    assert_eq!(report.classes["messages"], deleted, "{report:?}");

    let sweeps = || async {
        let (entries, _) = store.audit_chain(&tenant).await.expect("chain");
        entries
            .into_iter()
            .filter(|e| e.action == "retention.sweep")
            .map(|e| {
                serde_json::from_str::<Value>(e.detail.as_deref().unwrap_or("{}")).expect("detail")
            })
            .collect::<Vec<_>>()
    };
    let first = sweeps().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["messages"], json!(deleted), "{first:?}");
    assert_eq!(first[0]["interrupted"], json!(true), "{first:?}");

    // The next sweep deletes the rest; every deletion is accounted for once.
    let rest = retention::sweep(store.as_ref(), &limits, now, false)
        .await
        .expect("rest");
    assert!(!rest.interrupted);
    assert_eq!(left().await, 0);
    let all = sweeps().await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["messages"], json!(remaining), "{all:?}");
    assert!(all[1].get("interrupted").is_none(), "{all:?}");
    assert!(
        omnigate::audit::verify(store.as_ref(), &tenant)
            .await
            .expect("verify")
            .ok
    );
}
