//! Messenger and Instagram end to end: the shared Meta route, echoes, unsend,
//! receipts, the 24-hour window and `HUMAN_AGENT`, token health.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    shared_route_batch_lands_in_the_right_tenants,
    messenger_and_instagram_replies_follow_the_send_api,
    echoes_are_recorded_as_agent_and_never_answered,
    unsend_removes_the_text_from_the_database,
    assistant_is_silent_after_24_hours_and_agents_reply_with_human_agent,
    receipts_move_replies_forward,
    rejected_page_token_pauses_the_channel_and_agents_see_why,
    permanent_send_error_keeps_code_and_subcode,
    standby_and_other_events_are_stored_not_answered,
    channel_route_handshake_and_foreign_entries,
);

const PAGE: &str = "7001";
const IG: &str = "17841400000000001";
const PSID: &str = "24001";
const HOURS: &str =
    "Our opening hours are 9:00 to 17:00, Monday to Friday. We are closed on public holidays.";

pub fn now_ms() -> i64 {
    omnigate::store::now_ms()
}

/// Connects a Messenger Page or Instagram account; `secret` gives it its own app
/// (channel route), `None` puts it on the operator app's shared route.
pub async fn connect(
    app: &TestApp,
    tenant: &Tenant,
    platform: &str,
    account: &str,
    secret: Option<&str>,
) -> String {
    let mut body = match platform {
        "messenger" => json!({"platform": "messenger", "page_id": account,
            "page_access_token": format!("EAAG-page-{account}")}),
        _ => json!({"platform": "instagram", "account_id": account,
            "access_token": format!("IGAA-token-{account}")}),
    };
    body["verify_token"] = json!("channel-verify-token");
    if let Some(secret) = secret {
        body["app_secret"] = json!(secret);
    }
    let res = app
        .api(tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&body)
        .send()
        .await
        .expect("create channel");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let body: Value = res.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

/// A messaging webhook body: `object` with one entry per (account, items).
pub fn delivery(object: &str, entries: &[(&str, Vec<Value>)]) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(id, items)| json!({"id": id, "time": now_ms(), "messaging": items}))
        .collect();
    json!({"object": object, "entry": entries}).to_string()
}

/// A customer's text message to `account`.
pub fn text(account: &str, psid: &str, mid: &str, body: &str, at_ms: i64) -> Value {
    json!({"sender": {"id": psid}, "recipient": {"id": account}, "timestamp": at_ms,
        "message": {"mid": mid, "text": body}})
}

/// A message the account itself sent (`is_echo`).
fn echo(account: &str, psid: &str, mid: &str, body: &str, metadata: Option<&str>) -> Value {
    let mut message =
        json!({"mid": mid, "text": body, "is_echo": true, "app_id": 1517776481860111u64});
    if let Some(m) = metadata {
        message["metadata"] = json!(m);
    }
    json!({"sender": {"id": account}, "recipient": {"id": psid}, "timestamp": now_ms(), "message": message})
}

async fn setup(backend: Backend) -> (TestApp, Tenant, String) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let channel = connect(&app, &tenant, "messenger", PAGE, Some("page-secret")).await;
    (app, tenant, channel)
}

async fn post_page(app: &TestApp, channel: &str, items: Vec<Value>) {
    let body = delivery("page", &[(PAGE, items)]);
    let path = format!("/webhooks/messenger/{channel}");
    assert_eq!(app.post_signed(&path, "page-secret", &body).await, 200);
}

/// The tenant's one conversation and its messages (empty before it exists).
async fn only_conversation(app: &TestApp, tenant: &Tenant) -> (Value, Vec<Value>) {
    let conversations = app.conversations(tenant).await;
    assert!(conversations.len() <= 1, "{conversations:?}");
    let Some(first) = conversations.first() else {
        return (Value::Null, Vec::new());
    };
    let messages = app
        .messages(tenant, first["id"].as_str().expect("id"))
        .await;
    (first.clone(), messages)
}

/// How many rows of `sql` (a `SELECT COUNT(*)`) the test database holds.
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    use sqlx::Connection;
    if app.db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url)
            .await
            .expect("sqlite");
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.db.url)
            .await
            .expect("postgres");
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

