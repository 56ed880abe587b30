//! Discord: the interactions endpoint (Ed25519, replay window, PING); the bot's gateway session run
//! by the gateway's supervisor through serenity against a fake Discord (REST API and
//! Gateway WebSocket, `fake_discord.rs`): one reply per direct message, none to bots
//! or to guild chatter, a resume that replays events without second replies, deleted
//! messages losing their text; and the session lease that lets exactly one instance
//! hold each bot's session, shown with running instances taking over from each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_discord::*;
use crate::fake_slack::unix_now;
use crate::helpers::*;
use crate::on_both_backends;
use crate::process::{create_tenant, free_port, Gateway};

on_both_backends!(
    a_ping_is_answered_and_a_bad_signature_or_a_replay_is_401,
    one_instance_holds_a_gateway_lease_and_another_takes_over,
    the_session_answers_each_direct_message_once_and_never_bots,
    a_resume_replays_events_without_second_replies,
    an_edited_then_deleted_message_loses_its_text,
);

const PING: &str =
    include_str!("../../channels/tests/fixtures/discord/interaction-ping-signed.json");
const HOURS: &str =
    "Our opening hours are 9:00 to 17:00, Monday to Friday. We are closed on public holidays.";
const QUESTION: &str = "What are your opening hours?";
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Customers, their DM channels, a guild with a chatter channel and a support channel.
const USER_A: &str = "53908099506183680";
const USER_B: &str = "53908099506183681";
const DM_A: &str = "290926798999350001";
const DM_B: &str = "290926798999350002";
const DM_C: &str = "290926798999350003";
const GUILD: &str = "290926798626357250";
const CHATTER: &str = "290926798999357250";
const SUPPORT: &str = "290926798999357999";

