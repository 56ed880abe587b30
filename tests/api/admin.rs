//! The admin API: authentication, tenants, channels, isolation, errors as JSON.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    tenants_are_created_by_the_operator_only,
    channel_secrets_never_leave_or_rest_in_plaintext,
    another_tenants_ids_are_404,
    deleted_channel_stops_receiving_and_loses_its_credentials,
    invalid_bodies_get_json_errors,
    conversations_paginate_with_a_cursor,
);

async fn tenants_are_created_by_the_operator_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/api/v1/tenants", app.url);
    let body = json!({"name": "Acme", "domain": "acme.example.com"});
    let res = app.http.post(&url).json(&body).send().await.expect("post");
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["code"], "unauthorized");
    let res = app
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    let tenant = app.create_tenant("Acme").await;
    assert!(tenant.key.starts_with("og_"));
    assert!(!tenant.id.is_empty() && !tenant.key.contains(&tenant.id));
    // A tenant key cannot create tenants; the operator token is not a tenant key.
    let res = app
        .http
        .post(&url)
        .bearer_auth(&tenant.key)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(format!("{}/api/v1/channels", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
    let (status, body) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!((status, body), (200, json!({"items": []})));
}

async fn channel_secrets_never_leave_or_rest_in_plaintext(backend: Backend) {
    let sqlite = matches!(backend, Backend::Sqlite);
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "whatsapp", "phone_number_id": "4001", "access_token": "EAAG-CANARY-TOKEN-4001",
            "app_secret": "CANARY-APP-SECRET", "verify_token": "CANARY-VERIFY"}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["platform"], "whatsapp");
    assert_eq!(
        created["webhook_url"],
        format!("{}/webhooks/whatsapp/{id}", app.url)
    );
    let listing = app
        .api(&tenant)
        .get(format!("{}/api/v1/channels", app.url))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert!(listing.contains(id));
    assert!(!listing.contains("CANARY"), "{listing}");
    // A channel without its own secret receives on the operator app's shared route.
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&json!({"platform": "whatsapp", "phone_number_id": "4002", "access_token": "EAAG-CANARY-TOKEN-4002"}))
        .send()
        .await
        .expect("create");
    let shared: Value = res.json().await.expect("json");
    assert_eq!(shared["webhook_url"], format!("{}/webhooks/meta", app.url));
    // The database holds only ciphertext.
    if sqlite {
        let path = app.db.url.trim_start_matches("sqlite://").to_string();
        let (_db, _graph) = app.stop().await;
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !bytes.windows(6).any(|w| w == b"CANARY"),
                    "plaintext secret in {file}"
                );
            }
        }
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&app.db.url)
            .await
            .expect("connect");
        let blobs: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT credentials FROM channels")
            .fetch_all(&mut conn)
            .await
            .expect("select");
        assert_eq!(blobs.len(), 2);
        for blob in blobs.into_iter().flatten() {
            assert!(!blob.windows(6).any(|w| w == b"CANARY"));
        }
        let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(c)::text FROM channels c")
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        assert!(dump.iter().all(|row| !row.contains("CANARY")));
    }
}

async fn another_tenants_ids_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    let channel = app.create_whatsapp(&a, "5001", Some("secret-a")).await;
    assert_eq!(
        app.deliver(
            &channel,
            "secret-a",
            &wa_texts("5001", &[("15550001", "wamid.I", "hello")])
        )
        .await,
        200
    );
    wait_until("conversation", || async {
        app.conversations(&a).await.len() == 1
    })
    .await;
    let conversation = app.conversations(&a).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(app.conversations(&b).await.is_empty());
    let (status, body) = app
        .get_json(
            &b,
            &format!("/api/v1/conversations/{conversation}/messages"),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (missing, _) = app
        .get_json(&b, "/api/v1/conversations/does-not-exist/messages")
        .await;
    assert_eq!(missing, 404);
    for path in ["messages", "handoff", "release"] {
        let res = app
            .api(&b)
            .post(format!(
                "{}/api/v1/conversations/{conversation}/{path}",
                app.url
            ))
            .json(&json!({"text": "hijack"}))
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = app
        .api(&b)
        .delete(format!("{}/api/v1/channels/{channel}", app.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 404);
    let (_, channels) = app.get_json(&a, "/api/v1/channels").await;
    assert_eq!(channels["items"][0]["status"], "active");
    // B's knowledge search does not see A's documents.
    app.add_document(&a, "Secret", "Alpha's internal pricing is confidential.")
        .await;
    let (_, found_a) = app
        .get_json(&a, "/api/v1/knowledge/search?q=internal%20pricing")
        .await;
    assert_eq!(found_a["items"].as_array().map(Vec::len), Some(1));
    let (_, found_b) = app
        .get_json(&b, "/api/v1/knowledge/search?q=internal%20pricing")
        .await;
    assert_eq!(found_b["items"], json!([]));
}

async fn deleted_channel_stops_receiving_and_loses_its_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app.create_whatsapp(&tenant, "6001", Some("secret-6")).await;
    let res = app
        .api(&tenant)
        .delete(format!("{}/api/v1/channels/{channel}", app.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = app
        .api(&tenant)
        .delete(format!("{}/api/v1/channels/{channel}", app.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.deliver(
            &channel,
            "secret-6",
            &wa_texts("6001", &[("1", "wamid.D", "x")])
        )
        .await,
        404
    );
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert_eq!(channels["items"], json!([]));
    // The same number can be connected again.
    let again = app
        .create_whatsapp(&tenant, "6001", Some("secret-6b"))
        .await;
    assert_ne!(again, channel);
}

async fn invalid_bodies_get_json_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let post = |body: String| {
        let req = app
            .api(&tenant)
            .post(format!("{}/api/v1/channels", app.url))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let res = req.send().await.expect("post");
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = post("{not json".into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, body) =
        post(json!({"platform": "whatsapp", "phone_number_id": "7001"}).to_string()).await;
    assert_eq!(status, 422);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("access_token"));
    let (status, _) = post(json!({"platform": "sms"}).to_string()).await;
    assert_eq!(status, 422);
    let (status, _) = post(json!({"platform": "whatsapp", "phone_number_id": "7001", "access_token": "t", "app_secret": "s", "bogus": 1}).to_string()).await;
    assert_eq!(status, 422);
    let ok = json!({"platform": "whatsapp", "phone_number_id": "7001", "access_token": "t", "app_secret": "s"}).to_string();
    assert_eq!(post(ok.clone()).await.0, 201);
    let (status, body) = post(ok).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

async fn conversations_paginate_with_a_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app.create_whatsapp(&tenant, "8001", Some("s8")).await;
    for i in 0..5 {
        let body = wa_texts(
            "8001",
            &[(&format!("1555000{i}"), &format!("wamid.P{i}"), "hello")],
        );
        assert_eq!(app.deliver(&channel, "s8", &body).await, 200);
    }
    wait_until("five conversations", || async {
        app.conversations(&tenant).await.len() == 5
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get_json(
                &tenant,
                &format!("/api/v1/conversations?limit=2&cursor={cursor}"),
            )
            .await;
        assert_eq!(status, 200);
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["platform"], "whatsapp");
            assert_eq!(item["channel_id"], channel.as_str());
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5));
    let (_, filtered) = app
        .get_json(&tenant, "/api/v1/conversations?platform=slack")
        .await;
    assert_eq!(filtered["items"], json!([]));
    let (status, _) = app
        .get_json(&tenant, "/api/v1/conversations?cursor=%%%")
        .await;
    assert_eq!(status, 400);
}