/// Whether `needle` is anywhere in the database: in the SQLite file's bytes, or in
/// any row of any table on PostgreSQL (byte columns searched by their hex form).
pub async fn database_holds(app: &TestApp, needle: &str) -> bool {
    use sqlx::Connection;
    if let Some(path) = app.db.url.strip_prefix("sqlite://") {
        // Copy every committed page into the file and empty the WAL (the gateway does
        // the copying itself every second), then read both files' bytes.
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url)
            .await
            .expect("sqlite");
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await
            .expect("checkpoint");
        let _ = conn.close().await;
        let holds = |file: &str| {
            std::fs::read(file)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        };
        // A checkpoint that could not finish proves nothing: report "still there".
        return busy != 0 || holds(path) || holds(&format!("{path}-wal"));
    }
    let mut conn = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("postgres");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    for table in tables {
        let found: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} t WHERE t::text LIKE $1 OR t::text LIKE $2"
        ))
        .bind(format!("%{needle}%"))
        .bind(format!("%{hex}%"))
        .fetch_one(&mut conn)
        .await
        .expect("search");
        if found > 0 {
            return true;
        }
    }
    false
}

async fn shared_route_batch_lands_in_the_right_tenants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    let c = app.create_tenant("Gamma").await;
    for t in [&a, &b, &c] {
        app.add_document(t, "Hours", HOURS).await;
    }
    connect(&app, &a, "messenger", "7101", None).await;
    connect(&app, &b, "messenger", "7102", None).await;
    connect(&app, &c, "instagram", IG, None).await;
    app.create_whatsapp(&c, "7103", None).await;
    let now = now_ms();
    // One POST, three entries (one for an account nobody connected), several events each.
    let page = delivery(
        "page",
        &[
            (
                "7101",
                vec![
                    text("7101", "u1", "m.A1", "opening hours?", now),
                    text("7101", "u1", "m.A2", "and on holidays?", now + 1),
                ],
            ),
            (
                "7102",
                vec![text("7102", "u2", "m.B1", "opening hours?", now)],
            ),
            ("7999", vec![text("7999", "u9", "m.X1", "anyone?", now)]),
        ],
    );
    let instagram = delivery(
        "instagram",
        &[(IG, vec![text(IG, "ig1", "m.C1", "opening hours?", now)])],
    );
    let whatsapp = wa_texts("7103", &[("15550001", "wamid.C2", "opening hours?")]);
    for body in [&page, &instagram, &whatsapp] {
        assert_eq!(
            app.post_signed("/webhooks/meta", OPERATOR_SECRET, body)
                .await,
            200
        );
    }
    wait_until("every tenant's messages stored", || async {
        app.all_messages(&a).await.len() >= 2
            && !app.all_messages(&b).await.is_empty()
            && app.all_messages(&c).await.len() >= 2
    })
    .await;
    let ids = |messages: Vec<Value>| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .map(|m| m["external_id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut a_ids = ids(app.all_messages(&a).await);
    a_ids.sort();
    assert_eq!(a_ids, ["m.A1", "m.A2"]);
    assert_eq!(ids(app.all_messages(&b).await), ["m.B1"]);
    let mut c_ids = ids(app.all_messages(&c).await);
    c_ids.sort();
    assert_eq!(c_ids, ["m.C1", "wamid.C2"]);
    let platforms: Vec<Value> = app
        .conversations(&c)
        .await
        .iter()
        .map(|c| c["platform"].clone())
        .collect();
    assert!(platforms.contains(&json!("instagram")) && platforms.contains(&json!("whatsapp")));
    // Replies go out through each channel's own account and token.
    let to = |path: String| {
        let requests = app.graph.delivered();
        requests.iter().filter(|r| r.path == path).count()
    };
    wait_until("replies sent", || async {
        to("/v21.0/7102/messages".into()) == 1
            && to(format!("/v21.0/{IG}/messages")) == 1
            && to("/v21.0/7103/messages".into()) == 1
            && to("/v21.0/7101/messages".into()) >= 1
    })
    .await;
    let requests = app.graph.requests();
    assert!(requests
        .iter()
        .filter(|r| r.path == "/v21.0/7102/messages")
        .all(
            |r| r.authorization.as_deref() == Some("Bearer EAAG-page-7102")
                && r.body["recipient"]["id"] == "u2"
        ));
    // The unknown account's entry is kept, at operator level, and nobody answers it.
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM unhandled_events WHERE reason = 'unknown_account' AND tenant_id IS NULL").await,
        1
    );
    assert!(requests.iter().all(|r| r.body["recipient"]["id"] != "u9"));
    for t in [&a, &b, &c] {
        let (_, unhandled) = app.get_json(t, "/api/v1/events/unhandled").await;
        assert_eq!(unhandled["items"], json!([]));
    }
}

