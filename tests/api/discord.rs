//! Discord: the interactions endpoint (Ed25519, PING) and the gateway session lease
//! that lets exactly one instance hold each bot's session.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_ping_is_answered_and_a_bad_signature_is_401,
    one_instance_holds_a_gateway_lease_and_another_takes_over,
);

const PING: &str =
    include_str!("../../channels/tests/fixtures/discord/interaction-ping-signed.json");

async fn a_ping_is_answered_and_a_bad_signature_is_401(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[platforms.discord]\napi_url = \"http://127.0.0.1:9/api/v10\"\n",
    )
    .await;
    let tenant = app.create_tenant("Acme").await;
    let fixture: Value = serde_json::from_str(PING).unwrap();
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(
            &json!({"platform": "discord", "bot_token": "discord-bot-token",
                      "application_id": "1234560123453231555",
                      "public_key": fixture["public_key_hex"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let channel = created["id"].as_str().unwrap();
    assert_eq!(
        created["webhook_url"],
        format!("{}/webhooks/discord/{channel}", app.url)
    );
    let body = fixture["raw_body"].as_str().unwrap();
    let signature = fixture["headers"]["X-Signature-Ed25519"].as_str().unwrap();
    let timestamp = fixture["headers"]["X-Signature-Timestamp"]
        .as_str()
        .unwrap();
    let post = |body: String, signature: Option<&str>, timestamp: &str| {
        let mut req = app
            .http
            .post(format!("{}/webhooks/discord/{channel}", app.url))
            .header("content-type", "application/json")
            .header("x-signature-timestamp", timestamp.to_string())
            .body(body);
        if let Some(sig) = signature {
            req = req.header("x-signature-ed25519", sig.to_string());
        }
        req.send()
    };
    let res = post(body.to_string(), Some(signature), timestamp)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"type": 1}));

    let tampered = body.replace("nelly", "nellx");
    assert_eq!(
        post(tampered, Some(signature), timestamp)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(body.to_string(), Some(signature), "1731000001")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(body.to_string(), None, timestamp)
            .await
            .unwrap()
            .status(),
        401
    );
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"].as_array().unwrap().len(), 0);

    // A signed interaction we do not model yet: kept raw, answered so the user is
    // not left waiting.
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    let command = r#"{"application_id":"1234560123453231555","id":"99","token":"t","type":2,"data":{"name":"help"},"version":1}"#;
    let signed = webhooks::discord::sign(&seed, "1731000002", command.as_bytes());
    let res = post(command.to_string(), Some(&signed), "1731000002")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["type"], 4);
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"].as_array().unwrap().len(), 1);
}

/// Two gateway instances on one database: the first takes a bot's session lease,
/// the second cannot while the first holds it, and takes it as soon as the first
/// stops (its connection closes). On SQLite the single instance always holds it.
async fn one_instance_holds_a_gateway_lease_and_another_takes_over(backend: Backend) {
    let db = TestDb::create(&backend).await;
    let url = omnigate::config::DatabaseUrl::new(db.url.clone());
    let first = omnigate::store::open(&url).await.unwrap();
    let key = "discord-gateway:channel-1";
    let mut held = first
        .try_lease(key)
        .await
        .unwrap()
        .expect("first instance takes the lease");
    assert!(held.held().await);
    if matches!(backend, Backend::Sqlite) {
        return;
    }
    let second = omnigate::store::open(&url).await.unwrap();
    assert!(
        second.try_lease(key).await.unwrap().is_none(),
        "two holders"
    );
    assert!(
        second
            .try_lease("discord-gateway:channel-2")
            .await
            .unwrap()
            .is_some(),
        "another bot's lease is free"
    );
    // The first instance stops: its lease goes with its connection.
    drop(held);
    drop(first);
    wait_until("second instance takes over", || {
        let second = second.clone();
        async move { second.try_lease(key).await.unwrap().is_some() }
    })
    .await;
}
