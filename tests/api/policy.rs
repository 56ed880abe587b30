//! The policy layer in front of the assistant: STOP/START/HUMAN and the tenant's own
//! words, restriction, consent through the admin API, hand-off and its idle return,
//! the AI disclosure; and the contact endpoints (access, rectification, export).

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::privacy::Db;

on_both_backends!(
    stop_gets_one_confirmation_then_silence_until_start,
    tenant_keywords_in_other_languages_work_like_stop,
    restricted_contact_gets_no_reply_but_a_person_may_write,
    human_reply_silences_the_assistant_until_release_or_idle_return,
    disclosure_is_the_tenants_wording_and_returns_after_30_idle_days,
    consent_withdrawn_through_the_api_stops_the_assistant,
    export_holds_every_message_and_admin_access_is_audited,
    contact_endpoints_answer_404_for_other_tenants,
    whatsapp_marketing_opt_out_feeds_the_ledger,
    a_queued_assistant_reply_is_withheld_after_withdrawal,
);

const HOURS: &str = "Our opening hours are 9:00 to 17:00, Monday to Friday.";
const PHONE: &str = "15550101";

struct Chat {
    app: TestApp,
    tenant: Tenant,
    channel: String,
}

impl Chat {
    async fn start(backend: Backend) -> Self {
        let app = TestApp::spawn(backend).await;
        let tenant = app.create_tenant("Acme").await;
        app.add_document(&tenant, "Hours", HOURS).await;
        let channel = app
            .create_whatsapp(&tenant, "1001", Some("chan-secret"))
            .await;
        Self {
            app,
            tenant,
            channel,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url)
    }

    /// Sends `text` as the customer and returns what the gateway wrote back in the
    /// same step (messages after the customer's, once the customer's is stored).
    async fn say(&self, wamid: &str, text: &str) -> Vec<Value> {
        let body = wa_texts("1001", &[(PHONE, wamid, text)]);
        assert_eq!(
            self.app.deliver(&self.channel, "chan-secret", &body).await,
            200
        );
        wait_until(&format!("{wamid} stored"), || async {
            self.app
                .all_messages(&self.tenant)
                .await
                .iter()
                .any(|m| m["external_id"] == wamid)
        })
        .await;
        let messages = self.app.all_messages(&self.tenant).await;
        let i = messages
            .iter()
            .position(|m| m["external_id"] == wamid)
            .expect("stored");
        messages[i + 1..].to_vec()
    }

    async fn conversation(&self) -> Value {
        self.app.conversations(&self.tenant).await[0].clone()
    }

    async fn contact_id(&self) -> String {
        self.conversation().await["contact_id"]
            .as_str()
            .expect("contact")
            .to_string()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .app
            .api(&self.tenant)
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Moves the conversation's last activity `days` into the past.
    async fn age(&self, days: i64) {
        let db = Db::connect(&self.app.db.url).await;
        db.execute(&format!(
            "UPDATE conversations SET last_message_at = last_message_at - {}",
            days * 24 * 60 * 60 * 1000
        ))
        .await
        .expect("age");
    }
}

fn text(m: &Value) -> &str {
    m["text"].as_str().unwrap_or_default()
}

async fn stop_gets_one_confirmation_then_silence_until_start(backend: Backend) {
    let chat = Chat::start(backend).await;
    let first = chat.say("wamid.1", "opening hours?").await;
    assert_eq!(first.len(), 1);
    assert!(text(&first[0]).contains(HOURS));

    let stop = chat.say("wamid.2", "STOP").await;
    assert_eq!(stop.len(), 1, "{stop:?}");
    assert_eq!(stop[0]["author"], "system");
    assert!(text(&stop[0]).contains("unsubscribed"), "{stop:?}");

    // No AI processing: stored for people, not answered.
    assert!(chat.say("wamid.3", "opening hours?").await.is_empty());
    assert!(chat.say("wamid.4", "hello, anyone?").await.is_empty());
    // A second STOP is not confirmed again.
    assert!(chat.say("wamid.5", "stop").await.is_empty());

    let contact = chat.contact_id().await;
    let (status, body) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["consent"]["ai_processing"], false);
    assert_eq!(body["consent"]["marketing"], false);

