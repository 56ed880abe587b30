//! A platform API answering a storm of 429s and 5xx: every message is still answered
//! exactly once, and each refused send costs exactly one retry (no resend after
//! success, no lost reply). Waiting for `Retry-After` itself is shown in
//! `pipeline.rs`.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

crate::on_both_backends!(a_storm_of_429_and_5xx_loses_and_duplicates_nothing);

const MESSAGES: usize = 20;
const FAILURES: usize = 30;

async fn a_storm_of_429_and_5xx_loses_and_duplicates_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Storm").await;
    app.add_document(
        &tenant,
        "Hours",
        "Our opening hours are 9 to 17 on weekdays.",
    )
    .await;
    let channel = app
        .create_whatsapp(&tenant, "6001", Some("storm-secret"))
        .await;
    // The first FAILURES sends are refused, whichever message they carry.
    app.graph.script((0..FAILURES).map(|i| match i % 3 {
        0 => Scripted {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "S"}}),
        },
        1 => Scripted {
            status: 500,
            headers: vec![],
            body: json!({"error": {"message": "An unknown error occurred", "type": "OAuthException", "code": 1, "fbtrace_id": "S"}}),
        },
        _ => Scripted {
            status: 503,
            headers: vec![],
            body: json!({"error": {"message": "Service temporarily unavailable", "type": "OAuthException", "code": 2, "fbtrace_id": "S"}}),
        },
    }));
    for i in 0..MESSAGES {
        let body = wa_texts(
            "6001",
            &[(
                &format!("1777000{i:04}"),
                &format!("wamid.storm.{i}"),
                "opening hours?",
            )],
        );
        assert_eq!(app.deliver(&channel, "storm-secret", &body).await, 200);
    }

    wait_until("every message answered", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["author"] == "assistant" && m["status"] == "sent")
            .count()
            == MESSAGES
    })
    .await;
    let requests = app.graph.requests();
    let delivered = app.graph.delivered();
    // One accepted send per customer, and one retry per refused send.
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for r in &delivered {
        *per_recipient
            .entry(r.body["to"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_recipient.len(), MESSAGES);
    assert!(per_recipient.values().all(|&n| n == 1), "{per_recipient:?}");
    assert_eq!(requests.len(), MESSAGES + FAILURES);
    assert_eq!(
        requests.iter().filter(|r| r.answered != 200).count(),
        FAILURES
    );
    let replies = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["author"] == "assistant")
        .count();
    assert_eq!(replies, MESSAGES, "one reply per message");
}
