//! Conformance of the two `Store` implementations: the same cases on SQLite and on
//! PostgreSQL, against real databases.

use std::sync::Arc;

use omnigate::config::DatabaseUrl;
use omnigate::store::*;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    ingress_dedupes_on_channel_and_platform_id,
    claims_follow_platform_order_one_per_conversation,
    expired_lease_is_reclaimed_and_the_old_owner_cannot_complete,
    reclaimed_send_is_flagged_as_possible_duplicate,
    a_completion_hands_its_reply_over_leased,
    reads_are_scoped_by_tenant,
    full_text_search_ranks_and_scopes,
    answer_settings_say_whether_the_tenant_has_knowledge,
    a_resolve_says_whether_it_created_the_conversation,
);

struct Fixture {
    store: Arc<dyn Store>,
    _db: TestDb,
    tenant: String,
    channel: String,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDb::create(&backend).await;
    let store = open(&DatabaseUrl::new(db.url.clone()))
        .await
        .expect("open store");
    let tenant = store_tenant(store.as_ref(), "t").await;
    let channel = channel(store.as_ref(), &tenant, "900").await;
    Fixture {
        store,
        _db: db,
        tenant,
        channel,
    }
}

async fn channel(store: &dyn Store, tenant: &str, account: &str) -> String {
    let id = new_id();
    store
        .create_channel(&NewChannel {
            id: id.clone(),
            tenant_id: tenant.into(),
            platform: "whatsapp".into(),
            account_id: account.into(),
            credentials: vec![1, 2, 3],
            created_at: now_ms(),
        })
        .await
        .expect("channel");
    id
}

fn event(f: &Fixture, external_id: &str, conv_key: &str, platform_ts: i64) -> NewInboxEvent {
    NewInboxEvent {
        tenant_id: f.tenant.clone(),
        channel_id: f.channel.clone(),
        platform: "whatsapp".into(),
        external_id: external_id.into(),
        kind: "message".into(),
        conv_key: conv_key.into(),
        platform_ts,
        payload: "{}".into(),
        received_at: now_ms(),
    }
}

fn batch(events: Vec<NewInboxEvent>) -> IngressBatch {
    IngressBatch {
        events,
        ..Default::default()
    }
}

async fn ingress_dedupes_on_channel_and_platform_id(backend: Backend) {
    let f = fixture(backend).await;
    let outcomes = f
        .store
        .commit_ingress(&[
            batch(vec![
                event(&f, "wamid.1", "k1", 1),
                event(&f, "wamid.2", "k1", 2),
            ]),
            batch(vec![
                event(&f, "wamid.2", "k1", 2),
                event(&f, "wamid.3", "k2", 1),
            ]),
        ])
        .await
        .expect("commit");
    assert_eq!(
        outcomes,
        vec![
            IngressOutcome {
                inserted: 2,
                duplicates: 0
            },
            IngressOutcome {
                inserted: 1,
                duplicates: 1
            }
        ]
    );
    let again = f
        .store
        .commit_ingress(&[batch(vec![event(&f, "wamid.1", "k1", 1)])])
        .await
        .expect("commit");
    assert_eq!(
        again,
        vec![IngressOutcome {
            inserted: 0,
            duplicates: 1
        }]
    );
    // A stored id between new ones: only the new ones count as stored, each for
    // the first request that carried it (the insert returns the ids it stored).
    let mixed = f
        .store
        .commit_ingress(&[
            batch(vec![
                event(&f, "wamid.4", "k1", 4),
                event(&f, "wamid.1", "k1", 1),
                event(&f, "wamid.5", "k3", 1),
            ]),
            batch(vec![
                event(&f, "wamid.5", "k3", 1),
                event(&f, "wamid.6", "k4", 1),
            ]),
        ])
        .await
        .expect("commit");
    assert_eq!(
        mixed,
        vec![
            IngressOutcome {
                inserted: 2,
                duplicates: 1
            },
            IngressOutcome {
                inserted: 1,
                duplicates: 1
            }
        ]
    );
    // The same platform id on another channel is another event.
    let other = channel(f.store.as_ref(), &f.tenant, "901").await;
    let mut e = event(&f, "wamid.1", "k9", 1);
    e.channel_id = other;
    let outcome = f
        .store
        .commit_ingress(&[batch(vec![e])])
        .await
        .expect("commit");
    assert_eq!(outcome[0].inserted, 1);
}