/// The interactions endpoint: a PING signed now is answered with PONG; a bad or
/// missing signature, or a correctly signed interaction outside the five-minute
/// replay window (the 2024 fixture as captured, 6 minutes old or ahead), is 401 and
/// keeps nothing; 4 minutes either way is accepted.
async fn a_ping_is_answered_and_a_bad_signature_or_a_replay_is_401(backend: Backend) {
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
    let mut seed = [0u8; 32];
    hex::decode_to_slice(
        fixture["private_key_seed_hex_TEST_ONLY"].as_str().unwrap(),
        &mut seed,
    )
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
    // Signed now, the way Discord signs.
    let now = unix_now().to_string();
    let signature = webhooks::discord::sign(&seed, &now, body.as_bytes());
    let res = post(body.to_string(), Some(&signature), &now)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"type": 1}));

    // The fixture as captured (signed in 2024) is a replay now.
    let captured = post(
        body.to_string(),
        fixture["headers"]["X-Signature-Ed25519"].as_str(),
        fixture["headers"]["X-Signature-Timestamp"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(captured.await.unwrap().status(), 401);
    let tampered = body.replace("nelly", "nellx");
    assert_eq!(
        post(tampered, Some(&signature), &now)
            .await
            .unwrap()
            .status(),
        401
    );
    let moved = (now.parse::<i64>().unwrap() - 1).to_string();
    assert_eq!(
        post(body.to_string(), Some(&signature), &moved)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(body.to_string(), None, &now).await.unwrap().status(),
        401
    );
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"].as_array().unwrap().len(), 0);

    // A signed interaction we do not model yet: kept raw, answered so the user is
    // not left waiting.
    let command = r#"{"application_id":"1234560123453231555","id":"99","token":"t","type":2,"data":{"name":"help"},"version":1}"#;
    let signed_at = |skew: i64| {
        let ts = (unix_now() + skew).to_string();
        let signature = webhooks::discord::sign(&seed, &ts, command.as_bytes());
        post(command.to_string(), Some(&signature), &ts)
    };
    // Correctly signed, but 6 minutes old or 6 minutes ahead: outside the replay
    // window, refused and not kept.
    for skew in [-360, 360] {
        assert_eq!(signed_at(skew).await.unwrap().status(), 401, "{skew}");
    }
    let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
    assert_eq!(unhandled["items"].as_array().unwrap().len(), 0);
    // Inside the window: 4 minutes old, 4 minutes ahead, and now.
    for (n, skew) in [-240, 240, 0].into_iter().enumerate() {
        let res = signed_at(skew).await.unwrap();
        assert_eq!(res.status(), 200, "{skew}");
        assert_eq!(res.json::<Value>().await.unwrap()["type"], 4);
        let (_, unhandled) = app.get_json(&tenant, "/api/v1/events/unhandled").await;
        assert_eq!(
            unhandled["items"].as_array().unwrap().len(),
            n + 1,
            "{skew}"
        );
    }
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

/// The public key of fixtures/discord/interaction-ping-signed.json.
fn public_key() -> String {
    let fixture: Value = serde_json::from_str(PING).unwrap();
    fixture["public_key_hex"].as_str().unwrap().to_string()
}

/// The body that connects the fake's bot, with one support channel.
fn channel_body() -> Value {
    json!({"platform": "discord", "bot_token": BOT_TOKEN, "application_id": APPLICATION_ID,
           "public_key": public_key(), "support_channels": [SUPPORT]})
}

/// A gateway against a fake Discord, a tenant with a knowledge document and the bot
/// connected; returns once the supervisor's session has identified.
async fn setup(backend: Backend) -> (TestApp, FakeDiscord, Tenant) {
    let discord = FakeDiscord::start().await;
    let app = TestApp::spawn_with(backend, &discord.config()).await;
    let tenant = app.create_tenant("Acme").await;
    app.add_document(&tenant, "Hours", HOURS).await;
    let res = app
        .api(&tenant)
        .post(format!("{}/api/v1/channels", app.url))
        .json(&channel_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    wait_until("the gateway session identified", || async {
        discord.identifies().len() == 1
    })
    .await;
    (app, discord, tenant)
}

/// A `MESSAGE_CREATE` payload (shaped like fixtures/discord/gateway-message-create-dispatch.json):
/// a DM when `guild` is None.
fn message(id: &str, channel: &str, author: &str, bot: bool, content: &str) -> Value {
    json!({
        "id": id, "channel_id": channel, "type": 0, "content": content, "tts": false,
        "author": {"id": author, "username": format!("user{}", &author[author.len() - 2..]),
                   "discriminator": "0", "global_name": "Mason", "avatar": null, "bot": bot},
        "timestamp": "2026-03-01T10:00:00.000000+00:00", "edited_timestamp": null,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "reactions": []
    })
}

/// The same in a guild channel, mentioning the bot or not.
fn guild_message(id: &str, channel: &str, author: &str, content: &str, mention: bool) -> Value {
    let mut d = message(id, channel, author, false, content);
    d["guild_id"] = json!(GUILD);
    d["member"] = json!({"roles": [], "joined_at": "2025-01-01T00:00:00.000000+00:00",
                         "deaf": false, "mute": false, "flags": 0});
    if mention {
        d["content"] = json!(format!("<@{BOT_USER}> {content}"));
        d["mentions"] = json!([{"id": BOT_USER, "username": "shop", "discriminator": "0",
                                "avatar": null, "bot": true}]);
    }
    d
}

/// Replies posted per Discord channel.
fn replies_per_channel(discord: &FakeDiscord) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for reply in discord.replies() {
        *per.entry(reply.channel).or_default() += 1;
    }
    per
}

async fn wait_replies(discord: &FakeDiscord, n: usize) {
    wait_until(&format!("{n} replies"), || async {
        discord.replies().len() >= n
    })
    .await;
}

/// The connected bot's session, through serenity against the fake: discovery with
/// the bot token, one IDENTIFY with exactly the three intents it needs, heartbeats
/// acknowledged. Each direct message is answered once in its DM channel; messages of
/// bots (the bot itself included) and guild messages that do not mention the bot are
/// not even stored; a mention or the support channel is answered. On SQLite the one
/// instance holds the session. Stopping the gateway closes the session's socket.
async fn the_session_answers_each_direct_message_once_and_never_bots(backend: Backend) {
    let (app, discord, tenant) = setup(backend).await;
    let identify = &discord.identifies()[0];
    assert_eq!(identify.socket, 0);
    assert_eq!(identify.token, BOT_TOKEN);
    assert_eq!(
        identify.intents, NEEDED_INTENTS,
        "DIRECT_MESSAGES | GUILD_MESSAGES | MESSAGE_CONTENT, nothing else"
    );
    assert_eq!(discord.discoveries(), [Some(format!("Bot {BOT_TOKEN}"))]);
    let sockets = discord.sockets();
    assert_eq!(sockets.len(), 1);
    // serenity 0.12 asks for API v10 (JSON is the default encoding, no transport
    // compression) at the URL discovery gave.
    assert_eq!(sockets[0].target, "/?v=10");
    wait_until("a heartbeat", || async { discord.heartbeats() >= 1 }).await;

    // Two customers in their DMs: three messages, three replies.
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000001", DM_A, USER_A, false, QUESTION),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000002", DM_B, USER_B, false, QUESTION),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000003",
            DM_A,
            USER_A,
            false,
            "And on Saturday, what are the opening hours?",
        ),
    );
    wait_replies(&discord, 3).await;
    // Never answered: another bot, the bot itself, a guild message without a mention.
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000004",
            DM_C,
            "53908099506189999",
            true,
            QUESTION,
        ),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000005",
            DM_A,
            BOT_USER,
            true,
            "Our opening hours are 9:00 to 17:00.",
        ),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        guild_message("1400000000000000006", CHATTER, USER_B, QUESTION, false),
    );
    // Answered: a mention in the guild, and the support channel without one. Their
    // replies come after everything above was read.
    discord.dispatch(
        "MESSAGE_CREATE",
        guild_message("1400000000000000007", CHATTER, USER_A, QUESTION, true),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        guild_message("1400000000000000008", SUPPORT, USER_B, QUESTION, false),
    );
    wait_replies(&discord, 5).await;

    let per = replies_per_channel(&discord);
    assert_eq!(
        per,
        HashMap::from([
            (DM_A.to_string(), 2),
            (DM_B.to_string(), 1),
            (CHATTER.to_string(), 1),
            (SUPPORT.to_string(), 1)
        ])
    );
    for reply in discord.replies() {
        assert_eq!(reply.authorization, Some(format!("Bot {BOT_TOKEN}")));
        assert!(reply.body["content"]
            .as_str()
            .unwrap()
            .contains("9:00 to 17:00"));
    }
    let inbound: Vec<String> = app
        .all_messages(&tenant)
        .await
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["external_id"].as_str().unwrap().to_string())
        .collect();
    let mut stored = inbound.clone();
    stored.sort();
    assert_eq!(
        stored,
        [
            "1400000000000000001",
            "1400000000000000002",
            "1400000000000000003",
            "1400000000000000007",
            "1400000000000000008"
        ]
    );
    // The mention is not part of what the customer asked.
    let mentioned = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .find(|m| m["external_id"] == "1400000000000000007")
        .unwrap();
    assert_eq!(mentioned["text"], QUESTION);
    assert_eq!(
        discord.identifies().len(),
        1,
        "one session, identified once"
    );
    assert_eq!(discord.max_live(), 1);

    // A stopped gateway has closed the session's socket, cleanly, by the time it stops.
    let _ = app.stop().await;
    let sockets = discord.sockets();
    assert!(!sockets[0].open);
    assert_eq!(sockets[0].client_close, Some(1000));
}