async fn messenger_and_instagram_replies_follow_the_send_api(backend: Backend) {
    let (app, tenant, messenger) = setup(backend).await;
    let instagram = connect(&app, &tenant, "instagram", IG, Some("ig-secret")).await;
    post_page(
        &app,
        &messenger,
        vec![text(PAGE, PSID, "m.IN1", "When are you open?", now_ms())],
    )
    .await;
    wait_until("reply sent", || async { app.graph.delivered().len() == 1 }).await;
    let sent = &app.graph.requests()[0];
    assert_eq!(sent.path, format!("/v21.0/{PAGE}/messages"));
    assert_eq!(sent.authorization.as_deref(), Some("Bearer EAAG-page-7001"));
    assert_eq!(sent.body["recipient"], json!({"id": PSID}));
    assert_eq!(sent.body["messaging_type"], "RESPONSE");
    assert!(sent.body.get("tag").is_none());
    let reply = sent.body["message"]["text"].as_str().expect("text");
    assert!(
        reply.contains(HOURS) && reply.contains("automated assistant (AI)"),
        "{reply}"
    );
    wait_until("reply recorded with its mid", || async {
        let (_, m) = only_conversation(&app, &tenant).await;
        m.len() == 2 && m[1]["external_id"] == "m_out.1" && m[1]["status"] == "sent"
    })
    .await;

    // Instagram: same shape, the account's path and token, its own signature.
    let body = delivery(
        "instagram",
        &[(
            IG,
            vec![text(IG, "ig7", "m.IG1", "opening hours?", now_ms())],
        )],
    );
    let path = format!("/webhooks/instagram/{instagram}");
    assert_eq!(app.post_signed(&path, "wrong-secret", &body).await, 401);
    assert_eq!(app.post_signed(&path, "ig-secret", &body).await, 200);
    wait_until("instagram reply", || async {
        app.graph.delivered().len() == 2
    })
    .await;
    let sent = &app.graph.requests()[1];
    assert_eq!(sent.path, format!("/v21.0/{IG}/messages"));
    assert_eq!(
        sent.authorization.as_deref(),
        Some(&*format!("Bearer IGAA-token-{IG}"))
    );
    assert_eq!(sent.body["recipient"], json!({"id": "ig7"}));

    // A long agent reply is split at each platform's limit.
    let conversations = app.conversations(&tenant).await;
    let long = "word ".repeat(900); // 4500 characters
    for (platform, limit, parts) in [("messenger", 2000, 3), ("instagram", 1000, 5)] {
        let conversation = conversations
            .iter()
            .find(|c| c["platform"] == platform)
            .expect("conversation");
        let before = app.graph.delivered().len();
        let res = app
            .api(&tenant)
            .post(format!(
                "{}/api/v1/conversations/{}/messages",
                app.url,
                conversation["id"].as_str().expect("id")
            ))
            .json(&json!({"text": long}))
            .send()
            .await
            .expect("reply");
        assert_eq!(res.status(), 202);
        wait_until("parts sent", || async {
            app.graph.delivered().len() == before + parts
        })
        .await;
        let sent = app.graph.delivered();
        for part in &sent[before..] {
            let text = part.body["message"]["text"].as_str().expect("text");
            assert!(
                text.chars().count() <= limit,
                "{platform}: {}",
                text.chars().count()
            );
            assert_eq!(part.body["messaging_type"], "RESPONSE");
        }
    }
}