    let start = chat.say("wamid.6", "Start").await;
    assert_eq!(start.len(), 1);
    assert!(text(&start[0]).contains("subscribed again"));
    let again = chat.say("wamid.7", "opening hours?").await;
    assert_eq!(again.len(), 1);
    assert!(text(&again[0]).contains(HOURS));
    assert!(!text(&again[0]).contains("automated assistant"));
    wait_until("all sent", || async {
        chat.app.graph.delivered().len() == 4
    })
    .await;

    // The ledger keeps every change with its source; the audit log has each one.
    let (_, export) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}/export"))
        .await;
    let history = export["consent_history"].as_array().expect("history");
    let changes: Vec<(String, bool)> = history
        .iter()
        .map(|e| {
            (
                e["purpose"].as_str().unwrap_or_default().to_string(),
                e["granted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("ai_processing".into(), false),
            ("marketing".into(), false),
            ("ai_processing".into(), true)
        ]
    );
    assert!(history.iter().all(|e| e["source"] == "keyword"));
    let (_, audit) = chat
        .app
        .get_json(&chat.tenant, "/api/v1/audit?limit=1000")
        .await;
    assert_eq!(audit["chain_ok"], true);
    let consent_entries = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "consent.change" && e["contact_id"] == contact.as_str())
        .count();
    assert_eq!(consent_entries, 3);
}

