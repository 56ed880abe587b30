//! Ingress: handshake, signatures, size limit, batching, dedupe, unhandled payloads.

use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    handshake_echoes_challenge_only_with_the_right_token,
    bad_or_missing_signature_is_401_and_stores_nothing,
    batched_post_stores_every_message_once,
    redelivery_changes_nothing,
    oversized_body_is_413,
    unparseable_and_unknown_payloads_are_kept,
    hostile_signed_bodies_are_kept_without_harm,
    shared_route_routes_by_phone_number_id,
    entry_for_another_account_on_a_channel_route_is_not_processed,
);

async fn handshake_echoes_challenge_only_with_the_right_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    let get = |path: String| {
        let http = app.http.clone();
        async move {
            let res = http.get(path).send().await.expect("get");
            (res.status().as_u16(), res.text().await.unwrap_or_default())
        }
    };
    let q = "hub.mode=subscribe&hub.challenge=1158201444";
    assert_eq!(
        get(format!(
            "{}/webhooks/meta?{q}&hub.verify_token={OPERATOR_VERIFY}",
            app.url
        ))
        .await,
        (200, "1158201444".to_string())
    );
    assert_eq!(
        get(format!(
            "{}/webhooks/meta?{q}&hub.verify_token=nope",
            app.url
        ))
        .await
        .0,
        403
    );
    assert_eq!(
        get(format!(
            "{}/webhooks/whatsapp/{channel}?{q}&hub.verify_token=channel-verify-token",
            app.url
        ))
        .await,
        (200, "1158201444".to_string())
    );
    assert_eq!(
        get(format!(
            "{}/webhooks/whatsapp/{channel}?{q}&hub.verify_token={OPERATOR_VERIFY}",
            app.url
        ))
        .await
        .0,
        403
    );
    assert_eq!(
        get(format!("{}/webhooks/whatsapp/{channel}?hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=channel-verify-token", app.url)).await.0,
        403
    );
    assert_eq!(
        get(format!(
            "{}/webhooks/whatsapp/unknown-channel?{q}&hub.verify_token=x",
            app.url
        ))
        .await
        .0,
        404
    );
}

async fn bad_or_missing_signature_is_401_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    let body = wa_texts("1001", &[("15550001", "wamid.A", "hello")]);
    // Wrong secret, the operator's secret on a channel with its own, no header,
    // empty signature, truncated signature.
    assert_eq!(app.deliver(&channel, "wrong-secret", &body).await, 401);
    assert_eq!(app.deliver(&channel, OPERATOR_SECRET, &body).await, 401);
    let url = format!("{}/webhooks/whatsapp/{channel}", app.url);
    let good = webhooks::meta::sign(b"chan-secret", body.as_bytes());
    for header in [
        None,
        Some("sha256=".to_string()),
        Some(good[..good.len() - 1].to_string()),
    ] {
        let mut req = app.http.post(&url).body(body.clone());
        if let Some(h) = header {
            req = req.header("x-hub-signature-256", h);
        }
        assert_eq!(req.send().await.expect("post").status(), 401);
    }
    // A tampered body under a once-valid signature.
    let tampered = body.replace("hello", "hellO");
    let res = app
        .http
        .post(&url)
        .header("x-hub-signature-256", good)
        .body(tampered)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    // Shared route with a channel's secret instead of the operator app's.
    assert_eq!(
        app.post_signed("/webhooks/meta", "chan-secret", &body)
            .await,
        401
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.conversations(&tenant).await.is_empty());
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"], json!([]));
    assert!(app.graph.requests().is_empty());
}

async fn batched_post_stores_every_message_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    // Two entries, two changes each, several messages per change, three senders.
    let change = |msgs: serde_json::Value, contacts: serde_json::Value| {
        json!({"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1001"},
            "contacts": contacts, "messages": msgs}})
    };
    let msg = |from: &str, id: &str, ts: u64, text: &str| json!({"from": from, "id": id, "timestamp": ts.to_string(), "type": "text", "text": {"body": text}});
    let contact = |wa: &str| json!({"profile": {"name": wa}, "wa_id": wa});
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "w1", "changes": [
            change(json!([msg("111", "wamid.1", 100, "one"), msg("111", "wamid.2", 101, "two")]), json!([contact("111")])),
            change(json!([msg("222", "wamid.3", 100, "three")]), json!([contact("222")])),
        ]},
        {"id": "w1", "changes": [
            change(json!([msg("333", "wamid.4", 100, "four"), msg("111", "wamid.5", 102, "five")]), json!([contact("333"), contact("111")])),
            change(json!([msg("222", "wamid.6", 101, "six")]), json!([contact("222")])),
        ]},
    ]})
    .to_string();
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("three conversations with all messages", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count()
            == 6
    })
    .await;
    let conversations = app.conversations(&tenant).await;
    assert_eq!(conversations.len(), 3);
    let mut ids: Vec<String> = app
        .all_messages(&tenant)
        .await
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["external_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["wamid.1", "wamid.2", "wamid.3", "wamid.4", "wamid.5", "wamid.6"]
    );
    // Within a conversation, platform order.
    for c in conversations {
        let texts: Vec<String> = app
            .messages(&tenant, c["id"].as_str().expect("id"))
            .await
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
            .collect();
        if texts.len() == 3 {
            assert_eq!(texts, ["one", "two", "five"]);
        }
    }
}

