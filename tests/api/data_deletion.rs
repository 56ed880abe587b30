//! Meta's data-deletion callback: `signed_request` checks, the answer Meta expects,
//! the status page, and the erasure of the person.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::meta::{connect, count, database_holds, delivery, now_ms, text};
use crate::on_both_backends;

on_both_backends!(
    bad_signed_requests_are_400_and_good_ones_get_a_status_page,
    deletion_request_erases_the_person_on_that_app_only,
);

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

async fn deletion_request_erases_the_person_on_that_app_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("Acme").await;
    let beta = app.create_tenant("Beta").await;
    // Acme's Page receives through the operator app; Beta's Instagram has its own app.
    connect(&app, &acme, "messenger", "7201", None).await;
    let own = connect(
        &app,
        &beta,
        "instagram",
        "17841400000000003",
        Some("ig-own-secret"),
    )
    .await;
    let (person, neighbour) = ("2180001", "2180002");
    let canary = "canary-erase-5d1e90";
    let now = now_ms();
    let page_body = delivery(
        "page",
        &[(
            "7201",
            vec![
                text(
                    "7201",
                    person,
                    "m.D1",
                    &format!("my address is {canary}"),
                    now,
                ),
                text("7201", neighbour, "m.D2", "neighbour stays", now + 1),
            ],
        )],
    );
    assert_eq!(
        app.post_signed("/webhooks/meta", OPERATOR_SECRET, &page_body)
            .await,
        200
    );
    // The same id in another app (Beta's own) is another person's scope.
    let ig = delivery(
        "instagram",
        &[(
            "17841400000000003",
            vec![text(
                "17841400000000003",
                person,
                "m.D3",
                "beta keeps this",
                now,
            )],
        )],
    );
    let ig_path = format!("/webhooks/instagram/{own}");
    assert_eq!(app.post_signed(&ig_path, "ig-own-secret", &ig).await, 200);
    wait_until("stored", || async {
        app.all_messages(&acme)
            .await
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count()
            == 2
            && !app.all_messages(&beta).await.is_empty()
    })
    .await;
    assert!(database_holds(&app, canary).await);

    let (status, answer) = post_form(
        &app,
        "/webhooks/meta/data-deletion",
        &signed_request(OPERATOR_SECRET, person),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["url"].as_str().expect("url").to_string();
    wait_until("erasure completed", || async {
        let page: Value = app
            .http
            .get(&url)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .unwrap_or_default();
        page["status"] == "completed"
    })
    .await;
    let page = app
        .http
        .get(&url)
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("text");
    assert!(!page.contains(person), "{page}");
    assert!(page.contains("\"erased_contacts\":1"), "{page}");

    // Acme: the person's conversation is gone, the neighbour's stays; the text is nowhere.
    let left: Vec<Value> = app.all_messages(&acme).await;
    assert!(left.iter().all(|m| m["external_id"] != "m.D1"), "{left:?}");
    assert!(left.iter().any(|m| m["external_id"] == "m.D2"));
    assert_eq!(app.conversations(&acme).await.len(), 1);
    wait_until("text gone from the database", || async {
        !database_holds(&app, canary).await
    })
    .await;
    assert_eq!(
        count(&app, &format!("SELECT COUNT(*) FROM contact_identities WHERE external_user_id = '{person}' AND tenant_id = '{}'", acme.id)).await,
        0
    );
    // Beta's own app was not asked: its conversation with the same id stays.
    assert!(app
        .all_messages(&beta)
        .await
        .iter()
        .any(|m| m["external_id"] == "m.D3"));
    // The audit log keeps a tombstone without personal data.
    let (_, audit) = app.get_json(&acme, "/api/v1/audit").await;
    let audit_text = audit.to_string();
    assert!(
        audit_text.contains("meta_data_deletion")
            && !audit_text.contains(canary)
            && !audit_text.contains(person),
        "{audit_text}"
    );
    assert_eq!(audit["chain_ok"], true);

    // Beta's own app asks through its channel route: erased there too.
    let (status, answer) = post_form(
        &app,
        &format!("/webhooks/instagram/{own}/data-deletion"),
        &signed_request("ig-own-secret", person),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["url"].as_str().expect("url").to_string();
    wait_until("second erasure completed", || async {
        let page: Value = app
            .http
            .get(&url)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .unwrap_or_default();
        page["status"] == "completed"
    })
    .await;
    assert!(app.conversations(&beta).await.is_empty());
    // A redelivery of the erased message is not stored or answered again.
    let replies = app.graph.requests().len();
    assert_eq!(
        app.post_signed("/webhooks/meta", OPERATOR_SECRET, &page_body)
            .await,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(app.conversations(&acme).await.len(), 1);
    assert_eq!(app.graph.requests().len(), replies);
}
