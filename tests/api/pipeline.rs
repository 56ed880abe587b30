//! From an inbound message to a reply the fake Graph API receives, and back:
//! retries, permanent errors, paused channels, statuses, splitting, hand-off.

use std::time::Instant;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    message_in_reply_out_exactly_as_the_contract_says,
    rate_limited_send_is_retried_after_retry_after_and_delivered_once,
    server_errors_are_retried_with_backoff,
    permanent_error_marks_the_reply_failed_with_the_code,
    expired_token_pauses_the_channel,
    statuses_move_the_reply_forward_only,
    long_agent_reply_is_split_at_4096,
    no_good_answer_hands_off_to_a_person,
    messages_of_one_conversation_are_answered_in_order,
);

const HOURS: &str =
    "Our opening hours are 9:00 to 17:00, Monday to Friday. We are closed on public holidays.";

async fn setup(backend: Backend) -> (TestApp, Tenant, String) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    app.add_document(
        &tenant,
        "Shipping",
        "Shipping costs 5 EUR within the EU and takes two to four days.",
    )
    .await;
    let channel = app
        .create_whatsapp(&tenant, "1001", Some("chan-secret"))
        .await;
    (app, tenant, channel)
}

/// The tenant's one conversation and its messages (empty before it exists).
async fn only_conversation(app: &TestApp, tenant: &Tenant) -> (String, Vec<Value>) {
    let conversations = app.conversations(tenant).await;
    assert!(conversations.len() <= 1, "{conversations:?}");
    let Some(first) = conversations.first() else {
        return (String::new(), Vec::new());
    };
    let id = first["id"].as_str().expect("id").to_string();
    let messages = app.messages(tenant, &id).await;
    (id, messages)
}

async fn message_in_reply_out_exactly_as_the_contract_says(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let body = wa_texts(
        "1001",
        &[("15550001", "wamid.IN1", "When are you open? opening hours")],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("reply sent", || async { app.graph.delivered().len() == 1 }).await;
    let sent = &app.graph.requests()[0];
    assert_eq!(sent.path, "/v21.0/1001/messages");
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer EAAG-token-1001")
    );
    assert_eq!(sent.body["messaging_product"], "whatsapp");
    assert_eq!(sent.body["to"], "15550001");
    assert_eq!(sent.body["type"], "text");
    let text = sent.body["text"]["body"].as_str().expect("text body");
    assert!(text.contains(HOURS), "{text}");
    assert!(
        text.contains("automated assistant (AI)"),
        "first reply discloses the AI: {text}"
    );
    wait_until("reply recorded as sent", || async {
        let (_, m) = only_conversation(&app, &tenant).await;
        m.len() == 2 && m[1]["status"] == "sent"
    })
    .await;
    let (_, messages) = only_conversation(&app, &tenant).await;
    assert_eq!(messages[0]["direction"], "inbound");
    assert_eq!(messages[0]["author"], "customer");
    assert_eq!(messages[0]["external_id"], "wamid.IN1");
    assert_eq!(messages[1]["direction"], "outbound");
    assert_eq!(messages[1]["author"], "assistant");
    assert_eq!(messages[1]["produced_by"], "kb");
    assert_eq!(messages[1]["external_id"], "wamid.out.1");
    assert_eq!(messages[1]["possible_duplicate"], false);
    // The second answer in the same conversation does not repeat the disclosure.
    let body = wa_texts(
        "1001",
        &[("15550001", "wamid.IN2", "How much does shipping cost?")],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("second reply", || async {
        app.graph.delivered().len() == 2
    })
    .await;
    let second = app.graph.requests()[1].body["text"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        second.contains("5 EUR") && !second.contains("automated assistant"),
        "{second}"
    );
}

async fn rate_limited_send_is_retried_after_retry_after_and_delivered_once(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    app.graph.script([Scripted {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        body: json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "A"}}),
    }]);
    let body = wa_texts("1001", &[("15550001", "wamid.RL", "opening hours?")]);
    let started = Instant::now();
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("delivered after the retry", || async {
        app.graph.delivered().len() == 1
    })
    .await;
    assert!(
        started.elapsed().as_millis() >= 1000,
        "sent again before Retry-After expired"
    );
    let requests = app.graph.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].answered, 429);
    assert_eq!(requests[0].body, requests[1].body);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.graph.requests().len(),
        2,
        "no further sends after success"
    );
    wait_until("sent", || async {
        only_conversation(&app, &tenant).await.1[1]["status"] == "sent"
    })
    .await;
}