async fn redelivery_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(
        &tenant,
        "Hours",
        "Our opening hours are 9 to 17, Monday to Friday.",
    )
    .await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    let body = wa_texts(
        "1001",
        &[("15550001", "wamid.R1", "What are your opening hours?")],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("one reply", || async { app.graph.delivered().len() == 1 }).await;
    // Meta retries the same delivery (and once more through the shared route).
    for _ in 0..3 {
        assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    }
    assert_eq!(
        app.post_signed("/webhooks/meta", OPERATOR_SECRET, &body)
            .await,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        app.graph.requests().len(),
        1,
        "a redelivery produced a second reply"
    );
    let messages = app.all_messages(&tenant).await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count(),
        1
    );
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["direction"] == "outbound")
            .count(),
        1
    );
}

async fn oversized_body_is_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    let filler = "x".repeat(1024 * 1024);
    let body = wa_texts("1001", &[("15550001", "wamid.BIG", &filler)]);
    assert!(body.len() > 1024 * 1024);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 413);
    assert_eq!(
        app.post_signed("/webhooks/meta", OPERATOR_SECRET, &body)
            .await,
        413
    );
    // Just under the limit is accepted.
    let fits = wa_texts(
        "1001",
        &[("15550001", "wamid.FIT", &"y".repeat(1024 * 1024 - 600))],
    );
    assert!(fits.len() <= 1024 * 1024, "{}", fits.len());
    assert_eq!(app.deliver(&channel, "chan-secret", &fits).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ids: Vec<_> = app
        .all_messages(&tenant)
        .await
        .iter()
        .map(|m| m["external_id"].clone())
        .collect();
    assert!(!ids.contains(&json!("wamid.BIG")));
}

async fn unparseable_and_unknown_payloads_are_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    assert_eq!(
        app.deliver(&channel, "chan-secret", "this is not json {")
            .await,
        200
    );
    let unknown_field = json!({"object": "whatsapp_business_account", "entry": [{"id": "w", "changes": [
        {"field": "account_update", "value": {"phone_number": "15550783881", "event": "VERIFIED_ACCOUNT"}}]}]})
    .to_string();
    assert_eq!(
        app.deliver(&channel, "chan-secret", &unknown_field).await,
        200
    );
    let (status, body) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(status, 200);
    let reasons: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["reason"].as_str().unwrap_or(""))
        .collect();
    assert!(reasons.contains(&"unparseable"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("unknown_field")),
        "{reasons:?}"
    );
    let raw = &body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["reason"] == "unparseable")
        .expect("kept")["raw"];
    assert_eq!(raw, &json!("this is not json {"));
}

async fn hostile_signed_bodies_are_kept_without_harm(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    // Nested 100,000 deep (serde_json stops at 128, no stack overflow), nested 200
    // deep inside a real envelope, and bytes that are not UTF-8.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_in_entry = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{}{}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut not_utf8 = br#"{"object":"whatsapp_business_account","entry":[""#.to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    not_utf8.extend_from_slice(br#""]}"#);
    let url = format!("{}/webhooks/whatsapp/{channel}", app.url);
    for body in [deep.into_bytes(), deep_in_entry.into_bytes(), not_utf8] {
        let signature = webhooks::meta::sign(b"chan-secret", &body);
        let res = app
            .http
            .post(&url)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200);
    }
    let (_, body) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items.iter().all(|i| i["reason"] == "unparseable"));
    assert!(app.conversations(&tenant).await.is_empty());
    let health = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

async fn shared_route_routes_by_phone_number_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    app.create_whatsapp(&a, "2001", None).await;
    app.create_whatsapp(&b, "2002", None).await;
    let body_a = wa_texts("2001", &[("15550001", "wamid.SA", "hi a")]);
    let body_b = wa_texts("2002", &[("15550002", "wamid.SB", "hi b")]);
    let body_unknown = wa_texts("2999", &[("15550003", "wamid.SU", "hi nobody")]);
    for body in [&body_a, &body_b, &body_unknown] {
        assert_eq!(
            app.post_signed("/webhooks/meta", OPERATOR_SECRET, body)
                .await,
            200
        );
    }
    wait_until("both tenants see their message", || async {
        app.all_messages(&a)
            .await
            .iter()
            .any(|m| m["external_id"] == "wamid.SA")
            && app
                .all_messages(&b)
                .await
                .iter()
                .any(|m| m["external_id"] == "wamid.SB")
    })
    .await;
    let a_ids: Vec<_> = app
        .all_messages(&a)
        .await
        .iter()
        .map(|m| m["external_id"].clone())
        .collect();
    assert!(!a_ids.contains(&json!("wamid.SB")) && !a_ids.contains(&json!("wamid.SU")));
    // The unknown account's event is kept at operator level, not shown to tenants.
    for t in [&a, &b] {
        let (_, unhandled) = app.get_json(t, "/api/v1/events/unhandled").await;
        assert_eq!(unhandled["items"], json!([]));
    }
}

async fn entry_for_another_account_on_a_channel_route_is_not_processed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_tenant("Alpha").await;
    let b = app.create_tenant("Beta").await;
    let channel_a = app.create_whatsapp(&a, "3001", Some("secret-a")).await;
    app.create_whatsapp(&b, "3002", Some("secret-b")).await;
    // Signed with A's secret but naming B's number.
    let body = wa_texts("3002", &[("15550009", "wamid.X", "cross")]);
    assert_eq!(app.deliver(&channel_a, "secret-a", &body).await, 200);
    let (_, unhandled) = app.get_json(&a, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"][0]["reason"], "account_mismatch");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.conversations(&b).await.is_empty());
    assert!(app.conversations(&a).await.is_empty());
}
