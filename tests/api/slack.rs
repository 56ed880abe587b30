//! Slack end to end: signed Events API requests in, `chat.postMessage` out to a fake
//! Slack Web API, OAuth install, revocation. Fixtures from channels/tests/fixtures/slack.

use serde_json::{json, Value};

use crate::fake_slack::*;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    stale_or_badly_signed_requests_are_401_and_store_nothing,
    url_verification_is_answered_with_the_challenge,
    three_redeliveries_of_one_event_yield_one_reply,
    thread_reply_is_answered_in_the_thread,
    bot_messages_are_never_answered,
    edits_update_and_deletes_remove_the_text,
    uninstall_stops_all_sending_and_destroys_the_token,
    oauth_install_checks_state_and_creates_a_working_channel,
    a_burst_to_one_slack_channel_stays_within_the_posting_limit,
    slack_errors_are_retried_or_recorded,
    long_reply_is_split_at_4000_in_the_thread,
    event_for_another_workspace_on_a_channel_route_is_not_processed,
    a_stalled_database_is_answered_in_time_and_the_redelivery_counts,
);

const TEAM: &str = "T061EG9R6";
const SECRET: &str = "workspace-app-signing-secret";
const TOKEN: &str = "xoxb-1111-2222-workspacetoken";
const BOT: &str = "U0BOTUSER";
const CUSTOMER: &str = "U2147483697";
const HOURS: &str =
    "Our opening hours are 9:00 to 17:00, Monday to Friday. Fish & chips on Fridays.";

struct Setup {
    app: TestApp,
    slack: FakeSlack,
    tenant: Tenant,
    channel: String,
}

impl Setup {
    fn path(&self) -> String {
        format!("/webhooks/slack/{}", self.channel)
    }

    async fn send(&self, body: &str) -> u16 {
        self.app
            .slack_post(&self.path(), SECRET, body, 0, None)
            .await
            .0
    }

    async fn messages(&self) -> Vec<Value> {
        self.app.all_messages(&self.tenant).await
    }

    async fn channel_status(&self) -> Value {
        let (_, body) = self.app.get_json(&self.tenant, "/api/v1/channels").await;
        body["items"][0].clone()
    }
}

async fn setup(backend: Backend) -> Setup {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config()).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    app.add_document(
        &tenant,
        "Shipping",
        "Shipping costs 5 EUR within the EU and takes two to four days.",
    )
    .await;
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "slack", "team_id": TEAM, "bot_token": TOKEN, "signing_secret": SECRET}))
        .send()
        .await
        .expect("create channel");
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("json");
    let channel = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["webhook_url"],
        format!("{}/webhooks/slack/{channel}", app.url)
    );
    Setup {
        app,
        slack,
        tenant,
        channel,
    }
}

