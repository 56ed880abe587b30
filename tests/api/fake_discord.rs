//! A stand-in for Discord on loopback, speaking its wire formats:
//! - the REST API: `GET /api/v10/gateway/bot` (bot token checked; the gateway URL,
//!   one shard and the session start limit), `GET /api/v10/gateway`, and
//!   `POST /api/v10/channels/{id}/messages` (recorded; answered with the message);
//! - a Gateway WebSocket in JSON text frames: HELLO (op 10) on connect; IDENTIFY
//!   (op 2) starts a session answered with READY (op 0, `session_id`,
//!   `resume_gateway_url`, the bot user); HEARTBEAT (op 1) is acknowledged (op 11);
//!   the test's dispatches go out with increasing `s`; RESUME (op 6) of a known
//!   session gets the events after the client's `seq` (or, when asked, the
//!   session's whole history again, as Discord may replay) and then RESUMED, of an
//!   unknown one INVALID_SESSION (op 9). The fake closes sockets when told (close
//!   code, or a plain drop) and answers the client's close.
//!
//! It records every IDENTIFY, RESUME and heartbeat, every socket with its close code,
//! the most sockets open at once, and one ordered log of opens, IDENTIFYs and closes.
//!
//! What serenity 0.12 does, read from its source: it connects to `{url}?v=10` (JSON,
//! no `compress=zlib-stream`), identifies with `compress: true` (Discord may then send
//! large payloads as zlib binary frames; serenity takes text frames too, which is
//! what this fake sends), and resumes at the URL it first connected to, not at
//! `resume_gateway_url` (here both are this fake).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub const BOT_TOKEN: &str = "MTA5ODc2NTQzMjEwOTg3NjU0.GxYzAb.discord-bot-token";
/// The bot's own user id (READY's `user.id`).
pub const BOT_USER: &str = "999000111222333444";
pub const APPLICATION_ID: &str = "1234560123453231555";
/// Short, so that a test sees heartbeats; not so short that an acknowledgement held
/// up on a busy test machine makes serenity take the socket for a zombie and open
/// another beside it (with 1 s, a full suite run once saw two sockets live at a time).
pub const HEARTBEAT_MS: u64 = 3000;
/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const NEEDED_INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

#[derive(Debug, Clone)]
pub struct Identify {
    pub socket: usize,
    pub token: String,
    pub intents: u64,
}

#[derive(Debug, Clone)]
pub struct Resume {
    pub socket: usize,
    pub session_id: String,
    pub seq: u64,
}

/// A message posted through the REST API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub channel: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Socket {
    /// Path and query the client connected to.
    pub target: String,
    /// Neither side has closed it yet.
    pub open: bool,
    /// The close code the client sent, if it closed with one.
    pub client_close: Option<u16>,
}

enum Command {
    Frame(String),
    Close(u16),
    Drop,
}

struct Session {
    id: String,
    seq: u64,
    /// Dispatches of the session after READY, as `(s, frame)`.
    events: Vec<(u64, String)>,
}

#[derive(Default)]
struct GatewayState {
    identifies: Vec<Identify>,
    resumes: Vec<Resume>,
    heartbeats: usize,
    sockets: Vec<Socket>,
    live: usize,
    max_live: usize,
    log: Vec<String>,
    sessions: Vec<Session>,
    /// The socket and session new dispatches go to.
    current: Option<(usize, usize)>,
    senders: HashMap<usize, mpsc::UnboundedSender<Command>>,
    replay_all: bool,
    discoveries: Vec<Option<String>>,
    replies: Vec<Reply>,
    sent: u64,
}

