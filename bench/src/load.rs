//! The load generator: signed WhatsApp and Slack deliveries, sent either closed-loop
//! (N connections, each sending its next request when the previous is answered) or
//! open-loop (a fixed schedule of R requests a second, each latency measured from the
//! time the request was scheduled, so a stalled server cannot slow the offered load
//! down and hide its own stall: no coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

pub const META_SECRET: &str = "bench-app-secret";
pub const PHONE_ID: &str = "1000001";
pub const SLACK_SECRET: &str = "bench-slack-signing-secret";
pub const SLACK_TEAM: &str = "T0BENCH01";
pub const SLACK_BOT_TOKEN: &str = "xoxb-1000-2000-benchtoken";
const SLACK_BOT_USER: &str = "U0BENCHBOT";
/// Open-loop requests in flight at most (beyond it, requests wait, and their wait
/// counts in their latency).
const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Platform {
    Whatsapp,
    Slack,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Slack => "slack",
        }
    }
}

/// Who sends request number `seq`.
#[derive(Debug, Clone, Copy)]
pub enum Senders {
    /// `seq % n`: n people writing again and again.
    Rotating(u64),
    /// A new person (a new conversation) for every request.
    NewEach,
}

#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub platform: Platform,
    pub senders: Senders,
}

impl Traffic {
    pub fn new(platform: Platform, senders: Senders) -> Self {
        Self { platform, senders }
    }

    fn sender(&self, seq: u64) -> u64 {
        match self.senders {
            Senders::Rotating(n) => seq % n.max(1),
            Senders::NewEach => seq,
        }
    }
}

/// The WhatsApp id of sender `n` (the scale section seeds the same ids).
pub fn wa_id(sender: u64) -> String {
    format!("1555{sender:07}")
}

/// The text of request `seq`; the fake LLM finds the `(ref N)` in what it is asked.
pub fn text(seq: u64) -> String {
    format!("Hello, what are your opening hours? (ref {seq})")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Request `seq` of `traffic`, signed the way the platform signs it; returns the
/// request and the platform event id the gateway dedupes on.
fn request(
    http: &reqwest::Client,
    url: &str,
    traffic: Traffic,
    seq: u64,
) -> (reqwest::RequestBuilder, String) {
    let sender = traffic.sender(seq);
    let now = unix_now();
    match traffic.platform {
        Platform::Whatsapp => {
            let from = wa_id(sender);
            let id = format!("wamid.bench.{seq}");
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "b", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_ID},
                "contacts": [{"profile": {"name": "Bench"}, "wa_id": from}],
                "messages": [{"from": from, "id": id, "timestamp": now.to_string(), "type": "text",
                    "text": {"body": text(seq)}}]}}]}]})
            .to_string();
            let signature = webhooks::meta::sign(META_SECRET.as_bytes(), body.as_bytes());
            let req = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body);
            (req, id)
        }
        Platform::Slack => {
            // A direct message: one DM channel per person, a unique ts per message.
            let channel = format!("D{sender:08}");
            let ts = format!("{}.{:06}", 1_700_000_000 + seq / 1_000_000, seq % 1_000_000);
            let body = json!({
                "token": "bench-verification-token",
                "team_id": SLACK_TEAM,
                "api_app_id": "A0BENCH01",
                "event": {"type": "message", "channel": channel, "channel_type": "im",
                    "user": format!("U{sender:08}"), "text": text(seq), "ts": ts, "event_ts": ts},
                "type": "event_callback",
                "event_id": format!("Ev0BENCH{seq}"),
                "event_time": now,
                "authorizations": [{"enterprise_id": null, "team_id": SLACK_TEAM, "user_id": SLACK_BOT_USER,
                    "is_bot": true, "is_enterprise_install": false}],
            })
            .to_string();
            let timestamp = now.to_string();
            let signature =
                webhooks::slack::sign(SLACK_SECRET.as_bytes(), &timestamp, body.as_bytes());
            let req = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", timestamp)
                .header("x-slack-signature", signature)
                .body(body);
            (req, format!("{channel}:{ts}"))
        }
    }
}

/// A closed-loop run.
pub struct Closed {
    pub latencies: Vec<Duration>,
    /// Platform event ids answered 200.
    pub acked: Vec<String>,
    pub errors: u64,
    pub elapsed: Duration,
    /// Server CPU per acknowledged request, in microseconds.
    pub cpu_us: Option<f64>,
}