async fn server_errors_are_retried_with_backoff(backend: Backend) {
    let (app, _tenant, channel) = setup(backend).await;
    let unavailable = Scripted {
        status: 503,
        headers: vec![],
        body: json!({"error": {"message": "unavailable", "code": 2}}),
    };
    app.graph.script([unavailable.clone(), unavailable]);
    let body = wa_texts("1001", &[("15550001", "wamid.5XX", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("delivered", || async { app.graph.delivered().len() == 1 }).await;
    assert_eq!(app.graph.requests().len(), 3);
}

async fn permanent_error_marks_the_reply_failed_with_the_code(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    app.graph.script([Scripted {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "Re-engagement message", "type": "OAuthException", "code": 131047,
            "error_data": {"messaging_product": "whatsapp", "details": "More than 24 hours have passed"}, "fbtrace_id": "B"}}),
    }]);
    let body = wa_texts("1001", &[("15550001", "wamid.PERM", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("reply failed", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(1)
            .is_some_and(|m| m["status"] == "failed")
    })
    .await;
    let reply = only_conversation(&app, &tenant).await.1[1].clone();
    assert_eq!(reply["error_code"], 131047);
    assert!(
        reply["error_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("window"),
        "{reply}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.graph.requests().len(),
        1,
        "a permanent error is not retried"
    );
}

async fn expired_token_pauses_the_channel(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    app.graph.script([Scripted {
        status: 401,
        headers: vec![],
        body: json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190, "error_subcode": 463}}),
    }]);
    let body = wa_texts("1001", &[("15550001", "wamid.T1", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("channel marked", || async {
        let (_, body) = app.get_json(&tenant, "/api/v1/channels").await;
        body["items"][0]["status"] == "needs_reauth"
    })
    .await;
    let (_, channels) = app.get_json(&tenant, "/api/v1/channels").await;
    assert!(channels["items"][0]["status_detail"]
        .as_str()
        .unwrap_or_default()
        .contains("190"));
    // Later replies wait instead of failing one after another.
    let body = wa_texts("1001", &[("15550002", "wamid.T2", "shipping costs?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("second reply queued", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["direction"] == "outbound")
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        app.graph.requests().len(),
        1,
        "nothing is sent while the channel needs re-authorization"
    );
    let replies: Vec<Value> = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .collect();
    assert!(
        replies.iter().all(|m| m["status"] == "queued"),
        "{replies:?}"
    );
}

async fn statuses_move_the_reply_forward_only(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let body = wa_texts("1001", &[("15550001", "wamid.S", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("sent", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(1)
            .is_some_and(|m| m["status"] == "sent")
    })
    .await;
    let status = |s: &str| wa_status("1001", "wamid.out.1", s, "15550001", None);
    for s in ["delivered", "read"] {
        assert_eq!(app.deliver(&channel, "chan-secret", &status(s)).await, 200);
    }
    wait_until("read", || async {
        only_conversation(&app, &tenant).await.1[1]["status"] == "read"
    })
    .await;
    // A late `delivered` does not move it back.
    let late = wa_status("1001", "wamid.out.1", "delivered", "15550001", None)
        .replace("1750030073", "1750030074");
    assert_eq!(app.deliver(&channel, "chan-secret", &late).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        only_conversation(&app, &tenant).await.1[1]["status"],
        "read"
    );

    // A second reply that fails after acceptance.
    let body = wa_texts("1001", &[("15550001", "wamid.S2", "shipping costs?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("second sent", || async { app.graph.delivered().len() == 2 }).await;
    let failed = wa_status("1001", "wamid.out.2", "failed", "15550001", Some(131049));
    assert_eq!(app.deliver(&channel, "chan-secret", &failed).await, 200);
    wait_until("failed", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .get(3)
            .is_some_and(|m| m["status"] == "failed")
    })
    .await;
    assert_eq!(
        only_conversation(&app, &tenant).await.1[3]["error_code"],
        131049
    );
}

async fn long_agent_reply_is_split_at_4096(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let body = wa_texts("1001", &[("15550001", "wamid.L", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("first reply", || async { app.graph.delivered().len() == 1 }).await;
    let (conversation, _) = only_conversation(&app, &tenant).await;
    let long = "word ".repeat(1800); // 9000 characters
    let res = app
        .api(&tenant)
        .post(format!(
            "{}/api/v1/conversations/{conversation}/messages",
            app.url
        ))
        .json(&json!({"text": long}))
        .send()
        .await
        .expect("reply");
    assert_eq!(res.status(), 202);
    wait_until("three parts", || async { app.graph.delivered().len() == 4 }).await;
    let parts: Vec<String> = app.graph.requests()[1..]
        .iter()
        .map(|r| {
            r.body["text"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 4096));
    assert_eq!(parts.join(" ").split_whitespace().count(), 1800);
    let conversations = app.conversations(&tenant).await;
    assert_eq!(
        conversations[0]["status"], "human",
        "an agent's reply takes the conversation over"
    );
    wait_until("agent message sent", || async {
        only_conversation(&app, &tenant)
            .await
            .1
            .last()
            .is_some_and(|m| m["author"] == "agent" && m["status"] == "sent")
    })
    .await;
}

async fn no_good_answer_hands_off_to_a_person(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let body = wa_texts(
        "1001",
        &[(
            "15550001",
            "wamid.H1",
            "Can I bring my parrot to the concert?",
        )],
    );
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("hand-off message", || async {
        app.graph.delivered().len() == 1
    })
    .await;
    let text = app.graph.requests()[0].body["text"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("passed your message to our team"), "{text}");
    wait_until("conversation is human", || async {
        app.conversations(&tenant).await[0]["status"] == "human"
    })
    .await;
    // While a person owns the conversation the assistant stays quiet.
    let body = wa_texts("1001", &[("15550001", "wamid.H2", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("stored", || async {
        only_conversation(&app, &tenant).await.1.len() == 3
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(app.graph.requests().len(), 1);
    // Released back to the assistant, it answers again.
    let (conversation, _) = only_conversation(&app, &tenant).await;
    let res = app
        .api(&tenant)
        .post(format!(
            "{}/api/v1/conversations/{conversation}/release",
            app.url
        ))
        .send()
        .await
        .expect("release");
    assert_eq!(res.status(), 200);
    let body = wa_texts("1001", &[("15550001", "wamid.H3", "opening hours?")]);
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("answered again", || async {
        app.graph.delivered().len() == 2
    })
    .await;
}

async fn messages_of_one_conversation_are_answered_in_order(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    // One delivery whose array order disagrees with the platform timestamps: the
    // question asked first (hours, earlier timestamp) comes second in the array.
    let body = wa_texts(
        "1001",
        &[
            ("15550001", "wamid.O2", "shipping costs?"),
            ("15550001", "wamid.O1", "opening hours?"),
        ],
    )
    .replace("\"1750000000\"", "\"1750000900\"");
    assert_eq!(app.deliver(&channel, "chan-secret", &body).await, 200);
    wait_until("two replies", || async { app.graph.delivered().len() == 2 }).await;
    let (_, messages) = only_conversation(&app, &tenant).await;
    let summary: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["direction"].as_str().unwrap_or(""),
                m["external_id"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(messages.len(), 4, "{summary:?}");
    assert_eq!(messages[0]["external_id"], "wamid.O1", "{summary:?}");
    assert!(messages[1]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("opening hours"));
    assert_eq!(messages[2]["external_id"], "wamid.O2", "{summary:?}");
    assert!(messages[3]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("5 EUR"));
    let sent: Vec<String> = app
        .graph
        .requests()
        .iter()
        .map(|r| r.body["text"]["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        sent[0].contains("opening hours") && sent[1].contains("5 EUR"),
        "{sent:?}"
    );
}

on_both_backends!(identities_follow_platform_ids_and_never_merge_silently);

async fn identities_follow_platform_ids_and_never_merge_silently(backend: Backend) {
    let (app, tenant, channel) = setup(backend).await;
    let delivery = |contact: Value, from: Option<&str>, wamid: &str| {
        let mut message = json!({"id": wamid, "timestamp": "1750000000", "type": "text", "text": {"body": "hello"}});
        if let Some(from) = from {
            message["from"] = json!(from);
        }
        json!({"object": "whatsapp_business_account", "entry": [{"id": "w", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1001"},
            "contacts": [contact], "messages": [message]}}]}]})
        .to_string()
    };
    // A phone-number user, then the same user with a business-scoped user id added,
    // then only the business-scoped id (phone withheld), then someone else.
    let steps = [
        delivery(
            json!({"profile": {"name": "Ana"}, "wa_id": "16505551234"}),
            Some("16505551234"),
            "wamid.I1",
        ),
        delivery(
            json!({"profile": {"name": "Ana"}, "wa_id": "16505551234", "user_id": "US.134912086553"}),
            Some("16505551234"),
            "wamid.I2",
        ),
        delivery(
            json!({"profile": {"name": "Ana"}, "user_id": "US.134912086553"}),
            None,
            "wamid.I3",
        ),
        delivery(
            json!({"profile": {"name": "Ana"}, "wa_id": "16505559999"}),
            Some("16505559999"),
            "wamid.I4",
        ),
    ];
    // One after another, as the person wrote them.
    for (i, body) in steps.iter().enumerate() {
        assert_eq!(app.deliver(&channel, "chan-secret", body).await, 200);
        wait_until("message stored", || async {
            app.all_messages(&tenant)
                .await
                .iter()
                .filter(|m| m["direction"] == "inbound")
                .count()
                == i + 1
        })
        .await;
    }
    let conversations = app.conversations(&tenant).await;
    let contact_of = |wamid: &str| {
        let app = &app;
        let tenant = &tenant;
        let conversations = conversations.clone();
        let wamid = wamid.to_string();
        async move {
            for c in conversations {
                let id = c["id"].as_str().unwrap_or_default().to_string();
                if app
                    .messages(tenant, &id)
                    .await
                    .iter()
                    .any(|m| m["external_id"] == wamid.as_str())
                {
                    return c["contact_id"].as_str().unwrap_or_default().to_string();
                }
            }
            panic!("{wamid} not stored");
        }
    };
    let (c1, c2, c3, c4) = (
        contact_of("wamid.I1").await,
        contact_of("wamid.I2").await,
        contact_of("wamid.I3").await,
        contact_of("wamid.I4").await,
    );
    assert_eq!(c1, c2, "the platform linked the two ids in one payload");
    assert_eq!(
        c2, c3,
        "the business-scoped id alone still finds the person"
    );
    assert_ne!(c1, c4, "a different person is a different contact");
}