async fn tenant_keywords_in_other_languages_work_like_stop(backend: Backend) {
    let chat = Chat::start(backend).await;
    let res = chat
        .app
        .api(&chat.tenant)
        .put(chat.url("/api/v1/settings/privacy"))
        .json(&json!({"stop_words": ["Halt", "ALTO"], "start_words": ["weiter"], "human_words": ["Mensch"]}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let stop = chat.say("wamid.1", "halt").await;
    assert_eq!(stop.len(), 1);
    assert!(text(&stop[0]).contains("unsubscribed"));
    assert!(chat.say("wamid.2", "opening hours?").await.is_empty());
    let start = chat.say("wamid.3", "WEITER").await;
    assert_eq!(start.len(), 1);
    let human = chat.say("wamid.4", "mensch").await;
    assert_eq!(human.len(), 1);
    assert!(text(&human[0]).contains("a person will answer"));
    assert_eq!(chat.conversation().await["status"], "human");
    let res = chat
        .app
        .api(&chat.tenant)
        .put(chat.url("/api/v1/settings/privacy"))
        .json(&json!({"disclosure": "  "}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        res.status(),
        422,
        "the disclosure may be reworded, not removed"
    );
}

async fn restricted_contact_gets_no_reply_but_a_person_may_write(backend: Backend) {
    let chat = Chat::start(backend).await;
    assert_eq!(chat.say("wamid.1", "opening hours?").await.len(), 1);
    let contact = chat.contact_id().await;
    let (status, body) = chat
        .post(&format!("/api/v1/contacts/{contact}/restrict"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["restricted"], true);
    assert!(chat.say("wamid.2", "opening hours?").await.is_empty());
    // Not even a keyword's confirmation goes out; the withdrawal is still recorded.
    assert!(chat.say("wamid.3", "STOP").await.is_empty());
    assert!(chat.say("wamid.4", "HUMAN").await.is_empty());
    let conversation = chat.conversation().await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = chat
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({"text": "Hello, this is Anna from Acme."}),
        )
        .await;
    assert_eq!(status, 202);
    wait_until("agent reply sent", || async {
        chat.app.graph.delivered().len() == 2
    })
    .await;
    let sent = chat.app.graph.delivered();
    assert!(sent[1].body["text"]["body"]
        .as_str()
        .unwrap_or_default()
        .contains("Anna"));
    let (status, body) = chat
        .post(&format!("/api/v1/contacts/{contact}/unrestrict"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["restricted"], false);
    assert_eq!(body["consent"]["ai_processing"], false);
    let (_, audit) = chat
        .app
        .get_json(
            &chat.tenant,
            &format!("/api/v1/audit?limit=1000&contact_id={contact}"),
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"contact.restrict"), "{actions:?}");
    assert!(actions.contains(&"contact.unrestrict"), "{actions:?}");
}

async fn human_reply_silences_the_assistant_until_release_or_idle_return(backend: Backend) {
    let chat = Chat::start(backend).await;
    assert_eq!(chat.say("wamid.1", "opening hours?").await.len(), 1);
    let conversation = chat.conversation().await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = chat
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({"text": "Hi, a person here."}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(chat.conversation().await["status"], "human");
    assert!(chat.say("wamid.2", "opening hours?").await.is_empty());
    assert!(chat.say("wamid.3", "are you there?").await.is_empty());
    let (status, _) = chat
        .post(
            &format!("/api/v1/conversations/{conversation}/release"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let back = chat.say("wamid.4", "opening hours?").await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["author"], "assistant");

    // HUMAN hands over and tells the customer; nobody answers for a day: the
    // assistant takes the conversation back.
    let human = chat.say("wamid.5", "HUMAN").await;
    assert_eq!(human.len(), 1);
    assert_eq!(chat.conversation().await["status"], "human");
    assert!(chat.say("wamid.6", "opening hours?").await.is_empty());
    chat.age(2).await;
    let returned = chat.say("wamid.7", "opening hours?").await;
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(returned[0]["author"], "assistant");
    assert_eq!(chat.conversation().await["status"], "bot");
    let (_, audit) = chat
        .app
        .get_json(&chat.tenant, "/api/v1/audit?limit=1000")
        .await;
    let items = audit["items"].as_array().expect("items");
    assert!(items
        .iter()
        .any(|e| e["action"] == "conversation.release" && e["actor"] == "system"));
    assert!(items
        .iter()
        .any(|e| e["action"] == "conversation.agent_reply"));
    assert!(items
        .iter()
        .any(|e| e["action"] == "conversation.handoff" && e["actor"] == "customer"));
}

async fn disclosure_is_the_tenants_wording_and_returns_after_30_idle_days(backend: Backend) {
    let chat = Chat::start(backend).await;
    let res = chat
        .app
        .api(&chat.tenant)
        .put(chat.url("/api/v1/settings/privacy"))
        .json(&json!({"disclosure": "Acme's assistant is an AI. Write HUMAN for a person."}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let first = chat.say("wamid.1", "opening hours?").await;
    assert!(text(&first[0]).starts_with("Acme's assistant is an AI."));
    let second = chat.say("wamid.2", "opening hours?").await;
    assert!(!text(&second[0]).contains("is an AI"));
    chat.age(29).await;
    let third = chat.say("wamid.3", "opening hours?").await;
    assert!(!text(&third[0]).contains("is an AI"));
    chat.age(31).await;
    let later = chat.say("wamid.4", "opening hours?").await;
    assert!(
        text(&later[0]).starts_with("Acme's assistant is an AI."),
        "{later:?}"
    );
}

async fn consent_withdrawn_through_the_api_stops_the_assistant(backend: Backend) {
    let chat = Chat::start(backend).await;
    assert_eq!(chat.say("wamid.1", "opening hours?").await.len(), 1);
    let contact = chat.contact_id().await;
    let (status, body) = chat
        .post(
            &format!("/api/v1/contacts/{contact}/consent"),
            json!({"purpose": "ai_processing", "granted": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["consent"]["ai_processing"], false);
    assert!(chat.say("wamid.2", "opening hours?").await.is_empty());
    let (status, _) = chat
        .post(
            &format!("/api/v1/contacts/{contact}/consent"),
            json!({"purpose": "telepathy", "granted": true}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = chat
        .post(
            &format!("/api/v1/contacts/{contact}/consent"),
            json!({"purpose": "ai_processing", "granted": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chat.say("wamid.3", "opening hours?").await.len(), 1);
    let (_, export) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}/export"))
        .await;
    assert!(export["consent_history"]
        .as_array()
        .expect("history")
        .iter()
        .all(|e| e["source"] == "admin_api"));
}

async fn export_holds_every_message_and_admin_access_is_audited(backend: Backend) {
    let chat = Chat::start(backend).await;
    chat.say("wamid.1", "opening hours? first question").await;
    chat.say("wamid.2", "opening hours? second question").await;
    // Someone else writes too: none of it may appear in this person's export.
    let other = wa_texts(
        "1001",
        &[("15550999", "wamid.X1", "another person's words")],
    );
    assert_eq!(
        chat.app.deliver(&chat.channel, "chan-secret", &other).await,
        200
    );
    wait_until("other stored", || async {
        chat.app.conversations(&chat.tenant).await.len() == 2
    })
    .await;
    let mut conversation = String::new();
    for c in chat.app.conversations(&chat.tenant).await {
        let id = c["id"].as_str().expect("id").to_string();
        if chat
            .app
            .messages(&chat.tenant, &id)
            .await
            .iter()
            .any(|m| m["external_id"] == "wamid.1")
        {
            conversation = id;
        }
    }
    let contact = chat
        .app
        .conversations(&chat.tenant)
        .await
        .iter()
        .find(|c| c["id"] == conversation.as_str())
        .and_then(|c| c["contact_id"].as_str().map(str::to_string))
        .expect("contact");
    chat.post(
        &format!("/api/v1/conversations/{conversation}/messages"),
        json!({"text": "A person's answer"}),
    )
    .await;
    // Rectification: the profile name is corrected, and says which field changed.
    let res = chat
        .app
        .api(&chat.tenant)
        .patch(chat.url(&format!("/api/v1/contacts/{contact}")))
        .json(&json!({"display_name": "Maria Lopez", "email": "maria@example.com"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["display_name"], "Maria Lopez");
    let res = chat
        .app
        .api(&chat.tenant)
        .patch(chat.url(&format!("/api/v1/contacts/{contact}")))
        .json(&json!({"email": "not-an-address"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 422);

    let (status, export) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}/export"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(export["contact"]["display_name"], "Maria Lopez");
    assert_eq!(export["contact"]["email"], "maria@example.com");
    let identities = export["contact"]["identities"].as_array().expect("ids");
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["external_user_id"], PHONE);
    assert_eq!(identities[0]["platform"], "whatsapp");
    let exported: Vec<String> = export["conversations"][0]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| text(m).to_string())
        .collect();
    let stored: Vec<String> = chat
        .app
        .messages(&chat.tenant, &conversation)
        .await
        .iter()
        .map(|m| text(m).to_string())
        .collect();
    assert_eq!(exported, stored);
    assert_eq!(exported.len(), 5);
    assert_eq!(export["conversations"].as_array().map(Vec::len), Some(1));
    assert!(!export.to_string().contains("another person"));
    assert!(!export.to_string().contains("15550999"));
    assert!(exported.contains(&"opening hours? second question".to_string()));
    assert!(exported.contains(&"A person's answer".to_string()));
    // Every access and change is in the audit, under this contact, without text.
    let actions: Vec<String> = export["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for expected in [
        "conversation.agent_reply",
        "data.read",
        "contact.rectify",
        "contact.export",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected}: {actions:?}"
        );
    }
    let (_, audit) = chat
        .app
        .get_json(&chat.tenant, "/api/v1/audit?limit=1000")
        .await;
    assert_eq!(audit["chain_ok"], true);
    let text = audit.to_string();
    for secret in ["Maria", "maria@example.com", "second question", PHONE] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    assert!(audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|e| e["action"] == "credentials.create"));
}

async fn contact_endpoints_answer_404_for_other_tenants(backend: Backend) {
    let chat = Chat::start(backend).await;
    chat.say("wamid.1", "opening hours?").await;
    let contact = chat.contact_id().await;
    let conversation = chat.conversation().await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let other = chat.app.create_tenant("Other").await;
    let api = chat.app.api(&other);
    let url = |p: String| chat.url(&p);
    let requests = vec![
        api.get(url(format!("/api/v1/contacts/{contact}"))),
        api.get(url(format!("/api/v1/contacts/{contact}/export"))),
        api.patch(url(format!("/api/v1/contacts/{contact}")))
            .json(&json!({"display_name": "x"})),
        api.post(url(format!("/api/v1/contacts/{contact}/consent")))
            .json(&json!({"purpose": "marketing", "granted": true})),
        api.post(url(format!("/api/v1/contacts/{contact}/restrict"))),
        api.post(url(format!("/api/v1/contacts/{contact}/unrestrict"))),
        api.delete(url(format!("/api/v1/contacts/{contact}"))),
        api.get(url(format!(
            "/api/v1/conversations/{conversation}/messages"
        ))),
        api.post(url(format!(
            "/api/v1/conversations/{conversation}/messages"
        )))
        .json(&json!({"text": "x"})),
        api.post(url(format!("/api/v1/conversations/{conversation}/handoff"))),
        api.post(url(format!("/api/v1/conversations/{conversation}/release"))),
    ];
    for request in requests {
        let res = request.send().await.expect("request");
        assert_eq!(res.status(), 404, "{}", res.url());
    }
    // Nothing changed for the owner, and nothing was written in either audit log
    // about the other tenant's attempts.
    let (status, body) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["restricted"], false);
    assert_eq!(body["consent"]["marketing"], Value::Null);
    let (_, audit) = chat.app.get_json(&other, "/api/v1/audit?limit=1000").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["credentials.create"], "only its own creation");
}

async fn whatsapp_marketing_opt_out_feeds_the_ledger(backend: Backend) {
    let chat = Chat::start(backend).await;
    chat.say("wamid.1", "opening hours?").await;
    let contact = chat.contact_id().await;
    let preference = |value: &str, ts: i64| {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "user_preferences", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1001"},
                "contacts": [{"profile": {"name": "User"}, "wa_id": PHONE}],
                "user_preferences": [{"wa_id": PHONE, "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages", "value": value, "timestamp": ts}]
            }}]}]
        })
        .to_string()
    };
    let stop = preference("stop", 1_750_000_500);
    assert_eq!(
        chat.app.deliver(&chat.channel, "chan-secret", &stop).await,
        200
    );
    // A redelivery is the same signal, not a second ledger entry.
    assert_eq!(
        chat.app.deliver(&chat.channel, "chan-secret", &stop).await,
        200
    );
    let contact_url = format!("/api/v1/contacts/{contact}");
    wait_until("marketing withdrawn", || async {
        chat.app.get_json(&chat.tenant, &contact_url).await.1["consent"]["marketing"] == false
    })
    .await;
    let (_, body) = chat.app.get_json(&chat.tenant, &contact_url).await;
    // Marketing only: the assistant still answers.
    assert_eq!(body["consent"]["ai_processing"], Value::Null);
    assert_eq!(chat.say("wamid.2", "opening hours?").await.len(), 1);
    let resume = preference("resume", 1_750_000_600);
    assert_eq!(
        chat.app
            .deliver(&chat.channel, "chan-secret", &resume)
            .await,
        200
    );
    wait_until("marketing resumed", || async {
        chat.app.get_json(&chat.tenant, &contact_url).await.1["consent"]["marketing"] == true
    })
    .await;
    let (_, export) = chat
        .app
        .get_json(&chat.tenant, &format!("/api/v1/contacts/{contact}/export"))
        .await;
    let history = export["consent_history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history
        .iter()
        .all(|e| e["source"] == "platform" && e["detail"] == "user_preferences"));
    assert!(export["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .any(|e| e["action"] == "consent.change" && e["actor"] == "platform:whatsapp"));
}

async fn a_queued_assistant_reply_is_withheld_after_withdrawal(backend: Backend) {
    let chat = Chat::start(backend).await;
    // The platform asks us to come back later; meanwhile consent is withdrawn.
    chat.app.graph.script([Scripted {
        status: 429,
        headers: vec![("retry-after", "5".into())],
        body: json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "A"}}),
    }]);
    let reply = chat.say("wamid.1", "opening hours?").await;
    assert_eq!(reply.len(), 1);
    wait_until("first attempt", || async {
        chat.app.graph.requests().len() == 1
    })
    .await;
    let contact = chat.contact_id().await;
    let (status, _) = chat
        .post(
            &format!("/api/v1/contacts/{contact}/consent"),
            json!({"purpose": "ai_processing", "granted": false}),
        )
        .await;
    assert_eq!(status, 200);
    wait_until("reply withheld", || async {
        chat.app
            .all_messages(&chat.tenant)
            .await
            .iter()
            .any(|m| m["author"] == "assistant" && m["status"] == "failed")
    })
    .await;
    assert_eq!(chat.app.graph.requests().len(), 1);
    assert!(chat.app.graph.delivered().is_empty());
}