#[derive(Clone)]
pub struct FakeDiscord {
    /// `platforms.discord.api_url`.
    pub api_url: String,
    state: Arc<Mutex<GatewayState>>,
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake gateway");
        let gateway_url = format!("ws://{}", gateway.local_addr().expect("addr"));
        tokio::spawn(serve_gateway(gateway, state.clone(), gateway_url.clone()));
        let rest = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake discord");
        let api_url = format!("http://{}/api/v10", rest.local_addr().expect("addr"));
        let router = Router::new()
            .route("/api/v10/gateway", get(gateway_url_only))
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/channels/{channel}/messages", post(create_message))
            .with_state((state.clone(), gateway_url.clone()));
        tokio::spawn(async move {
            let _ = axum::serve(rest, router).await;
        });
        Self { api_url, state }
    }

    /// The TOML section aiming the gateway at this fake.
    pub fn config(&self) -> String {
        format!("[platforms.discord]\napi_url = \"{}\"\n", self.api_url)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        self.state.lock().expect("lock")
    }

    /// Sends a dispatch (`op` 0) on the current session; with no socket open it is
    /// only kept for a RESUME to replay. Returns its `s`.
    pub fn dispatch(&self, t: &str, d: Value) -> u64 {
        let mut state = self.state();
        let (socket, session) = state.current.expect("no gateway session yet");
        let session = &mut state.sessions[session];
        session.seq += 1;
        let seq = session.seq;
        let frame = json!({"op": 0, "s": seq, "t": t, "d": d}).to_string();
        session.events.push((seq, frame.clone()));
        if let Some(tx) = state.senders.get(&socket) {
            let _ = tx.send(Command::Frame(frame));
        }
        seq
    }

    /// Closes the current socket: with a close frame of `code`, or (None) by
    /// dropping the connection without one.
    pub fn disconnect(&self, code: Option<u16>) {
        let state = self.state();
        let (socket, _) = state.current.expect("no gateway session yet");
        if let Some(tx) = state.senders.get(&socket) {
            let _ = tx.send(code.map_or(Command::Drop, Command::Close));
        }
    }

    /// On RESUME, replay the session's whole history instead of what came after the
    /// client's `seq` (duplicates, as Discord may send).
    pub fn replay_all_on_resume(&self, all: bool) {
        self.state().replay_all = all;
    }

    pub fn identifies(&self) -> Vec<Identify> {
        self.state().identifies.clone()
    }

    pub fn resumes(&self) -> Vec<Resume> {
        self.state().resumes.clone()
    }

    pub fn heartbeats(&self) -> usize {
        self.state().heartbeats
    }

    pub fn sockets(&self) -> Vec<Socket> {
        self.state().sockets.clone()
    }

    /// Sockets open now.
    pub fn live(&self) -> usize {
        self.state().live
    }

    /// The most sockets that were ever open at once.
    pub fn max_live(&self) -> usize {
        self.state().max_live
    }

    /// `open N`, `identify N`, `resume N`, `close N` in the order they happened.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// The `Authorization` header of each `GET /gateway/bot`.
    pub fn discoveries(&self) -> Vec<Option<String>> {
        self.state().discoveries.clone()
    }

    pub fn replies(&self) -> Vec<Reply> {
        self.state().replies.clone()
    }

    /// The session id of the last IDENTIFY.
    pub fn session_id(&self) -> String {
        let state = self.state();
        state.sessions.last().expect("a session").id.clone()
    }
}

// -- REST --------------------------------------------------------------------------

type RestState = (Arc<Mutex<GatewayState>>, String);

async fn gateway_url_only(State((_, url)): State<RestState>) -> Json<Value> {
    Json(json!({"url": url}))
}

async fn gateway_bot(
    State((state, url)): State<RestState>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let authorization = header(&headers, "authorization");
    state
        .lock()
        .expect("lock")
        .discoveries
        .push(authorization.clone());
    if authorization.as_deref() != Some(&format!("Bot {BOT_TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401: Unauthorized", "code": 0})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"url": url, "shards": 1, "session_start_limit":
            {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}})),
    )
}