async fn echoes_are_recorded_as_agent_and_never_answered(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    post_page(
        &app,
        &channel,
        vec![text(PAGE, PSID, "m.E1", "opening hours?", now_ms())],
    )
    .await;
    wait_until("reply recorded", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(1)
            .is_some_and(|m| m["external_id"] == "m_out.1")
    })
    .await;
    // Our own sends come back as echoes: known by message id, or by our metadata.
    post_page(
        &app,
        &channel,
        vec![echo(PAGE, PSID, "m_out.1", "our reply", None)],
    )
    .await;
    post_page(
        &app,
        &channel,
        vec![echo(PAGE, PSID, "m_out.9", "our reply", Some("omnigate"))],
    )
    .await;
    // A person answers from the Page inbox.
    post_page(
        &app,
        &channel,
        vec![echo(PAGE, PSID, "m.HUMAN1", "Hi, Sam from Acme here", None)],
    )
    .await;
    wait_until("agent message recorded", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .iter()
            .any(|m| m["external_id"] == "m.HUMAN1")
    })
    .await;
    let (conversation, messages) = only_conversation(&app, &tenant).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    let human = &messages[2];
    assert_eq!(human["direction"], "outbound");
    assert_eq!(human["author"], "agent");
    assert_eq!(human["text"], "Hi, Sam from Acme here");
    assert_eq!(conversation["status"], "human");
    // The customer writes again: stored, but the assistant leaves it to the person.
    post_page(
        &app,
        &channel,
        vec![text(PAGE, PSID, "m.E2", "opening hours again?", now_ms())],
    )
    .await;
    wait_until("stored", || async {
        only_conversation(&app, &tenant).await.1.len() == 4
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(app.graph.requests().len(), 1, "echoes are never answered");
}

async fn unsend_removes_the_text_from_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = connect(&app, &tenant, "instagram", IG, Some("ig-secret")).await;
    let canary = "canary-unsent-8f2c41";
    let path = format!("/webhooks/instagram/{channel}");
    let body = delivery(
        "instagram",
        &[(
            IG,
            vec![
                text(IG, "ig1", "m.U1", &format!("my card is {canary}"), now_ms()),
                text(IG, "ig1", "m.U2", "second message stays", now_ms() + 1),
            ],
        )],
    );
    assert_eq!(app.post_signed(&path, "ig-secret", &body).await, 200);
    wait_until("stored", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["external_id"] == "m.U2")
    })
    .await;
    assert!(app
        .all_messages(&tenant)
        .await
        .iter()
        .any(|m| m["text"].as_str().is_some_and(|t| t.contains(canary))));
    assert!(database_holds(&app, canary).await);
    let unsend = json!({"sender": {"id": "ig1"}, "recipient": {"id": IG}, "timestamp": now_ms() + 2,
        "message": {"mid": "m.U1", "is_deleted": true}});
    let body = delivery("instagram", &[(IG, vec![unsend])]);
    assert_eq!(app.post_signed(&path, "ig-secret", &body).await, 200);
    wait_until("message removed", || async {
        !app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["external_id"] == "m.U1")
    })
    .await;
    assert!(app
        .all_messages(&tenant)
        .await
        .iter()
        .any(|m| m["external_id"] == "m.U2"));
    // SQLite (secure_delete on): the file's bytes, once the WAL is checkpointed.
    wait_until("text gone from the database", || async {
        !database_holds(&app, canary).await
    })
    .await;
}

