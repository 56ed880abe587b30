//! The bad inputs of docs/bad-inputs.md, each sent to a running gateway: every one
//! gets the status the table lists, and none of them becomes a customer message (the
//! one legitimate delivery, sent first and replayed, is stored exactly once; a signed
//! message of an unknown type is kept as an unsupported message). Meta and Slack in
//! one test, Telegram and Discord in another.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::fake_slack::{unix_now, FakeSlack};
use crate::helpers::*;

const A_SECRET: &str = "tenant-a-secret";
const B_SECRET: &str = "tenant-b-secret";
const SLACK_SECRET: &str = "tenant-a-slack-secret";

crate::on_both_backends!(
    bad_inputs_get_their_status_and_store_nothing,
    telegram_and_discord_bad_inputs_get_their_status_and_store_nothing,
);

/// One row of the table: what is sent, where, and the status it must get.
struct Case {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
}

fn meta(name: &'static str, path: &str, secret: Option<&str>, body: Vec<u8>, status: u16) -> Case {
    let headers = secret
        .map(|s| {
            vec![(
                "x-hub-signature-256",
                webhooks::meta::sign(s.as_bytes(), &body),
            )]
        })
        .unwrap_or_default();
    Case {
        name,
        path: path.to_string(),
        headers,
        body,
        status,
    }
}

fn slack_headers(ts: i64, sig_ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        (
            "x-slack-signature",
            webhooks::slack::sign(SLACK_SECRET.as_bytes(), &sig_ts.to_string(), body),
        ),
    ]
}

/// Sends every case and checks the status each gets.
async fn send_all(app: &TestApp, cases: &[Case]) {
    for case in cases {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in &case.headers {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value.as_bytes()).expect("header"),
            );
        }
        let res = app
            .http
            .post(format!("{}{}", app.url, case.path))
            .headers(headers)
            .body(case.body.clone())
            .send()
            .await
            .expect(case.name);
        assert_eq!(res.status().as_u16(), case.status, "{}", case.name);
    }
}