fn dm(event_id: &str, ts: &str, text: &str) -> String {
    callback(
        TEAM,
        event_id,
        Some(BOT),
        slack_message("D024BE91L", CUSTOMER, ts, text, None),
    )
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/channels/tests/fixtures/slack/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn stale_or_badly_signed_requests_are_401_and_store_nothing(backend: Backend) {
    let s = setup(backend).await;
    let body = dm("EvSTALE", "1700000001.000100", "opening hours?");
    let path = s.path();
    for skew in [-301, 301, -3600] {
        assert_eq!(
            s.app.slack_post(&path, SECRET, &body, skew, None).await.0,
            401,
            "skew {skew}"
        );
    }
    assert_eq!(
        s.app
            .slack_post(&path, "wrong-secret", &body, 0, None)
            .await
            .0,
        401
    );
    // The operator app's secret is not this channel's.
    assert_eq!(
        s.app
            .slack_post(&path, SLACK_OPERATOR_SECRET, &body, 0, None)
            .await
            .0,
        401
    );
    let unsigned = s
        .app
        .http
        .post(format!("{}{path}", s.app.url))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(unsigned.status(), 401);
    // A correct signature over a body changed afterwards.
    let ts = unix_now().to_string();
    let signature = webhooks::slack::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let tampered = s
        .app
        .http
        .post(format!("{}{path}", s.app.url))
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", signature)
        .body(body.replace("opening", "closing"))
        .send()
        .await
        .expect("post");
    assert_eq!(tampered.status(), 401);
    assert!(s.app.conversations(&s.tenant).await.is_empty());
    let (_, unhandled) = s.app.get_json(&s.tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"], json!([]));
    assert!(s.slack.posts().is_empty());
    // Four minutes of clock skew is fine.
    assert_eq!(
        s.app.slack_post(&path, SECRET, &body, -240, None).await.0,
        200
    );
    wait_until("answered", || async { s.slack.delivered().len() == 1 }).await;
    // An unknown channel id is 404.
    assert_eq!(
        s.app
            .slack_post("/webhooks/slack/no-such-channel", SECRET, &body, 0, None)
            .await
            .0,
        404
    );
}

async fn url_verification_is_answered_with_the_challenge(backend: Backend) {
    let s = setup(backend).await;
    let body = fixture("url-verification.json");
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    assert_eq!(
        s.app.slack_post(&s.path(), SECRET, &body, 0, None).await,
        (200, challenge.to_string())
    );
    assert_eq!(
        s.app
            .slack_post("/webhooks/slack", SLACK_OPERATOR_SECRET, &body, 0, None)
            .await,
        (200, challenge.to_string())
    );
    let (status, text) = s
        .app
        .slack_post("/webhooks/slack", SECRET, &body, 0, None)
        .await;
    assert_eq!(status, 401);
    assert!(!text.contains(challenge));
}

async fn three_redeliveries_of_one_event_yield_one_reply(backend: Backend) {
    let s = setup(backend).await;
    let ts = "1700000002.000200";
    let body = callback(
        TEAM,
        "EvREDELIVER",
        Some(BOT),
        slack_message(
            "C0LAN2Q65",
            CUSTOMER,
            ts,
            "<@U0BOTUSER> what are your opening hours?",
            None,
        ),
    );
    // The same message as `app_mention`, with its own event id.
    let mention = callback(
        TEAM,
        "EvMENTION",
        Some(BOT),
        json!({"type": "app_mention", "user": CUSTOMER, "text": "<@U0BOTUSER> what are your opening hours?",
               "ts": ts, "channel": "C0LAN2Q65", "event_ts": ts}),
    );
    assert_eq!(
        s.app.slack_post(&s.path(), SECRET, &body, 0, None).await.0,
        200
    );
    assert_eq!(s.send(&mention).await, 200);
    for retry in 1..=3 {
        assert_eq!(
            s.app
                .slack_post(&s.path(), SECRET, &body, 0, Some(retry))
                .await
                .0,
            200
        );
    }
    wait_until("reply sent", || async {
        s.messages()
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "sent")
    })
    .await;
    let messages = s.messages().await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["external_id"], format!("C0LAN2Q65:{ts}"));
    assert_eq!(messages[0]["text"], "what are your opening hours?");
    assert_eq!(s.app.conversations(&s.tenant).await.len(), 1);
    let posts = s.slack.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

async fn thread_reply_is_answered_in_the_thread(backend: Backend) {
    let s = setup(backend).await;
    let parent = "1700000003.000100";
    let top = callback(
        TEAM,
        "EvTOP",
        Some(BOT),
        slack_message(
            "C024BE91L",
            CUSTOMER,
            parent,
            "what are your opening hours?",
            None,
        ),
    );
    assert_eq!(s.send(&top).await, 200);
    wait_until("first reply", || async { s.slack.delivered().len() == 1 }).await;
    let first = s.slack.posts()[0].body.clone();
    assert_eq!(first["channel"], "C024BE91L");
    assert_eq!(
        first["thread_ts"], parent,
        "a channel message is answered in its thread"
    );
    // Plain text goes out escaped for Slack.
    let text = first["text"].as_str().unwrap_or_default();
    assert!(text.contains("Fish &amp; chips"), "{text}");
    assert!(!text.contains("Fish & chips"), "{text}");

    let reply = callback(
        TEAM,
        "EvREPLY",
        Some(BOT),
        slack_message(
            "C024BE91L",
            CUSTOMER,
            "1700000003.000300",
            "and how much does shipping cost?",
            Some(parent),
        ),
    );
    assert_eq!(s.send(&reply).await, 200);
    wait_until("second reply", || async { s.slack.delivered().len() == 2 }).await;
    let second = s.slack.posts()[1].body.clone();
    assert_eq!(second["channel"], "C024BE91L");
    assert_eq!(second["thread_ts"], parent);
    assert!(second["text"]
        .as_str()
        .unwrap_or_default()
        .contains("5 EUR"));
    let conversations = s.app.conversations(&s.tenant).await;
    assert_eq!(conversations.len(), 1, "the thread is one conversation");
    assert_eq!(conversations[0]["platform"], "slack");

    // A direct message is answered in the DM, not in a thread.
    let body = fixture("message-im.json").replace("T061EG9R6", TEAM);
    assert_eq!(
        s.send(&body.replace("Hello hello can you hear me?", "opening hours please"))
            .await,
        200
    );
    wait_until("dm reply", || async { s.slack.delivered().len() == 3 }).await;
    let third = s.slack.posts()[2].body.clone();
    assert_eq!(third["channel"], "D024BE91L");
    assert!(third.get("thread_ts").is_none(), "{third}");
}

async fn bot_messages_are_never_answered(backend: Backend) {
    let s = setup(backend).await;
    assert_eq!(
        s.send(&dm("EvB1", "1700000004.000100", "opening hours?"))
            .await,
        200
    );
    wait_until("reply", || async { s.slack.delivered().len() == 1 }).await;
    let ts = s.slack.delivered()[0].ts.clone().expect("ts");
    // Our own reply comes back as a message event: it confirms delivery, nothing more.
    let echo = callback(
        TEAM,
        "EvECHO",
        Some(BOT),
        json!({"type": "message", "channel": "D024BE91L", "channel_type": "im", "user": BOT,
               "bot_id": "B0FAKE", "text": "Our opening hours are", "ts": ts, "event_ts": ts}),
    );
    assert_eq!(s.send(&echo).await, 200);
    wait_until("reply delivered", || async {
        s.messages()
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "delivered")
    })
    .await;
    // Another bot writing, legacy and current style.
    let other = fixture("message-other-bot.json").replace("Deploy finished", "opening hours?");
    assert_eq!(s.send(&other).await, 200);
    let modern = callback(
        TEAM,
        "EvOTHER",
        Some(BOT),
        json!({"type": "message", "channel": "D024BE91L", "channel_type": "im", "user": "U0OTHERBOT",
               "bot_id": "B0OTHER", "text": "opening hours?", "ts": "1700000004.000900"}),
    );
    assert_eq!(s.send(&modern).await, 200);
    let (_, unhandled) = s.app.get_json(&s.tenant, "/api/v1/events/unhandled").await;
    let reasons: Vec<&str> = unhandled["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["reason"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(reasons, vec!["bot_message", "bot_message"]);
    assert_eq!(s.slack.posts().len(), 1, "no reply to any bot");
    assert_eq!(s.messages().await.len(), 2);
}

async fn edits_update_and_deletes_remove_the_text(backend: Backend) {
    let s = setup(backend).await;
    let body = fixture("message-im.json").replace("Hello hello can you hear me?", "opening hours?");
    assert_eq!(s.send(&body).await, 200);
    wait_until("reply", || async { s.slack.delivered().len() == 1 }).await;
    let inbound = |messages: Vec<Value>| {
        messages
            .into_iter()
            .find(|m| m["direction"] == "inbound")
            .expect("inbound message")
    };
    assert_eq!(s.send(&fixture("message-changed.json")).await, 200);
    wait_until("edited", || async {
        inbound(s.messages().await)["text"] == "Hello, can you hear me now?"
    })
    .await;
    assert_eq!(s.send(&fixture("message-deleted.json")).await, 200);
    wait_until("deleted", || async {
        inbound(s.messages().await)["status"] == "deleted"
    })
    .await;
    let message = inbound(s.messages().await);
    assert_eq!(message["text"], Value::Null);
    assert_eq!(message["external_id"], "D024BE91L:1355517523.000005");
    let all = serde_json::to_string(&s.messages().await).unwrap_or_default();
    assert!(!all.contains("can you hear me"), "{all}");
    // An edit is not a new question.
    assert_eq!(s.slack.posts().len(), 1);
}

/// The bot token inside the channel's sealed credentials, read straight from the database.
async fn stored_credentials(app: &TestApp, tenant: &Tenant, channel: &str) -> Value {
    let blob: Option<Vec<u8>> = if app.db.url.starts_with("sqlite") {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url)
            .await
            .expect("sqlite");
        sqlx::query_scalar("SELECT credentials FROM channels WHERE id = $1")
            .bind(channel)
            .fetch_one(&mut conn)
            .await
            .expect("row")
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&app.db.url).await.expect("pg");
        sqlx::query_scalar("SELECT credentials FROM channels WHERE id = $1")
            .bind(channel)
            .fetch_one(&mut conn)
            .await
            .expect("row")
    };
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let sealer = omnigate::crypto::Sealer::new(&key);
    let plain = sealer
        .open(
            &omnigate::crypto::channel_context(&tenant.id, channel),
            &blob.expect("credentials"),
        )
        .expect("opens");
    serde_json::from_slice(&plain).expect("json")
}

