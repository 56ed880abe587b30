//! Telegram end to end: connecting a bot sets its webhook (and deleting it removes
//! the webhook), deliveries are authenticated by the secret token, a repeated
//! update is answered once, a user who blocked the bot gets nothing more, button
//! taps are acknowledged, groups are answered only when the bot is addressed.
//! The Bot API is played by a local fake speaking its wire format.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    connecting_sets_the_webhook_and_deleting_removes_it,
    a_failed_set_webhook_is_reported_and_nothing_is_created,
    a_wrong_secret_token_is_401_and_nothing_is_stored,
    a_repeated_update_id_is_answered_once,
    a_user_who_blocked_the_bot_gets_nothing_more,
    a_button_tap_is_acknowledged_and_answered,
    groups_are_answered_only_when_the_bot_is_addressed,
    flood_control_is_honoured_and_the_reply_sent_once,
);

const TOKEN: &str = "7001:AAH-test-token";
const SECRET: &str = "my-secret_TOKEN-123";
const PRIVATE_TEXT: &str =
    include_str!("../../channels/tests/fixtures/telegram/message-private-text.json");
const CALLBACK: &str = include_str!("../../channels/tests/fixtures/telegram/callback-query.json");
const HOURS: &str =
    "Our opening hours are 9:00 to 17:00, Monday to Friday. We are closed on public holidays.";

/// A call the fake Bot API received.
#[derive(Debug, Clone)]
struct Call {
    token: String,
    method: String,
    body: Value,
}

#[derive(Default)]
struct BotState {
    calls: Vec<Call>,
    /// Answers used (in order) for `sendMessage` before the default success.
    send_script: Vec<(u16, Value)>,
    fail_set_webhook: bool,
    sent: i64,
}

#[derive(Clone)]
pub(crate) struct FakeBotApi {
    pub(crate) url: String,
    state: Arc<Mutex<BotState>>,
}

impl FakeBotApi {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(BotState::default()));
        let router = Router::new()
            .route("/{bot}/{method}", post(bot_api))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    fn calls(&self, method: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Messages the fake accepted.
    fn sent(&self) -> Vec<Value> {
        self.calls("sendMessage")
            .into_iter()
            .map(|c| c.body)
            .collect()
    }
}