async fn claims_follow_platform_order_one_per_conversation(backend: Backend) {
    let f = fixture(backend).await;
    // Inserted out of platform order.
    f.store
        .commit_ingress(&[batch(vec![
            event(&f, "a3", "A", 300),
            event(&f, "a1", "A", 100),
            event(&f, "b1", "B", 150),
            event(&f, "a2", "A", 200),
        ])])
        .await
        .expect("commit");
    let now = now_ms();
    let first = f
        .store
        .claim_inbox("w", now, 60_000, 10)
        .await
        .expect("claim");
    let mut ids: Vec<_> = first.iter().map(|i| i.external_id.clone()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["a1", "b1"],
        "one event per conversation, the earliest"
    );
    assert!(f
        .store
        .claim_inbox("w", now, 60_000, 10)
        .await
        .expect("claim")
        .is_empty());
    let mut order = vec!["a1".to_string()];
    let mut current = first
        .into_iter()
        .find(|i| i.external_id == "a1")
        .expect("a1");
    let done = |item: &InboxItem| Completion {
        inbox_id: item.id,
        owner: "w".into(),
        tenant_id: f.tenant.clone(),
        outcome: "ok".into(),
        now,
        effects: vec![],
        hand_off: None,
    };
    for _ in 0..2 {
        let completed = f
            .store
            .complete_inbox(&done(&current))
            .await
            .expect("complete");
        assert!(completed.kept);
        // The worker claims again only when told the next event may be ready.
        assert!(
            completed.more,
            "{} has a later event open",
            order.last().unwrap()
        );
        assert!(f
            .store
            .open_besides(current.id)
            .await
            .expect("open besides"));
        let next = f
            .store
            .claim_inbox("w", now, 60_000, 10)
            .await
            .expect("claim");
        assert_eq!(next.len(), 1);
        order.push(next[0].external_id.clone());
        current = next.into_iter().next().expect("next");
    }
    assert_eq!(order, ["a1", "a2", "a3"]);
    let last = f
        .store
        .complete_inbox(&done(&current))
        .await
        .expect("complete");
    assert!(last.kept && !last.more, "a3 was the last open event of A");
    assert!(!f
        .store
        .open_besides(current.id)
        .await
        .expect("open besides"));
    // b1 is still leased; a later event of B committed meanwhile is seen by its
    // completion, and by the look after it.
    let b1 = f
        .store
        .claim_inbox("w", now + 120_000, 60_000, 10)
        .await
        .expect("claim b1 again");
    assert_eq!(b1.len(), 1);
    assert!(!f.store.open_besides(b1[0].id).await.expect("open besides"));
    f.store
        .commit_ingress(&[batch(vec![event(&f, "b2", "B", 250)])])
        .await
        .expect("commit b2");
    assert!(f.store.open_besides(b1[0].id).await.expect("open besides"));
    let b = f
        .store
        .complete_inbox(&done(&b1[0]))
        .await
        .expect("complete b1");
    assert!(b.kept && b.more, "b2 waits behind b1");
}

async fn expired_lease_is_reclaimed_and_the_old_owner_cannot_complete(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .commit_ingress(&[batch(vec![event(&f, "x1", "X", 1)])])
        .await
        .expect("commit");
    let now = now_ms();
    let claimed = f
        .store
        .claim_inbox("old", now, 1_000, 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // Still leased: nobody else gets it.
    assert!(f
        .store
        .claim_inbox("new", now + 500, 1_000, 1)
        .await
        .expect("claim")
        .is_empty());
    // After expiry another worker takes it over.
    let reclaimed = f
        .store
        .claim_inbox("new", now + 1_001, 1_000, 1)
        .await
        .expect("claim");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].attempts, 2);
    let by_old = Completion {
        inbox_id: claimed[0].id,
        owner: "old".into(),
        tenant_id: f.tenant.clone(),
        outcome: "late".into(),
        now,
        effects: vec![],
        hand_off: None,
    };
    assert!(
        !f.store
            .complete_inbox(&by_old)
            .await
            .expect("complete")
            .kept,
        "a lost lease cannot complete"
    );
    let by_new = Completion {
        owner: "new".into(),
        outcome: "ok".into(),
        ..by_old
    };
    assert!(
        f.store
            .complete_inbox(&by_new)
            .await
            .expect("complete")
            .kept
    );
    assert!(f
        .store
        .claim_inbox("any", now + 10_000, 1_000, 1)
        .await
        .expect("claim")
        .is_empty());
}