async fn create_message(
    State((state, _)): State<RestState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut state = state.lock().expect("lock");
    state.sent += 1;
    let id = format!("1300000000000{:06}", state.sent);
    state.replies.push(Reply {
        channel: channel.clone(),
        authorization: header(&headers, "authorization"),
        body: body.clone(),
    });
    Json(
        json!({"id": id, "channel_id": channel, "content": body["content"], "type": 0,
        "author": {"id": BOT_USER, "username": "shop", "discriminator": "0", "avatar": null, "bot": true},
        "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false}),
    )
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

// -- Gateway -----------------------------------------------------------------------

async fn serve_gateway(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<GatewayState>>,
    url: String,
) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, state.clone(), url.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<Mutex<GatewayState>>, url: String) {
    let target = Arc::new(Mutex::new(String::new()));
    // The signature is tungstenite's (its error is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = {
        let target = target.clone();
        move |request: &Request, response: Response| {
            *target.lock().expect("lock") = request.uri().to_string();
            Ok(response)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (tx, mut commands) = mpsc::unbounded_channel();
    let socket = {
        let mut s = state.lock().expect("lock");
        let socket = s.sockets.len();
        s.sockets.push(Socket {
            target: target.lock().expect("lock").clone(),
            open: true,
            client_close: None,
        });
        s.live += 1;
        s.max_live = s.max_live.max(s.live);
        s.senders.insert(socket, tx);
        s.log.push(format!("open {socket}"));
        socket
    };
    let (mut sink, mut stream) = ws.split();
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": HEARTBEAT_MS}});
    let mut alive = sink.send(Message::Text(hello.to_string())).await.is_ok();
    while alive {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Frame(frame)) => alive = sink.send(Message::Text(frame)).await.is_ok(),
                Some(Command::Close(code)) => {
                    // The session on this socket is over once the fake decides to close
                    // it: retired before the close frame goes, since the client may
                    // read it and connect again before this task runs on after the send
                    // (a suite run once counted the new socket beside this one).
                    retire(&state, socket);
                    let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    // Whatever the client still says is not read; wait for it to go.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    alive = false;
                }
                Some(Command::Drop) | None => alive = false,
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    for reply in receive(&state, socket, &url, &text) {
                        if sink.send(Message::Text(reply)).await.is_err() {
                            alive = false;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    state.lock().expect("lock").sockets[socket].client_close =
                        frame.as_ref().map(|f| u16::from(f.code));
                    retire(&state, socket);
                    // Answer the close (queued by the read above) and see the client off.
                    let _ = sink.flush().await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    alive = false;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => alive = false,
            },
        }
    }
    retire(&state, socket);
    state.lock().expect("lock").senders.remove(&socket);
}

/// A socket stops counting as open when either side closes it or it drops.
fn retire(state: &Arc<Mutex<GatewayState>>, socket: usize) {
    let mut s = state.lock().expect("lock");
    if s.sockets[socket].open {
        s.sockets[socket].open = false;
        s.live -= 1;
        s.log.push(format!("close {socket}"));
    }
}

/// Handles one frame from the client; returns the frames to answer with.
fn receive(state: &Arc<Mutex<GatewayState>>, socket: usize, url: &str, text: &str) -> Vec<String> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return vec![];
    };
    let mut s = state.lock().expect("lock");
    let d = &frame["d"];
    match frame["op"].as_u64() {
        Some(1) => {
            s.heartbeats += 1;
            vec![json!({"op": 11, "s": null, "t": null, "d": null}).to_string()]
        }
        Some(2) => {
            let token = d["token"].as_str().unwrap_or_default();
            s.identifies.push(Identify {
                socket,
                // serenity sends the token as it authenticates REST calls.
                token: token.strip_prefix("Bot ").unwrap_or(token).to_string(),
                intents: d["intents"].as_u64().unwrap_or_default(),
            });
            s.log.push(format!("identify {socket}"));
            let id = format!("fake-session-{}", s.sessions.len() + 1);
            s.sessions.push(Session {
                id: id.clone(),
                seq: 1,
                events: vec![],
            });
            s.current = Some((socket, s.sessions.len() - 1));
            let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
                "v": 10, "session_id": id, "resume_gateway_url": url, "shard": [0, 1],
                "user": {"id": BOT_USER, "username": "shop", "discriminator": "0",
                         "global_name": null, "avatar": null, "bot": true},
                "guilds": [], "application": {"id": APPLICATION_ID, "flags": 0}}});
            vec![ready.to_string()]
        }
        Some(6) => {
            let session_id = d["session_id"].as_str().unwrap_or_default().to_string();
            let seq = d["seq"].as_u64().unwrap_or_default();
            s.resumes.push(Resume {
                socket,
                session_id: session_id.clone(),
                seq,
            });
            s.log.push(format!("resume {socket}"));
            let Some(index) = s.sessions.iter().position(|x| x.id == session_id) else {
                return vec![json!({"op": 9, "s": null, "t": null, "d": false}).to_string()];
            };
            s.current = Some((socket, index));
            let replay_all = s.replay_all;
            let session = &mut s.sessions[index];
            let mut frames: Vec<String> = session
                .events
                .iter()
                .filter(|(s, _)| replay_all || *s > seq)
                .map(|(_, frame)| frame.clone())
                .collect();
            session.seq += 1;
            frames.push(json!({"op": 0, "s": session.seq, "t": "RESUMED", "d": {}}).to_string());
            frames
        }
        _ => vec![],
    }
}