async fn bot_api(
    State(state): State<Arc<Mutex<BotState>>>,
    Path((bot, method)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> (axum::http::StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    let token = bot.strip_prefix("bot").unwrap_or_default().to_string();
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let (status, answer) = match method.as_str() {
        "getMe" => (
            200,
            json!({"ok": true, "result": {"id": token.split(':').next().unwrap().parse::<i64>().unwrap(),
                   "is_bot": true, "first_name": "Shop", "username": "shop_bot"}}),
        ),
        "setWebhook" if state.fail_set_webhook => (
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: bad webhook: HTTPS url must be provided for webhook"}),
        ),
        "setWebhook" | "deleteWebhook" => (200, json!({"ok": true, "result": true})),
        "sendMessage" if !state.send_script.is_empty() => state.send_script.remove(0),
        "sendMessage" => {
            state.sent += 1;
            (
                200,
                json!({"ok": true, "result": {"message_id": 9000 + state.sent, "date": 1,
                       "chat": {"id": body["chat_id"], "type": "private"}, "text": body["text"]}}),
            )
        }
        _ => (
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    };
    // Only what the platform accepted counts as sent.
    if status == 200 || method != "sendMessage" {
        state.calls.push(Call {
            token,
            method,
            body,
        });
    }
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        Json(answer),
    )
}

async fn setup(backend: Backend) -> (TestApp, FakeBotApi, Tenant, String) {
    let bot = FakeBotApi::start().await;
    let app = TestApp::spawn_with(
        backend,
        &format!("[platforms.telegram]\napi_url = \"{}\"\n", bot.url),
    )
    .await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let channel = connect(&app, &tenant, TOKEN).await;
    (app, bot, tenant, channel)
}

async fn connect(app: &TestApp, tenant: &Tenant, token: &str) -> String {
    let res = app
        .api(tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "telegram", "bot_token": token, "secret_token": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["platform"], "telegram");
    body["id"].as_str().unwrap().to_string()
}

async fn deliver(
    app: &TestApp,
    channel: &str,
    secret: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/webhooks/telegram/{channel}", app.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(secret) = secret {
        req = req.header("x-telegram-bot-api-secret-token", secret);
    }
    req.send().await.unwrap()
}

fn private_text(update_id: i64, message_id: i64, user: i64, text: &str) -> String {
    json!({"update_id": update_id, "message": {"message_id": message_id,
        "from": {"id": user, "is_bot": false, "first_name": "Waffle", "username": "waffle"},
        "chat": {"id": user, "first_name": "Waffle", "type": "private"},
        "date": 1_750_000_000 + update_id, "text": text}})
    .to_string()
}

async fn wait_sent(bot: &FakeBotApi, n: usize) {
    wait_until(&format!("{n} messages sent"), || async {
        bot.sent().len() >= n
    })
    .await;
}

async fn connecting_sets_the_webhook_and_deleting_removes_it(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    let set = bot.calls("setWebhook");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].token, TOKEN);
    assert_eq!(
        set[0].body["url"],
        format!("{}/webhooks/telegram/{channel}", app.url)
    );
    assert_eq!(set[0].body["secret_token"], SECRET);
    let allowed: Vec<&str> = set[0].body["allowed_updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for update in [
        "message",
        "edited_message",
        "callback_query",
        "my_chat_member",
    ] {
        assert!(allowed.contains(&update), "{allowed:?}");
    }
    // The listing shows the channel, never its token or secret.
    let (_, list) = app.get_json(&tenant, "/api/v1/channels").await;
    let text = list.to_string();
    assert!(text.contains(&channel) && !text.contains("AAH-test-token") && !text.contains(SECRET));

    let res = app
        .api(&tenant)
        .delete(format!("{}/api/v1/channels/{channel}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let deleted = bot.calls("deleteWebhook");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].token, TOKEN);
    assert_eq!(
        deliver(&app, &channel, Some(SECRET), PRIVATE_TEXT)
            .await
            .status(),
        404
    );
}

async fn a_failed_set_webhook_is_reported_and_nothing_is_created(backend: Backend) {
    let bot = FakeBotApi::start().await;
    bot.state.lock().unwrap().fail_set_webhook = true;
    let app = TestApp::spawn_with(
        backend,
        &format!("[platforms.telegram]\napi_url = \"{}\"\n", bot.url),
    )
    .await;
    let tenant = app.create_tenant("Acme").await;
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "telegram", "bot_token": TOKEN, "secret_token": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "platform_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("HTTPS url must be provided"));
    assert!(!body.to_string().contains("AAH-test-token"));
    let (_, list) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

async fn a_wrong_secret_token_is_401_and_nothing_is_stored(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    for secret in [Some("my-secret_TOKEN-124"), Some(""), None] {
        assert_eq!(
            deliver(&app, &channel, secret, PRIVATE_TEXT).await.status(),
            401
        );
    }
    // A good one goes through, and only it.
    assert_eq!(
        deliver(&app, &channel, Some(SECRET), PRIVATE_TEXT)
            .await
            .status(),
        200
    );
    wait_sent(&bot, 1).await;
    let messages = app.all_messages(&tenant).await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count(),
        1
    );
    // Well-authenticated but not an update we understand: kept, 200.
    assert_eq!(
        deliver(&app, &channel, Some(SECRET), r#"{"no_update_id":1}"#)
            .await
            .status(),
        200
    );
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"].as_array().unwrap().len(), 1);
}

async fn a_repeated_update_id_is_answered_once(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    let fixture: Value = serde_json::from_str(PRIVATE_TEXT).unwrap();
    let user = fixture["message"]["chat"]["id"].as_i64().unwrap();
    for _ in 0..3 {
        assert_eq!(
            deliver(&app, &channel, Some(SECRET), PRIVATE_TEXT)
                .await
                .status(),
            200
        );
    }
    wait_sent(&bot, 1).await;
    // "hello there" matches no knowledge: the assistant handed off. Take it back.
    let conversation = app.conversations(&tenant).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .api(&tenant)
        .post(format!(
            "{}/api/v1/conversations/{conversation}/release",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A later, different update is answered: by then the copies would have been too.
    let next = private_text(892252999, 6558, user, "what are your opening hours?");
    assert_eq!(
        deliver(&app, &channel, Some(SECRET), &next).await.status(),
        200
    );
    wait_sent(&bot, 2).await;
    let sent = bot.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|m| m["chat_id"] == user));
    assert!(sent[1]["text"].as_str().unwrap().contains("9:00 to 17:00"));
    let inbound = app.all_messages(&tenant).await;
    assert_eq!(
        inbound
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count(),
        2
    );
}

async fn a_user_who_blocked_the_bot_gets_nothing_more(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    let user = 4242;
    deliver(
        &app,
        &channel,
        Some(SECRET),
        &private_text(1, 1, user, "opening hours?"),
    )
    .await;
    wait_sent(&bot, 1).await;
    let member = |update_id: i64, status: &str| {
        json!({"update_id": update_id, "my_chat_member": {
            "chat": {"id": user, "first_name": "Waffle", "type": "private"},
            "from": {"id": user, "is_bot": false, "first_name": "Waffle", "username": "waffle"},
            "date": 1_750_000_002,
            "old_chat_member": {"user": {"id": 7001, "is_bot": true, "first_name": "Shop"}, "status": "member"},
            "new_chat_member": {"user": {"id": 7001, "is_bot": true, "first_name": "Shop"}, "status": status, "until_date": 0}}})
        .to_string()
    };
    assert_eq!(
        deliver(&app, &channel, Some(SECRET), &member(2, "kicked"))
            .await
            .status(),
        200
    );
    // The next message is later than the block: the worker handles a chat's updates
    // in platform order, so the block is recorded before its reply is queued.
    deliver(
        &app,
        &channel,
        Some(SECRET),
        &private_text(3, 2, user, "opening hours again?"),
    )
    .await;
    // The block is a platform signal in the consent ledger: the assistant does not
    // process the next message (it is stored for the people of the business).
    wait_until("message after the block stored", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["text"] == "opening hours again?")
    })
    .await;
    let conversations = app.conversations(&tenant).await;
    let conversation = conversations[0]["id"].as_str().expect("conversation");
    let contact = conversations[0]["contact_id"].as_str().expect("contact");
    let (_, profile) = app
        .get_json(&tenant, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(profile["consent"]["ai_processing"], false, "{profile}");
    // Not even a person's reply reaches a chat that blocked the bot: it is given up.
    let res = app
        .http
        .post(format!(
            "{}/api/v1/conversations/{conversation}/messages",
            app.url
        ))
        .bearer_auth(&tenant.key)
        .json(&json!({"text": "Are you still there?"}))
        .send()
        .await
        .expect("agent reply");
    assert_eq!(res.status(), 202);
    wait_until("reply to a blocked user failed", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["direction"] == "outbound" && m["status"] == "failed")
    })
    .await;
    assert_eq!(bot.sent().len(), 1);
}

