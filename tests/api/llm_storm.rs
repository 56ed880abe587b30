//! LLM providers failing in storms while several conversations run: HTTP 500, 503,
//! 529 and 429 with and without `retry-after`, connection resets, requests that hang
//! past the timeout, answers trickled slower than the timeout, garbage bodies.
//!
//! What the product promises (src/assistant): a message is answered by the first
//! provider that answers in time, in the tenant's order; when none can, the customer
//! is told once that a person will get back to them and the event is retried until a
//! provider answers. Every customer message gets exactly one answer, nothing is lost,
//! each provider is asked at most once per attempt at a message, a provider whose
//! circuit is open is not asked at all, and one that sent `retry-after` is not asked
//! again before it expires.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_llm::{ai_toml, FakeLlm, Kind, Mode};
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_provider_storm_fails_over_and_answers_every_message_once,
    every_provider_down_holds_each_conversation_once_then_answers_it_once,
);

const SECRET: &str = "storm-secret";
const PHONE: &str = "7001";
/// Each provider call may take this long; hanging and trickling calls take longer.
const TIMEOUT_MS: u64 = 400;
/// One byte of a trickled answer per this interval: a few hundred bytes take seconds.
const TRICKLE: Duration = Duration::from_millis(40);

async fn gateway(
    backend: Backend,
    fakes: &[&FakeLlm],
    breaker_failures: u32,
    breaker_cooldown_ms: u64,
) -> (TestApp, Tenant, String) {
    // The breaker keys belong to [ai], before the provider sections.
    let toml = ai_toml(fakes, TIMEOUT_MS).replacen(
        "[ai.",
        &format!(
            "breaker_failures = {breaker_failures}\nbreaker_cooldown_ms = {breaker_cooldown_ms}\n[ai."
        ),
        1,
    );
    let app = TestApp::spawn_with(backend, &toml).await;
    let tenant = app.create_tenant("Storm").await;
    let channel = app.create_whatsapp(&tenant, PHONE, Some(SECRET)).await;
    (app, tenant, channel)
}

fn customer(i: usize) -> String {
    format!("1555300{i:04}")
}

async fn say(app: &TestApp, channel: &str, i: usize, wamid: &str, text: &str) {
    let body = wa_texts(PHONE, &[(&customer(i), wamid, text)]);
    assert_eq!(app.deliver(channel, SECRET, &body).await, 200);
}