/// The fake drops the session twice (a 4000 close, then a plain disconnect). serenity
/// resumes the session with its id and last sequence number; the fake replays its
/// whole history (as Discord may) plus what was sent while the socket was down. Every
/// message is still answered exactly once; nothing identifies again.
async fn a_resume_replays_events_without_second_replies(backend: Backend) {
    let (app, discord, tenant) = setup(backend).await;
    discord.replay_all_on_resume(true);
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000011", DM_A, USER_A, false, QUESTION),
    );
    let last = discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000012", DM_B, USER_B, false, QUESTION),
    );
    wait_replies(&discord, 2).await;

    discord.disconnect(Some(4000));
    // Sent while the socket is down: only a resume brings it.
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000013",
            DM_A,
            USER_A,
            false,
            "Are you open on Monday? opening hours",
        ),
    );
    wait_until("resumed", || async { discord.resumes().len() == 1 }).await;
    let resume = &discord.resumes()[0];
    assert_eq!(resume.session_id, discord.session_id());
    assert_eq!(resume.seq, last, "resumed from the last event read");
    assert_eq!(resume.socket, 1, "on a new socket");
    wait_replies(&discord, 3).await;

    discord.disconnect(None);
    wait_until("resumed again", || async { discord.resumes().len() == 2 }).await;
    assert_eq!(discord.resumes()[1].socket, 2);
    assert_eq!(discord.resumes()[1].session_id, discord.session_id());
    // On the resumed socket, business as usual.
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000014",
            DM_B,
            USER_B,
            false,
            "What are your opening hours today?",
        ),
    );
    wait_replies(&discord, 4).await;

    let per = replies_per_channel(&discord);
    assert_eq!(
        per,
        HashMap::from([(DM_A.to_string(), 2), (DM_B.to_string(), 2)])
    );
    let inbound = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "inbound")
        .count();
    assert_eq!(inbound, 4, "each message stored once");
    // One answer per message, in the store as at the fake.
    let answers = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["author"] == "assistant")
        .count();
    assert_eq!(answers, 4);
    assert_eq!(
        discord.identifies().len(),
        1,
        "resumed, never identified again"
    );
    let sockets = discord.sockets();
    assert_eq!(sockets.len(), 3);
    assert_eq!(
        discord.max_live(),
        1,
        "one socket at a time: {:?}",
        discord.log()
    );
}