async fn assistant_is_silent_after_24_hours_and_agents_reply_with_human_agent(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let hour = 3_600_000;
    // A delivery Meta retried for 26 hours: stored, not answered by the assistant.
    post_page(
        &app,
        &channel,
        vec![text(
            PAGE,
            PSID,
            "m.W1",
            "opening hours?",
            now_ms() - 26 * hour,
        )],
    )
    .await;
    wait_until("stored", || async {
        only_conversation(&app, &tenant).await.1.len() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        app.graph.requests().is_empty(),
        "the assistant answered outside the window"
    );
    // A person may still answer, tagged HUMAN_AGENT.
    let (conversation, _) = only_conversation(&app, &tenant).await;
    let reply = |conversation: &Value, text: &str| {
        app.api(&tenant)
            .post(format!(
                "{}/api/v1/conversations/{}/messages",
                app.url,
                conversation["id"].as_str().expect("id")
            ))
            .json(&json!({"text": text}))
            .send()
    };
    let res = reply(&conversation, "Sorry for the delay: we open at 9.")
        .await
        .expect("reply");
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<Value>().await.expect("json")["message_tag"],
        "HUMAN_AGENT"
    );
    wait_until("sent", || async { app.graph.delivered().len() == 1 }).await;
    let sent = &app.graph.requests()[0].body;
    assert_eq!(sent["messaging_type"], "MESSAGE_TAG");
    assert_eq!(sent["tag"], "HUMAN_AGENT");
    assert_eq!(
        sent["message"]["text"],
        "Sorry for the delay: we open at 9."
    );

    // Eight days after the customer's last message nobody may write: a clear refusal.
    post_page(
        &app,
        &channel,
        vec![text(
            PAGE,
            "24002",
            "m.W2",
            "hello?",
            now_ms() - 8 * 24 * hour,
        )],
    )
    .await;
    wait_until("second conversation", || async {
        app.conversations(&tenant).await.len() == 2
    })
    .await;
    let old = app
        .conversations(&tenant)
        .await
        .into_iter()
        .find(|c| c["id"] != conversation["id"])
        .expect("conversation");
    let res = reply(&old, "Are you still there?").await.expect("reply");
    assert_eq!(res.status(), 422);
    let error = res.json::<Value>().await.expect("json");
    assert_eq!(error["error"]["code"], "outside_messaging_window");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("7 days"));
    let messages = app.messages(&tenant, old["id"].as_str().expect("id")).await;
    assert!(
        messages.iter().all(|m| m["direction"] == "inbound"),
        "a refused reply is not queued"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.graph.requests().len(), 1);
}

async fn receipts_move_replies_forward(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    post_page(
        &app,
        &channel,
        vec![text(PAGE, PSID, "m.R1", "opening hours?", now_ms())],
    )
    .await;
    wait_until("sent", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(1)
            .is_some_and(|m| m["status"] == "sent")
    })
    .await;
    let delivery_receipt = json!({"sender": {"id": PSID}, "recipient": {"id": PAGE},
        "delivery": {"mids": ["m_out.1"], "watermark": now_ms() - 3_600_000}});
    post_page(&app, &channel, vec![delivery_receipt.clone()]).await;
    wait_until("delivered", || async {
        only_conversation(&app, &tenant).await.1[1]["status"] == "delivered"
    })
    .await;
    let read = json!({"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": now_ms(),
        "read": {"watermark": now_ms() + 1000}});
    post_page(&app, &channel, vec![read]).await;
    wait_until("read", || async {
        only_conversation(&app, &tenant).await.1[1]["status"] == "read"
    })
    .await;
    // A late delivery receipt does not move it back; a redelivered one changes nothing.
    post_page(&app, &channel, vec![delivery_receipt]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        only_conversation(&app, &tenant).await.1[1]["status"],
        "read"
    );
}