/// Texts the fake WhatsApp API accepted, per customer, in order.
fn delivered(app: &TestApp) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in app.graph.delivered() {
        out.entry(r.body["to"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(
                r.body["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
    }
    out
}

async fn wait_delivered(app: &TestApp, what: &str, customers: usize, each: usize) {
    wait_until(what, || async {
        let sent = delivered(app);
        sent.len() == customers && sent.values().all(|texts| texts.len() >= each)
    })
    .await;
}

/// Every message of every conversation, by customer.
async fn conversations(app: &TestApp, tenant: &Tenant) -> HashMap<String, Vec<Value>> {
    let mut out = HashMap::new();
    for c in app.conversations(tenant).await {
        let id = c["id"].as_str().expect("id");
        let messages = app.messages(tenant, id).await;
        let from = messages
            .iter()
            .find(|m| m["direction"] == "inbound")
            .map(|m| m["external_id"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        out.insert(from, messages);
    }
    out
}

fn answered_by(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .filter(|m| m["author"] == "assistant")
        .map(|m| m["produced_by"].as_str().unwrap_or_default())
        .collect()
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Anthropic, first in line, fails every call in a different way; OpenAI, second,
/// fails most of its calls; Gemini answers. A burst of conversations is answered
/// once each, by OpenAI or Gemini, with each provider asked at most once per message.
/// Then Anthropic's circuit is open and it is asked no more, and OpenAI's
/// `retry-after` keeps it unasked until it expires.
async fn a_provider_storm_fails_over_and_answers_every_message_once(backend: Backend) {
    let anthropic = FakeLlm::start(Kind::Anthropic, Mode::Status(500)).await;
    let openai = FakeLlm::start(Kind::OpenAi, Mode::Status(500)).await;
    let gemini = FakeLlm::start(Kind::Gemini, Mode::Answer("GEMINI-ANSWER".into())).await;
    let anthropic_storm = vec![
        Mode::Status(500),
        Mode::Status(529),
        Mode::Status(429),
        Mode::Status(503),
        Mode::Reset,
        Mode::Garbage,
        Mode::Hang("ANTHROPIC-LATE".into()),
        Mode::Trickle("ANTHROPIC-SLOW".into(), TRICKLE),
    ];
    let burst = anthropic_storm.len();
    anthropic.set_storm(anthropic_storm);
    openai.set_storm(vec![
        Mode::Reset,
        Mode::Trickle("OPENAI-SLOW".into(), TRICKLE),
        Mode::Garbage,
        Mode::Answer("OPENAI-ANSWER".into()),
    ]);
    // The breaker opens only after as many failures as the burst has messages, so
    // every message of the burst meets Anthropic's storm.
    let (app, tenant, channel) = gateway(
        backend,
        &[&anthropic, &openai, &gemini],
        burst as u32,
        60_000,
    )
    .await;

    for i in 0..burst {
        say(
            &app,
            &channel,
            i,
            &format!("wamid.burst.{i}"),
            "Where is my order?",
        )
        .await;
    }
    wait_delivered(&app, "one answer per customer of the burst", burst, 1).await;

    // Each provider was asked at most once per message; Anthropic (which never
    // answered) once per message, meeting each of its faults once.
    assert_eq!(anthropic.requests().len(), burst);
    let mut faults: Vec<String> = anthropic
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.mode))
        .collect();
    faults.sort();
    faults.dedup();
    assert_eq!(faults.len(), burst, "{faults:?}");
    assert_eq!(openai.requests().len(), burst);
    let by_provider = |all: &HashMap<String, Vec<Value>>, name: &str| {
        all.values()
            .flat_map(|m| answered_by(m))
            .filter(|p| p.starts_with(name))
            .count()
    };
    wait_until("answers recorded", || async {
        conversations(&app, &tenant)
            .await
            .values()
            .all(|m| answered_by(m).len() == 1)
    })
    .await;
    let all = conversations(&app, &tenant).await;
    assert_eq!(all.len(), burst);
    let openai_answers = openai
        .requests()
        .iter()
        .filter(|r| matches!(r.mode, Mode::Answer(_)))
        .count();
    assert_eq!(by_provider(&all, "openai/"), openai_answers);
    // Gemini is asked exactly for the messages OpenAI did not answer.
    assert_eq!(gemini.requests().len(), burst - openai_answers);
    assert_eq!(by_provider(&all, "gemini/"), burst - openai_answers);
    assert_eq!(by_provider(&all, "anthropic/"), 0);

    // Anthropic's circuit is open now: the next messages never reach it. OpenAI
    // answers 429 with `retry-after: 2`, then would answer, but is not asked again
    // before the two seconds are over.
    let mut throttle = vec![Mode::StatusRetryAfter(429, 2)];
    throttle.extend(vec![Mode::Answer("OPENAI-BACK".into()); 20]);
    openai.set_storm(throttle);
    let asked_before = openai.requests().len();
    for i in burst..burst + 3 {
        say(
            &app,
            &channel,
            i,
            &format!("wamid.after.{i}"),
            "Still there?",
        )
        .await;
        wait_delivered(&app, "answer after the storm", i + 1, 1).await;
    }
    let throttled = openai.requests()[asked_before].clone();
    assert!(
        matches!(throttled.mode, Mode::StatusRetryAfter(429, 2)),
        "{:?}",
        throttled.mode
    );
    // Past the retry-after (with a margin for the gateway to have read the 429):
    // OpenAI is asked again and answers.
    tokio::time::sleep_until((throttled.at + Duration::from_millis(2_500)).into()).await;
    let last = burst + 3;
    say(&app, &channel, last, "wamid.back", "Hello again").await;
    wait_delivered(&app, "answer once openai is back", last + 1, 1).await;
    let later = &openai.requests()[asked_before..];
    assert!(later.len() >= 2, "asked again after the wait");
    for call in &later[1..] {
        let after = call.at.duration_since(throttled.at);
        assert!(
            after >= Duration::from_secs(2),
            "openai asked {after:?} after its retry-after of 2 s"
        );
    }
    assert_eq!(
        anthropic.requests().len(),
        burst,
        "an open circuit keeps the failing provider out"
    );

    // Nothing lost, nothing twice: every customer wrote once and got exactly one
    // answer, from a provider that answered in time.
    wait_until("all answers recorded", || async {
        let all = conversations(&app, &tenant).await;
        all.len() == last + 1 && all.values().all(|m| answered_by(m).len() == 1)
    })
    .await;
    let sent = delivered(&app);
    assert_eq!(sent.len(), last + 1);
    for (to, texts) in &sent {
        assert_eq!(texts.len(), 1, "{to}: {texts:?}");
        let text = &texts[0];
        assert!(
            ["GEMINI-ANSWER", "OPENAI-ANSWER", "OPENAI-BACK"]
                .iter()
                .any(|a| text.contains(a)),
            "{to}: {text}"
        );
        assert!(
            !text.contains("ANTHROPIC") && !text.contains("SLOW"),
            "{text}"
        );
    }
    let all = conversations(&app, &tenant).await;
    for messages in all.values() {
        assert_eq!(
            messages
                .iter()
                .filter(|m| m["direction"] == "inbound")
                .count(),
            1
        );
        assert!(messages.iter().all(|m| m["author"] != "system"));
    }
    assert_eq!(
        answered_by(&all["wamid.back"]),
        ["openai/gpt-test"],
        "openai answers once its retry-after is over"
    );
    // Every call the fakes saw is in the gateway's own accounting, and no other.
    let calls = anthropic.requests().len() + openai.requests().len() + gemini.requests().len();
    let (_, usage) = app.get_json(&tenant, "/api/v1/usage/ai").await;
    assert_eq!(usage["total"]["calls"], calls as u64, "{usage}");
    let metrics = metrics(&app).await;
    assert!(
        metrics.contains("omnigate_ai_circuit_open{provider=\"anthropic\"} 1"),
        "{metrics}"
    );
    anthropic.release();
}

/// Every provider fails: Anthropic with 529 and `retry-after: 120`, OpenAI and Gemini
/// in storms without one. Each conversation is told once that a person will get
/// back to it; when Gemini recovers, each held message is answered exactly once and
/// the conversations return to the assistant. Meanwhile Anthropic is not asked again
/// inside its retry-after, and the failing OpenAI only by one probe per cool-down.
async fn every_provider_down_holds_each_conversation_once_then_answers_it_once(backend: Backend) {
    const CONVERSATIONS: usize = 6;
    const COOLDOWN: Duration = Duration::from_millis(1000);
    let anthropic = FakeLlm::start(Kind::Anthropic, Mode::StatusRetryAfter(529, 120)).await;
    let openai = FakeLlm::start(Kind::OpenAi, Mode::Status(429)).await;
    let gemini = FakeLlm::start(Kind::Gemini, Mode::Status(503)).await;
    openai.set_storm(vec![
        Mode::Status(429),
        Mode::Trickle("OPENAI-SLOW".into(), TRICKLE),
        Mode::Reset,
        Mode::Garbage,
    ]);
    gemini.set_storm(vec![
        Mode::Status(503),
        Mode::Hang("GEMINI-LATE".into()),
        Mode::Status(500),
        Mode::Reset,
    ]);
    let (app, tenant, channel) = gateway(
        backend,
        &[&anthropic, &openai, &gemini],
        2,
        COOLDOWN.as_millis() as u64,
    )
    .await;

    for i in 0..CONVERSATIONS {
        say(
            &app,
            &channel,
            i,
            &format!("wamid.down.{i}"),
            "Is anyone there?",
        )
        .await;
    }
    wait_delivered(&app, "one holding message each", CONVERSATIONS, 1).await;
    let held_at = Instant::now();
    let anthropic_in_first_wave = anthropic.requests().len();
    let openai_in_first_wave = openai.requests().len();
    for texts in delivered(&app).values() {
        assert_eq!(texts.len(), 1);
        assert!(texts[0].contains("get back to you"), "{texts:?}");
    }
    for c in app.conversations(&tenant).await {
        assert_eq!(c["status"], "human", "a person has it meanwhile");
    }
    // Asked at most once per message so far.
    assert!(anthropic_in_first_wave <= CONVERSATIONS);
    assert!(openai_in_first_wave <= CONVERSATIONS);
    assert!(gemini.requests().len() <= CONVERSATIONS);

    // Gemini recovers; OpenAI and Anthropic stay down.
    gemini.set_mode(Mode::Answer(
        "Sorry for the wait: here is your answer.".into(),
    ));
    wait_delivered(&app, "every held message answered", CONVERSATIONS, 2).await;
    for (to, texts) in delivered(&app) {
        assert_eq!(texts.len(), 2, "{to}: {texts:?}");
        assert!(texts[1].contains("here is your answer"), "{to}: {texts:?}");
    }
    wait_until("conversations back with the assistant", || async {
        app.conversations(&tenant)
            .await
            .iter()
            .all(|c| c["status"] == "bot")
    })
    .await;

    // A follow-up in every conversation is answered by the assistant, after the held
    // message: one more answer each, and still one holding message each.
    for i in 0..CONVERSATIONS {
        say(&app, &channel, i, &format!("wamid.next.{i}"), "Thanks!").await;
    }
    wait_delivered(&app, "follow-ups answered", CONVERSATIONS, 3).await;
    let all = conversations(&app, &tenant).await;
    assert_eq!(all.len(), CONVERSATIONS);
    for (to, texts) in delivered(&app) {
        assert_eq!(texts.len(), 3, "{to}: {texts:?}");
        assert_eq!(
            texts
                .iter()
                .filter(|t| t.contains("get back to you"))
                .count(),
            1,
            "{to}: {texts:?}"
        );
    }
    for messages in all.values() {
        let kinds: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| {
                (
                    m["direction"].as_str().unwrap_or_default(),
                    m["author"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("inbound", "customer"),
                ("outbound", "system"),
                ("outbound", "assistant"),
                ("inbound", "customer"),
                ("outbound", "assistant"),
            ],
            "{messages:?}"
        );
        assert_eq!(answered_by(messages), ["gemini/gemini-test"; 2]);
    }

    // Backoff: Anthropic said 120 s and was not asked again; the failing OpenAI got at
    // most one probe per cool-down once its circuit had opened.
    assert_eq!(
        anthropic.requests().len(),
        anthropic_in_first_wave,
        "asked inside its retry-after"
    );
    let elapsed = held_at.elapsed();
    let probes = openai.requests().len() - openai_in_first_wave;
    let windows = (elapsed.as_millis() / COOLDOWN.as_millis()) as usize + 2;
    assert!(
        probes <= windows,
        "{probes} calls to a failing provider in {elapsed:?} with a {COOLDOWN:?} cool-down"
    );
    eprintln!(
        "all down: anthropic {} calls, openai {} (+{probes} probes in {elapsed:?}), gemini {}",
        anthropic.requests().len(),
        openai_in_first_wave,
        gemini.requests().len()
    );
    gemini.release();
}