/// MESSAGE_UPDATE changes the stored text; MESSAGE_DELETE (which names no author)
/// removes it, found by the message id in its DM's conversation, and leaves the other
/// messages and the replies. A deletion of a message never stored makes up nobody.
async fn an_edited_then_deleted_message_loses_its_text(backend: Backend) {
    let (app, discord, tenant) = setup(backend).await;
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000021", DM_A, USER_A, false, QUESTION),
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000022",
            DM_A,
            USER_A,
            false,
            "And what are your opening hours on holidays?",
        ),
    );
    wait_replies(&discord, 2).await;
    let stored = |id: &'static str| {
        let app = &app;
        let tenant = &tenant;
        async move {
            app.all_messages(tenant)
                .await
                .into_iter()
                .find(|m| m["external_id"] == id)
        }
    };

    let mut edited = message(
        "1400000000000000021",
        DM_A,
        USER_A,
        false,
        "What are your hours, please?",
    );
    edited["edited_timestamp"] = json!("2026-03-01T10:05:00.000000+00:00");
    discord.dispatch("MESSAGE_UPDATE", edited);
    wait_until("the edit applied", || async {
        stored("1400000000000000021").await.unwrap()["text"] == "What are your hours, please?"
    })
    .await;

    discord.dispatch(
        "MESSAGE_DELETE",
        json!({"id": "1400000000000000021", "channel_id": DM_A}),
    );
    wait_until("the deletion applied", || async {
        stored("1400000000000000021").await.unwrap()["kind"] == "deleted"
    })
    .await;
    let deleted = stored("1400000000000000021").await.unwrap();
    assert_eq!(deleted["text"], Value::Null);
    assert_eq!(deleted["status"], "deleted");
    let kept = stored("1400000000000000022").await.unwrap();
    assert_eq!(kept["text"], "And what are your opening hours on holidays?");
    // The replies were not touched.
    let replies = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["author"] == "assistant" && m["text"].is_string())
        .count();
    assert_eq!(replies, 2);

    // A deletion of a message never stored, in a DM nobody wrote in yet, makes up no
    // contact: the first message there (dated after the deletion, so that the worker
    // takes the deletion first) starts a conversation of its author's alone.
    discord.dispatch(
        "MESSAGE_DELETE",
        json!({"id": "1400000000000000099", "channel_id": DM_C}),
    );
    let mut later = message("1400000000000000023", DM_C, USER_B, false, QUESTION);
    later["timestamp"] = json!("2099-01-01T00:00:00.000000+00:00");
    discord.dispatch("MESSAGE_CREATE", later);
    wait_replies(&discord, 3).await;
    let conversations = app.conversations(&tenant).await;
    assert_eq!(conversations.len(), 2);
    for conversation in conversations {
        let contact = conversation["contact_id"].as_str().unwrap();
        let (status, contact) = app
            .get_json(&tenant, &format!("/api/v1/contacts/{contact}"))
            .await;
        assert_eq!(status, 200);
        let identities = contact["identities"].as_array().unwrap();
        assert_eq!(identities.len(), 1, "{contact}");
        assert!(
            [USER_A, USER_B].contains(&identities[0]["external_user_id"].as_str().unwrap()),
            "{contact}"
        );
    }
}

// -- failover between running instances (Postgres) -------------------------------------

/// A gateway instance's configuration against the fake Discord.
fn instance_config(dir: &Path, name: &str, port: u16, db: &str, discord: &FakeDiscord) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{db}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
         master_key = \"{MASTER_KEY}\"\n{}\n[worker]\npoll_ms = 100\nlease_ms = 2000\n\
         [shutdown]\ngrace_ms = 0\ndrain_ms = 10000\n{TEST_LIMITS}\n",
        discord.config()
    );
    std::fs::write(&path, toml).expect("write config");
    path
}