impl Closed {
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` connections each sending its next request when the previous one is
/// answered, for `duration`. `cpu` reads the server's CPU time.
pub async fn closed(
    url: &str,
    traffic: Traffic,
    concurrency: usize,
    duration: Duration,
    seq: Arc<AtomicU64>,
    cpu: impl Fn() -> Option<Duration>,
) -> anyhow::Result<Closed> {
    let cpu_before = cpu();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, seq) = (http.clone(), url.to_string(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut acked = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let (req, id) = request(&http, &url, traffic, seq.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                match req.send().await {
                    Ok(r) if r.status() == 200 => {
                        latencies.push(sent.elapsed());
                        acked.push(id);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, acked, errors)
        }));
    }
    let mut out = Closed {
        latencies: Vec::new(),
        acked: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        cpu_us: None,
    };
    for task in tasks {
        let (latencies, acked, errors) = task.await?;
        out.latencies.extend(latencies);
        out.acked.extend(acked);
        out.errors += errors;
    }
    out.elapsed = started.elapsed();
    out.cpu_us = cpu_before.zip(cpu()).map(|(before, after)| {
        (after.saturating_sub(before)).as_secs_f64() * 1e6 / out.latencies.len().max(1) as f64
    });
    Ok(out)
}

/// One open-loop request.
pub struct Sample {
    pub seq: u64,
    /// When it was scheduled, from the start of the run.
    pub offset: Duration,
    /// From the scheduled time to the answer.
    pub latency: Duration,
    pub acked: bool,
    pub external_id: String,
}

pub struct Open {
    pub samples: Vec<Sample>,
    pub started: Instant,
    /// How long the schedule ran (requests scheduled / rate).
    pub span: Duration,
}

impl Open {
    pub fn acked(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.acked)
    }

    pub fn errors(&self) -> u64 {
        self.samples.iter().filter(|s| !s.acked).count() as u64
    }

    /// Acknowledgements per second over the schedule.
    pub fn rate(&self) -> f64 {
        self.acked().count() as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// First sequence number of warm-up requests, far from the measured ones: their
/// message ids, and with new senders their conversations, are their own.
const WARMUP_SEQ: u64 = 900_000_000;

/// The load of a measurement sent for `seconds` before it, not counted (see the
/// `--warmup` option); `None` when `seconds` is 0.
pub async fn warm_up(
    url: &str,
    traffic: Traffic,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Option<Open>> {
    if seconds == 0 {
        return Ok(None);
    }
    let sent = open(
        url,
        traffic,
        rate,
        WARMUP_SEQ,
        Duration::from_secs(seconds),
        None,
    )
    .await?;
    Ok(Some(sent))
}

/// Sends `rate` requests a second on a fixed schedule, numbered from `first_seq`,
/// for `duration` or until `stop` is set, whichever comes first.
pub async fn open(
    url: &str,
    traffic: Traffic,
    rate: f64,
    first_seq: u64,
    duration: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<Open> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .timeout(Duration::from_secs(30))
        .build()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now() + Duration::from_millis(20);
    let url = url.to_string();
    // The schedule runs on a thread of its own: its sleeps are precise to tens of
    // microseconds, where the runtime's timer rounds to milliseconds.
    let scheduler = std::thread::spawn(move || {
        let mut sent = 0u64;
        for i in 0u64.. {
            let offset = Duration::from_secs_f64(i as f64 / rate);
            if offset >= duration || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                break;
            }
            let at = started + offset;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let (http, url, permits) = (http.clone(), url.clone(), permits.clone());
            let seq = first_seq + i;
            let task = runtime.spawn(async move {
                let (req, external_id) = request(&http, &url, traffic, seq);
                let acked = match permits.acquire_owned().await {
                    Ok(_permit) => req.send().await.is_ok_and(|r| r.status() == 200),
                    Err(_) => false,
                };
                Sample {
                    seq,
                    offset,
                    latency: at.elapsed(),
                    acked,
                    external_id,
                }
            });
            if tx.send(task).is_err() {
                break;
            }
            sent += 1;
        }
        Duration::from_secs_f64(sent as f64 / rate)
    });
    let mut samples = Vec::new();
    while let Some(task) = rx.recv().await {
        samples.push(task.await?);
    }
    let span = scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the load schedule panicked"))?;
    Ok(Open {
        samples,
        started,
        span,
    })
}