async fn a_button_tap_is_acknowledged_and_answered(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    let res = deliver(&app, &channel, Some(SECRET), CALLBACK).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"method": "answerCallbackQuery", "callback_query_id": "1"})
    );
    wait_until("button tap stored", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .any(|m| m["kind"] == "interactive" && m["text"] == "confirm_profile")
    })
    .await;
    wait_sent(&bot, 1).await;
    assert_eq!(bot.sent()[0]["chat_id"], 1);
}

async fn groups_are_answered_only_when_the_bot_is_addressed(backend: Backend) {
    let (app, bot, tenant, channel) = setup(backend).await;
    let group = |update_id: i64, text: &str, entities: Value| {
        json!({"update_id": update_id, "message": {"message_id": update_id, "message_thread_id": 77,
            "is_topic_message": true,
            "from": {"id": 55, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": -100123, "title": "Support", "type": "supergroup", "is_forum": true},
            "date": 1_750_000_000, "text": text, "entities": entities}})
        .to_string()
    };
    // Chatter among members: not for the bot.
    assert_eq!(
        deliver(
            &app,
            &channel,
            Some(SECRET),
            &group(10, "lunch at noon?", json!([]))
        )
        .await
        .status(),
        200
    );
    // A command for another bot: not for this one either.
    deliver(
        &app,
        &channel,
        Some(SECRET),
        &group(
            11,
            "/start@other_bot",
            json!([{"type": "bot_command", "offset": 0, "length": 16}]),
        ),
    )
    .await;
    // A mention of this bot: answered, in the topic.
    deliver(
        &app,
        &channel,
        Some(SECRET),
        &group(
            12,
            "@shop_bot opening hours?",
            json!([{"type": "mention", "offset": 0, "length": 9}]),
        ),
    )
    .await;
    wait_sent(&bot, 1).await;
    let sent = bot.sent();
    assert_eq!(sent[0]["chat_id"], -100123);
    assert_eq!(sent[0]["message_thread_id"], 77);
    let inbound: Vec<Value> = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(sent.len(), 1);
}

async fn flood_control_is_honoured_and_the_reply_sent_once(backend: Backend) {
    let (app, bot, _tenant, channel) = setup(backend).await;
    bot.state.lock().unwrap().send_script.push((
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
    ));
    deliver(
        &app,
        &channel,
        Some(SECRET),
        &private_text(1, 1, 31, "opening hours?"),
    )
    .await;
    wait_sent(&bot, 1).await;
    let more = private_text(2, 2, 31, "and on holidays?");
    deliver(&app, &channel, Some(SECRET), &more).await;
    wait_sent(&bot, 2).await;
    assert_eq!(bot.sent().len(), 2);
    assert!(bot.state.lock().unwrap().send_script.is_empty());
}