async fn conversation_with_reply(f: &Fixture, chat: &str) -> String {
    let conversation = f
        .store
        .resolve_conversation(&ConversationKey {
            tenant_id: f.tenant.clone(),
            channel_id: f.channel.clone(),
            chat: chat.into(),
            user_id: chat.into(),
            phone: Some(chat.into()),
            username: None,
            name: Some("Customer".into()),
            now: now_ms(),
        })
        .await
        .expect("resolve");
    let message = NewMessage {
        id: new_id(),
        direction: "outbound",
        author: "assistant",
        kind: "text".into(),
        text: Some("hello".into()),
        content: None,
        external_id: None,
        reply_to: None,
        status: "queued",
        produced_by: Some("kb".into()),
        platform_ts: None,
        created_at: now_ms(),
    };
    f.store
        .apply(
            &f.tenant,
            &[Effect::EnqueueReply {
                conversation_id: conversation.id.clone(),
                channel_id: f.channel.clone(),
                recipient: chat.into(),
                message,
                parts: vec!["part one".into(), "part two".into()],
            }],
        )
        .await
        .expect("enqueue");
    conversation.id
}

async fn reclaimed_send_is_flagged_as_possible_duplicate(backend: Backend) {
    let f = fixture(backend).await;
    let conversation = conversation_with_reply(&f, "15550001").await;
    let now = now_ms();
    let first = f
        .store
        .claim_outbox("d1", now, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1, "parts of one conversation go one at a time");
    assert_eq!((first[0].part, first[0].possible_duplicate), (0, false));
    // The sender died mid-call: the part comes back, flagged.
    let again = f
        .store
        .claim_outbox("d2", now + 1_001, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert!(again[0].possible_duplicate);
    f.store
        .finish_send(
            again[0].id,
            "d1",
            &SendOutcome::Sent {
                external_id: "late".into(),
                at: now,
            },
        )
        .await
        .expect("stale");
    assert!(
        f.store
            .finish_send(
                again[0].id,
                "d2",
                &SendOutcome::Sent {
                    external_id: "wamid.a".into(),
                    at: now,
                },
            )
            .await
            .expect("finish"),
        "part two waits"
    );
    let second = f
        .store
        .claim_outbox("d2", now + 1_002, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!((second.len(), second[0].part), (1, 1));
    assert!(
        !f.store
            .finish_send(
                second[0].id,
                "d2",
                &SendOutcome::Sent {
                    external_id: "wamid.b".into(),
                    at: now,
                },
            )
            .await
            .expect("finish"),
        "nothing else waits in the conversation"
    );
    let messages = f
        .store
        .messages(&f.tenant, &conversation)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].status, "sent");
    assert_eq!(messages[0].external_id.as_deref(), Some("wamid.a"));
    assert!(messages[0].possible_duplicate);
    assert!(f
        .store
        .outbound_exists(&f.channel, "wamid.b")
        .await
        .expect("exists"));
}