async fn rejected_page_token_pauses_the_channel_and_agents_see_why(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    app.graph.script([Scripted {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "Error validating access token: The session has been invalidated because the user changed their password.",
            "type": "OAuthException", "code": 190, "error_subcode": 460, "fbtrace_id": "F"}}),
    }]);
    post_page(
        &app,
        &channel,
        vec![text(PAGE, PSID, "m.T1", "opening hours?", now_ms())],
    )
    .await;
    wait_until("channel paused", || async {
        app.get_json(&tenant, "/api/v1/channels").await.1["items"][0]["status"] == "needs_reauth"
    })
    .await;
    let (conversation, _) = only_conversation(&app, &tenant).await;
    let res = app
        .api(&tenant)
        .post(format!(
            "{}/api/v1/conversations/{}/messages",
            app.url,
            conversation["id"].as_str().expect("id")
        ))
        .json(&json!({"text": "A person here"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(res.status(), 202);
    let answer: Value = res.json().await.expect("json");
    assert!(
        answer["held"]
            .as_str()
            .unwrap_or_default()
            .contains("re-authorize"),
        "{answer}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.graph.requests().len(),
        1,
        "nothing is sent while the token is rejected"
    );
    let outbound: Vec<Value> = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .collect();
    assert_eq!(outbound.len(), 2);
    assert!(
        outbound
            .iter()
            .all(|m| m["status"] == "queued" && m["external_id"].is_null()),
        "{outbound:?}"
    );
}

async fn permanent_send_error_keeps_code_and_subcode(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    app.graph.script([Scripted {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "(#551) This person isn't available right now.",
            "type": "OAuthException", "code": 551, "error_subcode": 1545041, "fbtrace_id": "G"}}),
    }]);
    post_page(
        &app,
        &channel,
        vec![text(PAGE, PSID, "m.P1", "opening hours?", now_ms())],
    )
    .await;
    wait_until("failed", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(1)
            .is_some_and(|m| m["status"] == "failed")
    })
    .await;
    let reply = only_conversation(&app, &tenant).await.1[1].clone();
    assert_eq!(reply["error_code"], 551);
    assert!(
        reply["error_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("1545041"),
        "{reply}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.graph.requests().len(), 1, "not retried");
}

async fn standby_and_other_events_are_stored_not_answered(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let now = now_ms();
    // Another app owns the thread: the message arrives on `standby`.
    let standby = json!({"object": "page", "entry": [{"id": PAGE, "time": now, "standby": [
        text(PAGE, PSID, "m.S1", "opening hours?", now)
    ]}]})
    .to_string();
    let path = format!("/webhooks/messenger/{channel}");
    assert_eq!(app.post_signed(&path, "page-secret", &standby).await, 200);
    let items = vec![
        json!({"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": now + 1,
            "pass_thread_control": {"new_owner_app_id": "123456789", "metadata": "to the inbox"}}),
        json!({"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": now + 2,
            "reaction": {"reaction": "love", "emoji": "\u{2764}", "action": "react", "mid": "m.S1"}}),
        json!({"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": now + 3,
            "message_edit": {"mid": "m.S1", "text": "opening hours on Sunday?", "num_edit": 1}}),
        json!({"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": now + 4,
            "postback": {"mid": "m.PB1", "title": "Talk to us", "payload": "CONTACT"}}),
    ];
    post_page(&app, &channel, items).await;
    wait_until("all stored", || async {
        only_conversation(&app, &tenant).await.1.len() >= 4
    })
    .await;
    let (_, messages) = only_conversation(&app, &tenant).await;
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or_default())
        .collect();
    assert!(
        kinds.contains(&"handover") && kinds.contains(&"reaction") && kinds.contains(&"postback"),
        "{kinds:?}"
    );
    let first = messages
        .iter()
        .find(|m| m["external_id"] == "m.S1")
        .expect("standby message");
    assert_eq!(first["text"], "opening hours on Sunday?", "edited");
    let postback = messages
        .iter()
        .find(|m| m["external_id"] == "m.PB1")
        .expect("postback");
    assert_eq!(postback["content"]["payload"], "CONTACT");
    wait_until("postback answered", || async {
        app.graph.delivered().len() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Only the postback (in the thread we own) got an answer, never the standby message.
    assert_eq!(app.graph.requests().len(), 1);
    // Redelivery of the standby batch changes nothing.
    assert_eq!(app.post_signed(&path, "page-secret", &standby).await, 200);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM inbox_events WHERE external_id = 'm.S1'"
        )
        .await,
        1
    );
}

async fn channel_route_handshake_and_foreign_entries(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let other = app.create_tenant("Other").await;
    connect(&app, &other, "messenger", "7002", Some("other-secret")).await;
    let check = |token: &str| {
        app.http
            .get(format!(
                "{}/webhooks/messenger/{channel}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
                app.url
            ))
            .send()
    };
    let ok = check("channel-verify-token").await.expect("get");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("text"), "1158201444");
    assert_eq!(check("wrong").await.expect("get").status(), 403);
    // The platform path must match the channel's platform.
    let res = app
        .http
        .get(format!("{}/webhooks/instagram/{channel}?hub.mode=subscribe&hub.verify_token=channel-verify-token&hub.challenge=1", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
    // Signed with this Page's secret but naming another tenant's Page: kept, not processed.
    let body = delivery(
        "page",
        &[("7002", vec![text("7002", PSID, "m.F1", "cross", now_ms())])],
    );
    let path = format!("/webhooks/messenger/{channel}");
    assert_eq!(app.post_signed(&path, "page-secret", &body).await, 200);
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"][0]["reason"], "account_mismatch");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.conversations(&other).await.is_empty());
    assert!(app.conversations(&tenant).await.is_empty());
}
