//! Meta's data-deletion callback: `signed_request` checks, the answer Meta expects,
//! the status page, and the erasure of the person.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::meta::{connect, count, now_ms};
use crate::on_both_backends;

on_both_backends!(bad_signed_requests_are_400_and_good_ones_get_a_status_page);

/// The published vector (fixtures/meta-deletion/signed-request-vector.json).
const VECTOR_SECRET: &str = "client_secret_shhhhhh!";
const VECTOR: &str = "w5ZbbWP9yOwBA1uJZbc7-9gZok0O42U4i0yyvxXE_jY.eyJhbGdvcml0aG0iOiJITUFDLVNIQTI1NiIsImV4cGlyZXMiOjEyOTE4NDA0MDAsImlzc3VlZF9hdCI6MTI5MTgzNjgwMCwidXNlcl9pZCI6IjIxODQ3MSJ9";

pub fn signed_request(secret: &str, user_id: &str) -> String {
    let payload =
        json!({"algorithm": "HMAC-SHA256", "issued_at": now_ms() / 1000, "user_id": user_id});
    webhooks::signed_request::sign_signed_request(secret.as_bytes(), payload.to_string().as_bytes())
}

pub async fn post_form(app: &TestApp, path: &str, signed_request: &str) -> (u16, Value) {
    let res = app
        .http
        .post(format!("{}{path}", app.url))
        .form(&[("signed_request", signed_request)])
        .send()
        .await
        .expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn bad_signed_requests_are_400_and_good_ones_get_a_status_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = connect(
        &app,
        &tenant,
        "instagram",
        "17841400000000002",
        Some(VECTOR_SECRET),
    )
    .await;
    let own = format!("/webhooks/instagram/{channel}/data-deletion");
    let shared = "/webhooks/meta/data-deletion";

    // Tampered, wrongly keyed, malformed, or not a form: 400 and nothing recorded.
    let (sig, payload) = VECTOR.split_once('.').expect("vector");
    let tampered = format!("{sig}.{}", &payload.replace('J', "K"));
    for (path, request) in [
        (own.as_str(), tampered.as_str()),
        (own.as_str(), &signed_request(OPERATOR_SECRET, "218471")),
        (shared, VECTOR),
        (shared, "not-a-signed-request"),
        (shared, ""),
    ] {
        let (status, body) = post_form(&app, path, request).await;
        assert_eq!(status, 400, "{path} {request}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let res = app
        .http
        .post(format!("{}{shared}", app.url))
        .json(&json!({"signed_request": VECTOR}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 400);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM data_deletion_requests").await,
        0
    );

    // The published vector on the channel keyed with its secret.
    let (status, body) = post_form(&app, &own, VECTOR).await;
    assert_eq!(status, 200, "{body}");
    let code = body["confirmation_code"]
        .as_str()
        .expect("code")
        .to_string();
    assert!(
        code.len() >= 16 && code.chars().all(|c| c.is_ascii_alphanumeric()),
        "{code}"
    );
    assert_eq!(body["url"], format!("{}/data-deletion/{code}", app.url));
    // The operator app's route, keyed with the operator secret; each request its own code.
    let (status, second) =
        post_form(&app, shared, &signed_request(OPERATOR_SECRET, "218471")).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["confirmation_code"], body["confirmation_code"]);

    // The status page: the request, never the person.
    let page = app
        .http
        .get(body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("status");
    assert_eq!(page.status(), 200);
    let text = page.text().await.expect("text");
    let status: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(status["confirmation_code"], code);
    assert!(["pending", "completed"].contains(&status["status"].as_str().unwrap_or_default()));
    assert!(!text.contains("218471"), "{text}");
    let missing = app
        .http
        .get(format!("{}/data-deletion/NOPE", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
}