async fn uninstall_stops_all_sending_and_destroys_the_token(backend: Backend) {
    let s = setup(backend).await;
    assert_eq!(
        stored_credentials(&s.app, &s.tenant, &s.channel).await["bot_token"],
        TOKEN
    );
    // The reply meets a rate limit and waits a minute to be sent again.
    s.slack.script([Scripted {
        status: 429,
        headers: vec![("retry-after", "60".into())],
        body: json!({"ok": false, "error": "ratelimited"}),
    }]);
    assert_eq!(
        s.send(&dm("EvU1", "1700000005.000100", "opening hours?"))
            .await,
        200
    );
    wait_until("first attempt", || async { s.slack.posts().len() == 1 }).await;

    let uninstall = fixture("app-uninstalled.json").replace("TXXXXXXXX", TEAM);
    assert_eq!(s.send(&uninstall).await, 200);
    // At once: the answer comes after the channel is disabled.
    let channel = s.channel_status().await;
    assert_eq!(channel["status"], "revoked", "{channel}");
    assert!(channel["status_detail"]
        .as_str()
        .unwrap_or_default()
        .contains("app_uninstalled"));
    let credentials = stored_credentials(&s.app, &s.tenant, &s.channel).await;
    assert_eq!(credentials["bot_token"], Value::Null, "{credentials}");
    assert!(!credentials.to_string().contains("xoxb"));
    // The waiting reply will not be sent.
    let reply = s
        .messages()
        .await
        .into_iter()
        .find(|m| m["direction"] == "outbound")
        .expect("reply");
    assert_eq!(reply["status"], "failed", "{reply}");
    // Redelivered, and followed by tokens_revoked: still 200, nothing changes.
    assert_eq!(
        s.app
            .slack_post(&s.path(), SECRET, &uninstall, 0, Some(1))
            .await
            .0,
        200
    );
    let revoked = fixture("tokens-revoked.json").replace("T061EG9R6", TEAM);
    assert_eq!(s.send(&revoked).await, 200);
    assert_eq!(s.channel_status().await["status"], "revoked");
    // Recorded in the audit log once per event, the chain intact, no token in it.
    let (status, audit) = s.app.get_json(&s.tenant, "/api/v1/audit").await;
    assert_eq!(status, 200);
    assert_eq!(audit["chain_ok"], true, "{audit}");
    let entries: Vec<&Value> = audit["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["actor"] == "platform:slack")
                .collect()
        })
        .unwrap_or_default();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions.len(),
        2,
        "uninstall (once, despite the redelivery) and tokens_revoked: {audit}"
    );
    assert!(actions.contains(&"channel.uninstalled"));
    assert!(actions.contains(&"channel.tokens_revoked"));
    assert!(entries.iter().all(|e| e["target"] == s.channel.as_str()));
    assert!(!audit.to_string().contains("xoxb"));
    // A message arriving afterwards is kept, not answered.
    assert_eq!(
        s.send(&dm("EvU2", "1700000005.000900", "opening hours?"))
            .await,
        200
    );
    let (_, unhandled) = s.app.get_json(&s.tenant, "/api/v1/events/unhandled").await;
    assert!(unhandled["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|u| u["reason"] == "channel_revoked")));
    assert_eq!(
        s.slack.posts().len(),
        1,
        "nothing is sent after the uninstall"
    );
    // The signal is in the person's consent ledger.
    let (_, conversations) = s.app.get_json(&s.tenant, "/api/v1/conversations").await;
    let contact = conversations["items"][0]["contact_id"]
        .as_str()
        .expect("contact");
    let (status, profile) = s
        .app
        .get_json(&s.tenant, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(profile["consent"]["ai_processing"], false, "{profile}");
}

async fn oauth_install_checks_state_and_creates_a_working_channel(backend: Backend) {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config()).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let install_url = |app: &TestApp| {
        let tenant = tenant.clone();
        let http = app.http.clone();
        let base = app.url.clone();
        async move {
            let res = http
                .get(format!("{base}/api/v1/slack/install"))
                .bearer_auth(&tenant.key)
                .send()
                .await
                .expect("install url");
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.expect("json");
            reqwest::Url::parse(body["url"].as_str().expect("url")).expect("valid url")
        }
    };
    let url = install_url(&app).await;
    assert!(url
        .as_str()
        .starts_with("https://slack.example.test/oauth/v2/authorize?"));
    let param = |url: &reqwest::Url, name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    assert_eq!(param(&url, "client_id"), SLACK_CLIENT_ID);
    assert!(param(&url, "scope").contains("chat:write"));
    let redirect = format!("{}/slack/oauth/callback", app.url);
    assert_eq!(param(&url, "redirect_uri"), redirect);
    let state = param(&url, "state");
    assert!(state.len() >= 32);

    let callback_get = |query: String| {
        let http = app.http.clone();
        let base = app.url.clone();
        async move {
            let res = http
                .get(format!("{base}/slack/oauth/callback?{query}"))
                .send()
                .await
                .expect("callback");
            (res.status().as_u16(), res.text().await.unwrap_or_default())
        }
    };
    // A forged state is refused before Slack is asked anything.
    let (status, page) = callback_get(format!("code={GOOD_CODE}&state=forged-state")).await;
    assert_eq!(status, 403, "{page}");
    let (status, _) = callback_get(format!("code={GOOD_CODE}")).await;
    assert_eq!(status, 400);
    assert!(slack.exchanges().is_empty());
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(channels["items"], json!([]));

    let (status, page) = callback_get(format!("code={GOOD_CODE}&state={state}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Slack Softball Team"), "{page}");
    assert!(!page.contains("xoxb"));
    let exchange = &slack.exchanges()[0];
    assert_eq!(exchange.get("code").map(String::as_str), Some(GOOD_CODE));
    assert_eq!(exchange.get("redirect_uri"), Some(&redirect));
    // The state works once.
    let (status, _) = callback_get(format!("code={GOOD_CODE}&state={state}")).await;
    assert_eq!(status, 403);
    assert_eq!(slack.exchanges().len(), 1);

    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    let items = channels["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{channels}");
    assert_eq!(items[0]["platform"], "slack");
    assert_eq!(items[0]["account_id"], INSTALLED_TEAM);
    assert_eq!(items[0]["status"], "active");
    assert_eq!(
        items[0]["webhook_url"],
        format!("{}/webhooks/slack", app.url)
    );
    assert!(!channels.to_string().contains("xoxb"));
    let channel_id = items[0]["id"].as_str().expect("id").to_string();

    // The channel works: an event on the operator app's route is answered with the
    // installed bot token, and the bot's own message is recognised by its user id.
    let question = callback(
        INSTALLED_TEAM,
        "EvOAUTH1",
        None,
        slack_message(
            "D0INSTALL",
            CUSTOMER,
            "1700000006.000100",
            "opening hours?",
            None,
        ),
    );
    assert_eq!(
        app.slack_post("/webhooks/slack", SLACK_OPERATOR_SECRET, &question, 0, None)
            .await
            .0,
        200
    );
    wait_until("reply", || async { slack.delivered().len() == 1 }).await;
    assert_eq!(
        slack.posts()[0].authorization.as_deref(),
        Some(format!("Bearer {INSTALLED_TOKEN}").as_str())
    );
    let own = callback(
        INSTALLED_TEAM,
        "EvOAUTH2",
        None,
        slack_message(
            "D0INSTALL",
            INSTALLED_BOT_USER,
            "1700000006.000500",
            "opening hours?",
            None,
        ),
    );
    assert_eq!(
        app.slack_post("/webhooks/slack", SLACK_OPERATOR_SECRET, &own, 0, None)
            .await
            .0,
        200
    );
    // A workspace nobody installed is kept at operator level, not routed.
    let stranger = callback(
        "T0STRANGER",
        "EvOAUTH3",
        None,
        slack_message("D0X", CUSTOMER, "1700000006.000900", "opening hours?", None),
    );
    assert_eq!(
        app.slack_post("/webhooks/slack", SLACK_OPERATOR_SECRET, &stranger, 0, None)
            .await
            .0,
        200
    );

    // Uninstalled through the operator app, then installed again: active, new token.
    // An uninstall of another app in the same workspace does not touch this channel.
    let other_app = fixture("app-uninstalled.json").replace("TXXXXXXXX", INSTALLED_TEAM);
    assert_eq!(
        app.slack_post(
            "/webhooks/slack",
            SLACK_OPERATOR_SECRET,
            &other_app,
            0,
            None
        )
        .await
        .0,
        200
    );
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(channels["items"][0]["status"], "active");
    let uninstall = other_app.replace("AXXXXXXXXX", "A0KRD7HC3");
    assert_eq!(
        app.slack_post(
            "/webhooks/slack",
            SLACK_OPERATOR_SECRET,
            &uninstall,
            0,
            None
        )
        .await
        .0,
        200
    );
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(channels["items"][0]["status"], "revoked");
    assert_eq!(
        stored_credentials(&app, &tenant, &channel_id).await["bot_token"],
        Value::Null
    );
    let state = param(&install_url(&app).await, "state");
    let (status, _) = callback_get(format!("code={GOOD_CODE}&state={state}")).await;
    assert_eq!(status, 200);
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(channels["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(channels["items"][0]["id"], channel_id.as_str());
    assert_eq!(channels["items"][0]["status"], "active");
    assert_eq!(
        stored_credentials(&app, &tenant, &channel_id).await["bot_token"],
        INSTALLED_TOKEN
    );
    // A code Slack does not accept: refused, nothing changes.
    let state = param(&install_url(&app).await, "state");
    let (status, page) = callback_get(format!("code=stolen&state={state}")).await;
    assert_eq!(status, 502);
    assert!(page.contains("invalid_code"), "{page}");
    // Only the two questions were answered: not the bot's own message, not the stranger.
    let question = callback(
        INSTALLED_TEAM,
        "EvOAUTH4",
        None,
        slack_message(
            "D0INSTALL",
            CUSTOMER,
            "1700000006.000700",
            "opening hours?",
            None,
        ),
    );
    assert_eq!(
        app.slack_post("/webhooks/slack", SLACK_OPERATOR_SECRET, &question, 0, None)
            .await
            .0,
        200
    );
    wait_until("reply after re-install", || async {
        slack.delivered().len() == 2
    })
    .await;
    assert_eq!(slack.posts().len(), 2);
}

async fn a_burst_to_one_slack_channel_stays_within_the_posting_limit(backend: Backend) {
    let s = setup(backend).await;
    // Eight customers start eight threads in one channel at once.
    for i in 0..8 {
        let body = callback(
            TEAM,
            &format!("EvBURST{i}"),
            Some(BOT),
            slack_message(
                "C0BUSY",
                &format!("U0CUSTOMER{i}"),
                &format!("1700000007.00010{i}"),
                "what are your opening hours?",
                None,
            ),
        );
        assert_eq!(s.send(&body).await, 200);
    }
    wait_until("eight replies", || async { s.slack.delivered().len() == 8 }).await;
    let posts = s.slack.posts();
    assert_eq!(
        posts.iter().filter(|p| p.answered != 200).count(),
        0,
        "sends were paced to Slack's per-channel limit: {:?}",
        posts.iter().map(|p| p.answered).collect::<Vec<_>>()
    );
    assert_eq!(posts.len(), 8);
}

async fn slack_errors_are_retried_or_recorded(backend: Backend) {
    let s = setup(backend).await;
    s.slack.script([Scripted {
        status: 200,
        headers: vec![],
        body: json!({"ok": false, "error": "channel_not_found"}),
    }]);
    assert_eq!(
        s.send(&dm("EvE1", "1700000008.000100", "opening hours?"))
            .await,
        200
    );
    wait_until("reply failed", || async {
        s.messages()
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "failed")
    })
    .await;
    let failed = s
        .messages()
        .await
        .into_iter()
        .find(|m| m["direction"] == "outbound")
        .expect("reply");
    assert_eq!(failed["error_detail"], "channel_not_found");
    assert_eq!(s.slack.posts().len(), 1, "a permanent error is not retried");

    s.slack.script([Scripted {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        body: json!({"ok": false, "error": "ratelimited"}),
    }]);
    let other = callback(
        TEAM,
        "EvE2",
        Some(BOT),
        slack_message(
            "D0OTHER",
            "U0SECOND",
            "1700000008.000200",
            "opening hours?",
            None,
        ),
    );
    assert_eq!(s.send(&other).await, 200);
    wait_until("delivered after Retry-After", || async {
        s.slack.delivered().len() == 1
    })
    .await;
    let posts = s.slack.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[1].answered, 429);
    assert_eq!(posts[1].body, posts[2].body);
    assert_eq!(s.channel_status().await["status"], "active");
}

async fn long_reply_is_split_at_4000_in_the_thread(backend: Backend) {
    let s = setup(backend).await;
    let parent = "1700000009.000100";
    let top = callback(
        TEAM,
        "EvLONG",
        Some(BOT),
        slack_message(
            "C024BE91L",
            CUSTOMER,
            parent,
            "what are your opening hours?",
            None,
        ),
    );
    assert_eq!(s.send(&top).await, 200);
    wait_until("first reply", || async { s.slack.delivered().len() == 1 }).await;
    let conversation = s.app.conversations(&s.tenant).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let long = "word ".repeat(1800); // 9000 characters
    let res = s
        .app
        .api(&s.tenant)
        .post(format!(
            "{}/api/v1/conversations/{conversation}/messages",
            s.app.url
        ))
        .json(&json!({"text": long}))
        .send()
        .await
        .expect("agent reply");
    assert_eq!(res.status(), 202);
    wait_until("three more parts", || async {
        s.slack.delivered().len() == 4
    })
    .await;
    let parts: Vec<Value> = s.slack.posts()[1..]
        .iter()
        .map(|p| p.body.clone())
        .collect();
    assert_eq!(parts.len(), 3);
    for part in &parts {
        assert_eq!(part["channel"], "C024BE91L");
        assert_eq!(part["thread_ts"], parent);
        assert!(part["text"].as_str().unwrap_or_default().chars().count() <= 4000);
    }
    let words: usize = parts
        .iter()
        .map(|p| {
            p["text"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum();
    assert_eq!(words, 1800);
}

async fn event_for_another_workspace_on_a_channel_route_is_not_processed(backend: Backend) {
    let s = setup(backend).await;
    // Signed with this channel's secret, but naming another workspace.
    let body = callback(
        "T0ELSEWHERE",
        "EvELSE",
        Some(BOT),
        slack_message(
            "D024BE91L",
            CUSTOMER,
            "1700000010.000100",
            "opening hours?",
            None,
        ),
    );
    assert_eq!(s.send(&body).await, 200);
    let (_, unhandled) = s.app.get_json(&s.tenant, "/api/v1/events/unhandled").await;
    assert_eq!(
        unhandled["items"][0]["reason"], "account_mismatch",
        "{unhandled}"
    );
    // A signed body that is not JSON at all (a slash command) is kept, and answered 200.
    let form = "token=x&team_id=T061EG9R6&command=%2Fhelp&text=opening+hours";
    assert_eq!(s.send(form).await, 200);
    let (_, unhandled) = s.app.get_json(&s.tenant, "/api/v1/events/unhandled").await;
    assert_eq!(
        unhandled["items"][0]["reason"], "unparseable",
        "{unhandled}"
    );
    // The workspace's own messages still work, and the others were not answered.
    assert_eq!(
        s.send(&dm("EvHOME", "1700000010.000200", "opening hours?"))
            .await,
        200
    );
    wait_until("reply", || async { s.slack.delivered().len() == 1 }).await;
    assert_eq!(s.app.conversations(&s.tenant).await.len(), 1);
    assert_eq!(s.slack.posts()[0].body["channel"], "D024BE91L");
}

/// Holds the database's write lock (SQLite) or the envelope table's (Postgres) from
/// another connection until dropped.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(url: &str) -> Self {
        use sqlx::Connection;
        if url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("lock");
            Self::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("pg");
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("begin");
            sqlx::query("LOCK TABLE raw_envelopes IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock");
            Self::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
            Self::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
        }
    }
}

async fn a_stalled_database_is_answered_in_time_and_the_redelivery_counts(backend: Backend) {
    let s = setup(backend).await;
    let body = dm("EvSTALL", "1700000011.000100", "opening hours?");
    let lock = WriteLock::take(&s.app.db.url).await;
    // Slack gives up after 3 s and delivers again; the gateway answers before that,
    // with 503, rather than leave the request waiting on the database (SQLite's busy
    // timeout is 10 s, Postgres waits for the lock indefinitely). The client's timeout,
    // well above the 2.5 s budget, only turns such a wait into a failure.
    let ts = unix_now().to_string();
    let signature = webhooks::slack::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let res = s
        .app
        .http
        .post(format!("{}{}", s.app.url, s.path()))
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", signature)
        .body(body.clone())
        .timeout(std::time::Duration::from_secs(8))
        .send()
        .await
        .expect("answered while the database is stalled");
    assert_eq!(res.status(), 503);
    lock.release().await;
    assert_eq!(
        s.app
            .slack_post(&s.path(), SECRET, &body, 0, Some(1))
            .await
            .0,
        200
    );
    wait_until("reply sent", || async {
        s.messages()
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "sent")
    })
    .await;
    assert_eq!(s.messages().await.len(), 2);
    assert_eq!(s.slack.posts().len(), 1);
}
