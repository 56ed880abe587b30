//! The bad inputs of docs/bad-inputs.md, each sent to a running gateway: every one
//! gets the status the table lists, and none of them becomes a customer message (the
//! one legitimate delivery, sent first and replayed, is stored exactly once; a signed
//! message of an unknown type is kept as an unsupported message).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::fake_slack::FakeSlack;
use crate::helpers::*;

const A_SECRET: &str = "tenant-a-secret";
const B_SECRET: &str = "tenant-b-secret";
const SLACK_SECRET: &str = "tenant-a-slack-secret";

crate::on_both_backends!(bad_inputs_get_their_status_and_store_nothing);

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
    for case in &cases {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in &case.headers {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("header"),
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