/// `omnigate_discord_gateway_lease_attempts_total{result}` of one instance.
async fn lease_attempts(http: &reqwest::Client, url: &str, result: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let series = format!("omnigate_discord_gateway_lease_attempts_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for the `n`th IDENTIFY, at most `bound`: how long another instance may take.
async fn identified_within(discord: &FakeDiscord, n: usize, bound: Duration) -> Duration {
    let started = Instant::now();
    while discord.identifies().len() < n {
        assert!(
            started.elapsed() < bound,
            "no session within {bound:?}: {:?}",
            discord.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Three `omnigate serve` processes in turn on one Postgres database with one Discord
/// bot. The first holds the gateway session while the second is refused the lease;
/// SIGTERM to the holder closes its socket (close 1000) before the second identifies,
/// within seconds; then a third waits while the second holds, and SIGKILL to the
/// second hands the session to the third. Never two sockets at once, and every
/// direct message is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_session_fails_over_between_instances_postgres() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("OMNIGATE_TEST_POSTGRES_URL unset: postgres case not run");
        return;
    };
    let discord = FakeDiscord::start().await;
    let db = TestDb::create(&backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |name: &'static str| {
        let (dir, db, discord) = (dir.path().to_path_buf(), db.url.clone(), discord.clone());
        async move {
            let port = free_port();
            let config = instance_config(&dir, name, port, &db, &discord);
            Gateway::start(&config, port, &dir.join(format!("{name}.log"))).await
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut first = start("first").await;
    let key = create_tenant(&http, &first.url, "Acme", "acme.example.com").await;
    for (path, body) in [
        (
            "/api/v1/knowledge/documents",
            json!({"title": "Hours", "text": HOURS}),
        ),
        ("/api/v1/channels", channel_body()),
    ] {
        let res = http
            .post(format!("{}{path}", first.url))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .expect("provision");
        assert_eq!(res.status(), 201);
    }
    identified_within(&discord, 1, Duration::from_secs(60)).await;

    // A second instance is refused the lease while the first holds it.
    let mut second = start("second").await;
    wait_until("the second instance refused twice", || async {
        lease_attempts(&http, &second.url, "busy").await >= 2
    })
    .await;
    assert_eq!(lease_attempts(&http, &second.url, "taken").await, 0);
    assert_eq!(
        discord.identifies().len(),
        1,
        "one session: {:?}",
        discord.log()
    );
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000031", DM_A, USER_A, false, QUESTION),
    );
    wait_replies(&discord, 1).await;

    // SIGTERM: the holder closes its socket, then lets go of the lease.
    assert!(first.terminate().success());
    let took = identified_within(&discord, 2, Duration::from_secs(20)).await;
    let log = discord.log();
    let closed = log
        .iter()
        .position(|e| e == "close 0")
        .expect("first socket closed");
    let identified = log
        .iter()
        .position(|e| e == "identify 1")
        .expect("second identify");
    assert!(
        closed < identified,
        "the first socket closed before the second session: {log:?}"
    );
    assert_eq!(
        discord.sockets()[0].client_close,
        Some(1000),
        "a clean close"
    );
    eprintln!("failover after SIGTERM: a new session in {took:?}");
    discord.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000032", DM_B, USER_B, false, QUESTION),
    );
    wait_replies(&discord, 2).await;

    // SIGKILL: the lease goes with the killed process's database connection.
    let third = start("third").await;
    wait_until("the third instance refused twice", || async {
        lease_attempts(&http, &third.url, "busy").await >= 2
    })
    .await;
    assert_eq!(discord.identifies().len(), 2, "{:?}", discord.log());
    second.kill();
    let took = identified_within(&discord, 3, Duration::from_secs(20)).await;
    eprintln!("failover after SIGKILL: a new session in {took:?}");
    discord.dispatch(
        "MESSAGE_CREATE",
        message(
            "1400000000000000033",
            DM_A,
            USER_A,
            false,
            "What are your opening hours on Friday?",
        ),
    );
    wait_replies(&discord, 3).await;

    assert_eq!(
        discord.max_live(),
        1,
        "never two sessions at once: {:?}",
        discord.log()
    );
    assert_eq!(
        replies_per_channel(&discord),
        HashMap::from([(DM_A.to_string(), 2), (DM_B.to_string(), 1)])
    );
    let sockets = discord.sockets();
    assert_eq!(sockets.len(), 3);
    assert!(!sockets[0].open && !sockets[1].open && sockets[2].open);
    assert_eq!(discord.live(), 1);
    drop(third);
}