/// A completion whose worker reserved a dispatcher slot gets its reply's first part
/// leased in the same transaction, unless an earlier part of the conversation
/// waits or the lease on the event was lost; the provider calls are recorded with it.
async fn a_completion_hands_its_reply_over_leased(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .commit_ingress(&[batch(vec![
            event(&f, "in.1", "c1", 1),
            event(&f, "in.2", "c2", 1),
        ])])
        .await
        .expect("commit");
    let now = now_ms();
    let claimed = f
        .store
        .claim_inbox("w", now, 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let fresh = f
        .store
        .resolve_conversation(&ConversationKey {
            tenant_id: f.tenant.clone(),
            channel_id: f.channel.clone(),
            chat: "15550010".into(),
            user_id: "15550010".into(),
            phone: None,
            username: None,
            name: None,
            now,
        })
        .await
        .expect("resolve");
    // A conversation whose earlier reply (two parts) has not gone out yet.
    let waiting = conversation_with_reply(&f, "15550020").await;
    let reply = |conversation: &str, recipient: &str| {
        let message = NewMessage {
            id: new_id(),
            direction: "outbound",
            author: "assistant",
            kind: "text".into(),
            text: Some("answer".into()),
            content: None,
            external_id: None,
            reply_to: None,
            status: "queued",
            produced_by: Some("anthropic/m".into()),
            platform_ts: None,
            created_at: now,
        };
        Effect::EnqueueReply {
            conversation_id: conversation.into(),
            channel_id: f.channel.clone(),
            recipient: recipient.into(),
            message,
            parts: vec!["answer one".into(), "answer two".into()],
        }
    };
    let hand_off = Some(HandOff {
        owner: "d-here".into(),
        lease_until: now + 60_000,
    });
    let usage = AiCall {
        provider: "anthropic".into(),
        model: "m".into(),
        outcome: "ok".into(),
        input_tokens: 12,
        output_tokens: 34,
        cost_micros: 5,
        created_at: now,
    };
    let completion = |item: &InboxItem, owner: &str, effects: Vec<Effect>| Completion {
        inbox_id: item.id,
        owner: owner.into(),
        tenant_id: f.tenant.clone(),
        outcome: "replied".into(),
        now,
        effects,
        hand_off: hand_off.clone(),
    };

    // The lease was lost: nothing is written, nothing handed over.
    let lost = f
        .store
        .complete_inbox(&completion(
            &claimed[0],
            "someone-else",
            vec![reply(&fresh.id, "15550010")],
        ))
        .await
        .expect("complete");
    assert!(!lost.kept && lost.handed.is_empty());

    let done = f
        .store
        .complete_inbox(&completion(
            &claimed[0],
            "w",
            vec![
                reply(&fresh.id, "15550010"),
                Effect::RecordAiCalls {
                    conversation_id: fresh.id.clone(),
                    calls: vec![usage.clone()],
                },
            ],
        ))
        .await
        .expect("complete");
    assert!(done.kept);
    let [part] = done.handed.as_slice() else {
        panic!("the first part is handed over: {:?}", done.handed);
    };
    assert_eq!(
        (
            part.part,
            part.text.as_str(),
            part.attempts,
            part.possible_duplicate
        ),
        (0, "answer one", 1, false)
    );
    assert_eq!(part.recipient, "15550010");
    // Leased: a claim finds neither it nor the part behind it.
    let others = f
        .store
        .claim_outbox("d-other", now, 60_000, 10)
        .await
        .expect("claim");
    assert!(
        others.iter().all(|o| o.conversation_id != fresh.id),
        "the handed part is leased and the second waits behind it"
    );
    assert!(
        f.store
            .finish_send(
                part.id,
                "d-here",
                &SendOutcome::Sent {
                    external_id: "wamid.h1".into(),
                    at: now,
                },
            )
            .await
            .expect("sent"),
        "the second part waits"
    );
    assert!(f
        .store
        .outbound_exists(&f.channel, "wamid.h1")
        .await
        .expect("exists"));
    let usage_rows = f.store.ai_usage(&f.tenant).await.expect("usage");
    assert_eq!(usage_rows.len(), 1);
    assert_eq!(
        (usage_rows[0].calls, usage_rows[0].output_tokens),
        (1, 34),
        "the calls are recorded with the answer"
    );

    // An earlier reply of the conversation waits: the new one queues behind it.
    let behind = f
        .store
        .complete_inbox(&completion(
            &claimed[1],
            "w",
            vec![reply(&waiting, "15550020")],
        ))
        .await
        .expect("complete");
    assert!(behind.kept);
    assert!(behind.handed.is_empty(), "order within the conversation");
}

async fn reads_are_scoped_by_tenant(backend: Backend) {
    let f = fixture(backend).await;
    let conversation = conversation_with_reply(&f, "15550002").await;
    let other = store_tenant(f.store.as_ref(), "other").await;
    assert!(f
        .store
        .conversation(&other, &conversation)
        .await
        .expect("get")
        .is_none());
    assert!(f
        .store
        .messages(&other, &conversation)
        .await
        .expect("get")
        .is_empty());
    assert!(f
        .store
        .list_conversations(
            &other,
            &ConversationFilter {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .expect("list")
        .is_empty());
    assert!(f
        .store
        .list_channels(&other)
        .await
        .expect("list")
        .is_empty());
    assert!(!f
        .store
        .delete_channel(&other, &f.channel)
        .await
        .expect("delete"));
    // Effects carrying another tenant's id change nothing.
    f.store
        .apply(
            &other,
            &[Effect::SetConversationStatus {
                conversation_id: conversation.clone(),
                status: "human",
            }],
        )
        .await
        .expect("apply");
    let mine = f
        .store
        .conversation(&f.tenant, &conversation)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(mine.status, "bot");
}

async fn full_text_search_ranks_and_scopes(backend: Backend) {
    let f = fixture(backend).await;
    let doc = |tenant: &str, text: &str| NewDocument {
        id: new_id(),
        tenant_id: tenant.into(),
        title: "Doc".into(),
        url: None,
        text: text.into(),
        passages: vec![text.into()],
        created_at: now_ms(),
    };
    f.store
        .add_document(&doc(
            &f.tenant,
            "Returns are accepted within thirty days of delivery.",
        ))
        .await
        .expect("add");
    f.store
        .add_document(&doc(
            &f.tenant,
            "Shipping is free for orders over fifty euros; shipping takes three days.",
        ))
        .await
        .expect("add");
    let other = store_tenant(f.store.as_ref(), "other").await;
    f.store
        .add_document(&doc(&other, "Shipping secrets of the other tenant."))
        .await
        .expect("add");
    let terms = vec!["shipping".to_string(), "days".to_string()];
    let found = f
        .store
        .search_passages(&f.tenant, &terms, 5)
        .await
        .expect("search");
    assert_eq!(found.len(), 2);
    assert!(
        found[0].text.starts_with("Shipping is free"),
        "{:?}",
        found[0]
    );
    assert!(found.iter().all(|p| !p.text.contains("other tenant")));
    // Stemming: "returned" finds "Returns".
    let stemmed = f
        .store
        .search_passages(&f.tenant, &["returned".to_string()], 5)
        .await
        .expect("search");
    assert_eq!(stemmed.len(), 1);
    assert!(f
        .store
        .search_passages(&f.tenant, &[], 5)
        .await
        .expect("search")
        .is_empty());
}

/// An answer searches the knowledge only when the tenant has some: the flag read with
/// the settings is the tenant's own, and the settings come with it, defaults or saved;
/// the policy's read carries the same.
async fn answer_settings_say_whether_the_tenant_has_knowledge(backend: Backend) {
    let f = fixture(backend).await;
    let other = store_tenant(f.store.as_ref(), "other").await;
    let doc = |tenant: &str| NewDocument {
        id: new_id(),
        tenant_id: tenant.into(),
        title: "Doc".into(),
        url: None,
        text: "Returns within thirty days.".into(),
        passages: vec!["Returns within thirty days.".into()],
        created_at: now_ms(),
    };
    f.store.add_document(&doc(&other)).await.expect("add");
    // The policy's read carries the same answer (the worker reads them together).
    let policy = |tenant: String| {
        let store = f.store.clone();
        async move {
            store
                .policy_state(&tenant, "no-such-contact")
                .await
                .expect("read")
                .answer
        }
    };
    let (settings, knowledge) = f.store.answer_settings(&f.tenant).await.expect("read");
    assert_eq!(settings, AssistantSettings::default());
    assert!(!knowledge, "another tenant's document is not this tenant's");
    assert_eq!(policy(f.tenant.clone()).await, (settings, knowledge));

    let saved = AssistantSettings {
        persona: "Ada from the shop".into(),
        business_facts: "Open 9-17.".into(),
        language: Some("de".into()),
        providers: Some(vec!["openai".into()]),
        allowed_providers: Some(vec!["openai".into(), "gemini".into()]),
        review_required: true,
    };
    f.store
        .put_assistant_settings(&f.tenant, &saved, now_ms())
        .await
        .expect("put");
    f.store.add_document(&doc(&f.tenant)).await.expect("add");
    let (settings, knowledge) = f.store.answer_settings(&f.tenant).await.expect("read");
    assert_eq!(settings, saved);
    assert!(knowledge);
    assert_eq!(policy(f.tenant.clone()).await, (saved.clone(), true));
    assert_eq!(
        policy(other.clone()).await,
        (AssistantSettings::default(), true),
        "the other tenant has its document and no settings"
    );
    assert_eq!(
        f.store.assistant_settings(&f.tenant).await.expect("read"),
        Some(saved)
    );
}

/// The worker reads no history for a conversation its own resolve created (nothing
/// can be stored in it yet): only that resolve says `created`.
async fn a_resolve_says_whether_it_created_the_conversation(backend: Backend) {
    let f = fixture(backend).await;
    let key = |name: &str| ConversationKey {
        tenant_id: f.tenant.clone(),
        channel_id: f.channel.clone(),
        chat: "15550001".into(),
        user_id: "15550001".into(),
        phone: Some("15550001".into()),
        username: None,
        name: Some(name.into()),
        now: now_ms(),
    };
    let first = f
        .store
        .resolve_conversation(&key("Ann"))
        .await
        .expect("resolve");
    assert!(first.created, "the first message creates the conversation");
    let again = f
        .store
        .resolve_conversation(&key("Ann"))
        .await
        .expect("resolve");
    assert_eq!(again.id, first.id);
    assert!(!again.created, "known, nothing changed");
    // A changed name goes through the writes again; the conversation is the same one.
    let renamed = f
        .store
        .resolve_conversation(&key("Ann B"))
        .await
        .expect("resolve");
    assert_eq!(renamed.id, first.id);
    assert!(
        !renamed.created,
        "a changed name does not make a new conversation"
    );
}