/// The reasons of the unhandled events kept for `tenant`, per platform, sorted.
async fn unhandled(app: &TestApp, tenant: &Tenant, platform: &str) -> Vec<String> {
    let (status, body) = app.get_json(tenant, "/api/v1/events/unhandled").await;
    assert_eq!(status, 200);
    let mut reasons: Vec<String> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|u| u["platform"] == platform)
        .map(|u| u["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    reasons.sort();
    reasons
}

async fn bad_inputs_get_their_status_and_store_nothing(backend: Backend) {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config()).await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    let a_wa = app.create_whatsapp(&a, "5001", Some(A_SECRET)).await;
    let b_wa = app.create_whatsapp(&b, "5002", Some(B_SECRET)).await;
    let res = app
        .api(&a)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "slack", "team_id": "T0BAD", "bot_token": "xoxb-bad-input", "signing_secret": SLACK_SECRET}))
        .send()
        .await
        .expect("create slack channel");
    assert_eq!(res.status(), 201);
    let a_slack = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let wa = format!("/webhooks/whatsapp/{a_wa}");
    let legit = wa_texts("5001", &[("15550001111", "wamid.legit", "hello")]).into_bytes();
    let bad_text =
        |wamid: &str| wa_texts("5001", &[("15550002222", wamid, "not to be stored")]).into_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let slack_body = json!({
        "token": "x", "team_id": "T0BAD", "api_app_id": "A1", "type": "event_callback",
        "event_id": "Ev0BAD", "event_time": now,
        "authorizations": [{"team_id": "T0BAD", "user_id": "U0BOT", "is_bot": true}],
        "event": {"type": "message", "channel_type": "im", "channel": "D0BAD", "user": "U0CUSTOMER", "text": "not to be stored", "ts": "1750000000.000100"}
    })
    .to_string()
    .into_bytes();
    let slack_path = format!("/webhooks/slack/{a_slack}");

    let mut tampered = bad_text("wamid.tampered");
    let tampered_sig = webhooks::meta::sign(A_SECRET.as_bytes(), &tampered);
    tampered[40] ^= 1;
    let truncated_full = bad_text("wamid.truncated");
    let truncated_sig = webhooks::meta::sign(A_SECRET.as_bytes(), &truncated_full);
    let oversized = {
        let mut body = bad_text("wamid.oversized");
        body.resize(omnigate::inbound::MAX_BODY + 1, b' ');
        body
    };
    let nested = format!(
        "{{\"object\":\"whatsapp_business_account\",\"entry\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    )
    .into_bytes();
    let unknown_object = json!({"object": "mystery_object", "entry": [{"id": "5001", "changes": [{"field": "messages", "value": {"messages": [{"id": "wamid.mystery", "from": "15550002222", "type": "text", "text": {"body": "x"}}]}}]}]}).to_string().into_bytes();
    let unknown_type = wa_texts("5001", &[("15550002222", "wamid.unknowntype", "x")])
        .replace("\"type\":\"text\"", "\"type\":\"hologram\"")
        .into_bytes();

    let cases = vec![
        meta(
            "meta: missing signature",
            &wa,
            None,
            bad_text("wamid.nosig"),
            401,
        ),
        meta(
            "meta: signed with another secret",
            &wa,
            Some("not-the-secret"),
            bad_text("wamid.wrongsecret"),
            401,
        ),
        Case {
            name: "meta: malformed signature header",
            path: wa.clone(),
            headers: vec![("x-hub-signature-256", "sha256=zz".into())],
            body: bad_text("wamid.malformed"),
            status: 401,
        },
        Case {
            name: "meta: body changed after signing",
            path: wa.clone(),
            headers: vec![("x-hub-signature-256", tampered_sig)],
            body: tampered,
            status: 401,
        },
        Case {
            name: "meta: truncated body, signature of the whole",
            path: wa.clone(),
            headers: vec![("x-hub-signature-256", truncated_sig)],
            body: truncated_full[..truncated_full.len() / 2].to_vec(),
            status: 401,
        },
        meta(
            "meta: oversized body (1 MiB + 1)",
            &wa,
            Some(A_SECRET),
            oversized,
            413,
        ),
        meta(
            "meta: truncated body, signed as sent",
            &wa,
            Some(A_SECRET),
            truncated_full[..truncated_full.len() / 2].to_vec(),
            200,
        ),
        meta(
            "meta: non-UTF-8 body, signed",
            &wa,
            Some(A_SECRET),
            vec![0xff, 0xfe, b'{', 0x80, b'}'],
            200,
        ),
        meta(
            "meta: JSON nested 5,000 deep, signed",
            &wa,
            Some(A_SECRET),
            nested,
            200,
        ),
        meta(
            "meta: unknown object type, signed",
            &wa,
            Some(A_SECRET),
            unknown_object,
            200,
        ),
        meta(
            "meta: unknown message type, signed",
            &wa,
            Some(A_SECRET),
            unknown_type,
            200,
        ),
        meta(
            "meta: other tenant's channel, our secret",
            &format!("/webhooks/whatsapp/{b_wa}"),
            Some(A_SECRET),
            bad_text("wamid.crosstenant"),
            401,
        ),
        meta(
            "meta: other tenant's account id on its own route",
            &format!("/webhooks/whatsapp/{b_wa}"),
            Some(B_SECRET),
            bad_text("wamid.mismatch"),
            200,
        ),
        meta(
            "meta: unknown channel id",
            "/webhooks/whatsapp/00000000-0000-0000-0000-000000000000",
            Some(A_SECRET),
            bad_text("wamid.nochannel"),
            404,
        ),
        meta(
            "meta: channel id under another platform",
            &format!("/webhooks/messenger/{a_wa}"),
            Some(A_SECRET),
            bad_text("wamid.wrongplatform"),
            404,
        ),
        meta(
            "meta: shared route, unknown account",
            "/webhooks/meta",
            Some(OPERATOR_SECRET),
            wa_texts("9999999", &[("15550002222", "wamid.unknownaccount", "x")]).into_bytes(),
            200,
        ),
        meta(
            "meta: shared route, tenant's own secret",
            "/webhooks/meta",
            Some(A_SECRET),
            bad_text("wamid.sharedwrong"),
            401,
        ),
        Case {
            name: "slack: missing signature",
            path: slack_path.clone(),
            headers: vec![("x-slack-request-timestamp", now.to_string())],
            body: slack_body.clone(),
            status: 401,
        },
        Case {
            name: "slack: missing timestamp",
            path: slack_path.clone(),
            headers: slack_headers(now, now, &slack_body)[1..].to_vec(),
            body: slack_body.clone(),
            status: 401,
        },
        Case {
            name: "slack: stale timestamp (10 min old), signed",
            path: slack_path.clone(),
            headers: slack_headers(now - 600, now - 600, &slack_body),
            body: slack_body.clone(),
            status: 401,
        },
        Case {
            name: "slack: future timestamp (10 min ahead), signed",
            path: slack_path.clone(),
            headers: slack_headers(now + 600, now + 600, &slack_body),
            body: slack_body.clone(),
            status: 401,
        },
        Case {
            name: "slack: replayed signature under a fresh timestamp",
            path: slack_path.clone(),
            headers: slack_headers(now, now - 400, &slack_body),
            body: slack_body.clone(),
            status: 401,
        },
        Case {
            name: "slack: non-numeric timestamp",
            path: slack_path.clone(),
            headers: vec![
                ("x-slack-request-timestamp", "12e9".into()),
                (
                    "x-slack-signature",
                    webhooks::slack::sign(SLACK_SECRET.as_bytes(), "12e9", &slack_body),
                ),
            ],
            body: slack_body.clone(),
            status: 401,
        },
    ];

    // The one legitimate delivery, then its replay.
    for _ in 0..2 {
        assert_eq!(
            app.post_signed(&wa, A_SECRET, std::str::from_utf8(&legit).expect("utf8"))
                .await,
            200
        );
    }
    send_all(&app, &cases).await;

    // Only the legitimate message, once, in either tenant.
    wait_until("the legitimate message stored", || async {
        !app.all_messages(&a).await.is_empty()
    })
    .await;
    let inbound = |all: Vec<Value>| {
        all.into_iter()
            .filter(|m| m["direction"] == "inbound")
            .map(|m| m["external_id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    // A signed message of a type we do not model is the customer's own message: it
    // is kept as an unsupported message (and raw as unhandled), never as text.
    let mut a_inbound = inbound(app.all_messages(&a).await);
    a_inbound.sort();
    assert_eq!(
        a_inbound,
        vec!["wamid.legit".to_string(), "wamid.unknowntype".to_string()]
    );
    assert!(inbound(app.all_messages(&b).await).is_empty());

    // What was signed but not understood is kept, under the tenant it was sent to.
    let reasons = |tenant: &Tenant| {
        let app = &app;
        let tenant = tenant.clone();
        async move {
            let (status, body) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
            assert_eq!(status, 200);
            body["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|u| u["reason"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    let mut a_reasons = reasons(&a).await;
    a_reasons.sort();
    // Truncated, non-UTF-8 and deeply nested bodies kept raw; unknown object and
    // message types kept with their reason.
    assert_eq!(
        a_reasons,
        [
            "type:hologram",
            "unknown_object:mystery_object",
            "unparseable",
            "unparseable",
            "unparseable"
        ]
    );
    let b_reasons = reasons(&b).await;
    assert!(
        b_reasons.iter().any(|r| r == "account_mismatch"),
        "{b_reasons:?}"
    );
    eprintln!("tenant A kept as unhandled: {a_reasons:?}; tenant B: {b_reasons:?}");
    drop(slack);
}

const A_TOKEN: &str = "tenant-a-secret_TOKEN";
const B_TOKEN: &str = "tenant-b-secret_TOKEN";

fn telegram(
    name: &'static str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    status: u16,
) -> Case {
    Case {
        name,
        path: path.to_string(),
        headers: token
            .map(|t| vec![("x-telegram-bot-api-secret-token", t.to_string())])
            .unwrap_or_default(),
        body,
        status,
    }
}

fn discord_headers(seed: &[u8; 32], ts: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-signature-timestamp", ts.to_string()),
        (
            "x-signature-ed25519",
            webhooks::discord::sign(seed, ts, body),
        ),
    ]
}

/// A case signed now, the way Discord signs.
fn discord(name: &'static str, path: &str, seed: &[u8; 32], body: Vec<u8>, status: u16) -> Case {
    Case {
        name,
        path: path.to_string(),
        headers: discord_headers(seed, &unix_now().to_string(), &body),
        body,
        status,
    }
}

async fn create(app: &TestApp, tenant: &Tenant, body: Value) -> String {
    let res = app
        .api(tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&body)
        .send()
        .await
        .expect("create channel");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Telegram's secret token and Discord's Ed25519 signature, with the same classes
/// of bad input as above: missing, wrong, truncated and replayed credentials,
/// oversized, truncated, non-UTF-8 and deeply nested bodies, unknown update and
/// interaction types, other tenants' channels. Only the legitimate Telegram message
/// is stored (once, though delivered twice); the rest is refused or kept unhandled.
async fn telegram_and_discord_bad_inputs_get_their_status_and_store_nothing(backend: Backend) {
    let bot_api = crate::telegram::FakeBotApi::start().await;
    let app = TestApp::spawn_with(
        backend,
        &format!(
            "[platforms.telegram]\napi_url = \"{}\"\n[platforms.discord]\napi_url = \"http://127.0.0.1:9/api/v10\"\n",
            bot_api.url
        ),
    )
    .await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    let a_tg = create(
        &app,
        &a,
        json!({"platform": "telegram", "bot_token": "7001:AAH-alpha", "secret_token": A_TOKEN}),
    )
    .await;
    let b_tg = create(
        &app,
        &b,
        json!({"platform": "telegram", "bot_token": "7002:AAH-beta", "secret_token": B_TOKEN}),
    )
    .await;
    let a_seed = [1u8; 32];
    let b_seed = [2u8; 32];
    let discord_channel = |seed: &[u8; 32], app_id: &str| {
        json!({"platform": "discord", "bot_token": format!("bot-{app_id}"), "application_id": app_id,
               "public_key": webhooks::discord::public_key_hex(seed)})
    };
    let a_dc = create(&app, &a, discord_channel(&a_seed, "1100000000000000001")).await;
    let b_dc = create(&app, &b, discord_channel(&b_seed, "1100000000000000002")).await;

    let tg = format!("/webhooks/telegram/{a_tg}");
    let dc = format!("/webhooks/discord/{a_dc}");
    let update = |update_id: i64, text: &str| {
        json!({"update_id": update_id, "message": {"message_id": update_id, "date": 1_750_000_000,
            "from": {"id": 4242, "is_bot": false, "first_name": "Tess"},
            "chat": {"id": 4242, "first_name": "Tess", "type": "private"}, "text": text}})
        .to_string()
        .into_bytes()
    };
    let legit = update(500, "hello from telegram");
    let bad = |id: i64| update(id, "not to be stored");
    let oversized = |mut body: Vec<u8>| {
        body.resize(omnigate::inbound::MAX_BODY + 1, b' ');
        body
    };
    let nested = |key: &str| {
        format!(
            "{{\"{key}\":2,\"x\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        )
        .into_bytes()
    };
    let truncated = {
        let whole = bad(510);
        whole[..whole.len() / 2].to_vec()
    };
    let group_chatter = json!({"update_id": 511, "message": {"message_id": 511, "date": 1_750_000_000,
        "from": {"id": 4243, "is_bot": false, "first_name": "Gus"},
        "chat": {"id": -100_777, "title": "Fans", "type": "supergroup"}, "text": "chatting among ourselves"}})
    .to_string()
    .into_bytes();
    let interaction = |kind: u64, id: &str| {
        json!({"application_id": "1100000000000000001", "id": id, "token": "t", "type": kind,
               "version": 1, "data": {"name": "help"},
               "user": {"id": "80351110224678912", "username": "nelly"}})
        .to_string()
        .into_bytes()
    };
    let command = interaction(2, "1200000000000000001");
    let recent = interaction(2, "1200000000000000003");
    let now = unix_now();
    let ts = now.to_string();
    let mut tampered = command.clone();
    let tampered_headers = discord_headers(&a_seed, &ts, &tampered);
    tampered[20] ^= 1;
    let short_sig = {
        let mut h = discord_headers(&a_seed, &ts, &command);
        h[1].1.pop();
        h
    };

    let cases = vec![
        telegram("telegram: missing secret token", &tg, None, bad(501), 401),
        telegram("telegram: wrong secret token", &tg, Some("not-the-token"), bad(502), 401),
        telegram(
            "telegram: another tenant's secret token",
            &tg,
            Some(B_TOKEN),
            bad(503),
            401,
        ),
        telegram(
            "telegram: secret token in another case",
            &tg,
            Some(&A_TOKEN.to_uppercase()),
            bad(504),
            401,
        ),
        telegram(
            "telegram: secret token one character short",
            &tg,
            Some(&A_TOKEN[..A_TOKEN.len() - 1]),
            bad(505),
            401,
        ),
        telegram(
            "telegram: empty secret token",
            &tg,
            Some(""),
            bad(506),
            401,
        ),
        telegram(
            "telegram: oversized body (1 MiB + 1), right token",
            &tg,
            Some(A_TOKEN),
            oversized(bad(507)),
            413,
        ),
        telegram(
            "telegram: truncated body, right token",
            &tg,
            Some(A_TOKEN),
            truncated,
            200,
        ),
        telegram(
            "telegram: non-UTF-8 body, right token",
            &tg,
            Some(A_TOKEN),
            vec![0xff, 0xfe, b'{', 0x80, b'}'],
            200,
        ),
        telegram(
            "telegram: JSON nested 5,000 deep, right token",
            &tg,
            Some(A_TOKEN),
            nested("update_id"),
            200,
        ),
        telegram(
            "telegram: no update_id, right token",
            &tg,
            Some(A_TOKEN),
            br#"{"message": {"text": "x"}}"#.to_vec(),
            200,
        ),
        telegram(
            "telegram: unknown update type, right token",
            &tg,
            Some(A_TOKEN),
            br#"{"update_id": 512, "mystery_update": {"id": 1}}"#.to_vec(),
            200,
        ),
        telegram(
            "telegram: update type the bot does not take, right token",
            &tg,
            Some(A_TOKEN),
            br#"{"update_id": 513, "poll": {"id": "1", "question": "?", "options": [], "total_voter_count": 0, "is_closed": false, "is_anonymous": true, "type": "regular", "allows_multiple_answers": false}}"#.to_vec(),
            200,
        ),
        telegram(
            "telegram: message without a chat, right token",
            &tg,
            Some(A_TOKEN),
            br#"{"update_id": 514, "message": {"message_id": 1, "date": 1750000000, "text": "x"}}"#.to_vec(),
            200,
        ),
        telegram(
            "telegram: update_id beyond the Bot API's range, right token",
            &tg,
            Some(A_TOKEN),
            update(5_000_000_000, "not to be stored"),
            200,
        ),
        telegram(
            "telegram: group chatter not addressed to the bot",
            &tg,
            Some(A_TOKEN),
            group_chatter,
            200,
        ),
        telegram(
            "telegram: other tenant's channel, our token",
            &format!("/webhooks/telegram/{b_tg}"),
            Some(A_TOKEN),
            bad(515),
            401,
        ),
        telegram(
            "telegram: unknown channel id",
            "/webhooks/telegram/00000000-0000-0000-0000-000000000000",
            Some(A_TOKEN),
            bad(516),
            404,
        ),
        telegram(
            "telegram: channel id under another platform",
            &format!("/webhooks/discord/{a_tg}"),
            Some(A_TOKEN),
            bad(517),
            404,
        ),
        Case {
            name: "discord: missing signature",
            path: dc.clone(),
            headers: discord_headers(&a_seed, &ts, &command)[..1].to_vec(),
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: missing timestamp",
            path: dc.clone(),
            headers: discord_headers(&a_seed, &ts, &command)[1..].to_vec(),
            body: command.clone(),
            status: 401,
        },
        discord(
            "discord: signed with another application's key",
            &dc,
            &b_seed,
            command.clone(),
            401,
        ),
        Case {
            name: "discord: signature one hex digit short",
            path: dc.clone(),
            headers: short_sig,
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: signature not hex",
            path: dc.clone(),
            headers: vec![
                ("x-signature-timestamp", ts.clone()),
                ("x-signature-ed25519", "zz".repeat(64)),
            ],
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: body changed after signing",
            path: dc.clone(),
            headers: tampered_headers,
            body: tampered,
            status: 401,
        },
        Case {
            name: "discord: signature replayed under another timestamp",
            path: dc.clone(),
            headers: vec![
                ("x-signature-timestamp", (now - 1).to_string()),
                (
                    "x-signature-ed25519",
                    webhooks::discord::sign(&a_seed, &ts, &command),
                ),
            ],
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: stale timestamp (6 min old), signed",
            path: dc.clone(),
            headers: discord_headers(&a_seed, &(now - 360).to_string(), &command),
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: future timestamp (6 min ahead), signed",
            path: dc.clone(),
            headers: discord_headers(&a_seed, &(now + 360).to_string(), &command),
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: non-numeric timestamp (`12e9`), signed",
            path: dc.clone(),
            headers: discord_headers(&a_seed, "12e9", &command),
            body: command.clone(),
            status: 401,
        },
        Case {
            name: "discord: timestamp 4 min old, signed",
            path: dc.clone(),
            headers: discord_headers(&a_seed, &(now - 240).to_string(), &recent),
            body: recent.clone(),
            status: 200,
        },
        discord(
            "discord: oversized body (1 MiB + 1), signed",
            &dc,
            &a_seed,
            oversized(command.clone()),
            413,
        ),
        discord(
            "discord: non-UTF-8 body, signed",
            &dc,
            &a_seed,
            vec![0xff, 0xfe, b'{', 0x80, b'}'],
            200,
        ),
        discord(
            "discord: no interaction type, signed",
            &dc,
            &a_seed,
            br#"{"id": "1", "application_id": "1100000000000000001"}"#.to_vec(),
            200,
        ),
        discord(
            "discord: JSON nested 5,000 deep, signed",
            &dc,
            &a_seed,
            nested("type"),
            200,
        ),
        discord(
            "discord: application command (not modelled), signed",
            &dc,
            &a_seed,
            command.clone(),
            200,
        ),
        discord(
            "discord: unknown interaction type, signed",
            &dc,
            &a_seed,
            interaction(99, "1200000000000000002"),
            200,
        ),
        discord(
            "discord: other tenant's channel, our key",
            &format!("/webhooks/discord/{b_dc}"),
            &a_seed,
            command.clone(),
            401,
        ),
        discord(
            "discord: unknown channel id",
            "/webhooks/discord/00000000-0000-0000-0000-000000000000",
            &a_seed,
            command.clone(),
            404,
        ),
    ];

    // The one legitimate Telegram update, then its redelivery.
    for _ in 0..2 {
        send_all(
            &app,
            &[telegram(
                "telegram: legitimate update",
                &tg,
                Some(A_TOKEN),
                legit.clone(),
                200,
            )],
        )
        .await;
    }
    send_all(&app, &cases).await;

    wait_until("the legitimate message stored", || async {
        !app.all_messages(&a).await.is_empty()
    })
    .await;
    let inbound = |all: Vec<Value>| {
        all.into_iter()
            .filter(|m| m["direction"] == "inbound")
            .map(|m| m["external_id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(inbound(app.all_messages(&a).await), ["4242:500"]);
    assert!(inbound(app.all_messages(&b).await).is_empty());
    assert_eq!(
        unhandled(&app, &a, "telegram").await,
        [
            "unhandled_update",
            "unknown_update",
            "unknown_update",
            "unparseable",
            "unparseable",
            "unparseable",
            "unparseable",
            "unreadable_update",
        ]
    );
    assert_eq!(
        unhandled(&app, &a, "discord").await,
        [
            "interaction:2",
            "interaction:2",
            "interaction:99",
            "unparseable",
            "unparseable",
            "unparseable",
        ]
    );
    let (_, b_unhandled) = app.get_json(&b, "/api/v1/events/unhandled").await;
    assert_eq!(b_unhandled["items"], json!([]));
}
