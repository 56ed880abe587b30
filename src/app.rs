//! The running gateway: shared state, background tasks and the serve loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use channels::{Channel, ChannelKind, Credentials};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::assistant::{Assistant, Pipeline};
use crate::config::{self, Config};
use crate::crypto::{self, Sealer};
use crate::inbound::Committer;
use crate::store::{self, ChannelRecord, Store};

/// Shared state, cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
    pub channels: HashMap<ChannelKind, Arc<dyn Channel>>,
    pub assistant: Arc<dyn Assistant>,
    /// The AI pipeline behind `assistant` (its metrics).
    pub ai: Arc<Pipeline>,
    pub committer: Committer,
    /// Wakes the worker when new inbox events are committed.
    pub inbox_wake: Arc<Notify>,
    /// Wakes the dispatcher when replies are queued.
    pub outbox_wake: Arc<Notify>,
    /// The dispatcher's slots: the worker reserves one for a fresh reply, claims the
    /// reply's first part for it in the transaction that queues the reply, and hands
    /// it over (no claim of the dispatcher's own, no wake-up).
    pub replies: crate::queue::HandOff<store::OutboxItem>,
    pub public_url: String,
    // -- telegram, discord ---------------------------------------------------------
    /// The Bot API client, also used to connect and remove bots (`setWebhook`).
    pub telegram: Arc<channels::telegram::Telegram>,
    pub discord: Arc<channels::discord::Discord>,
    draining: AtomicBool,
    // -- operations
    /// This process among the instances sharing the database (lease owner names).
    pub instance: String,
    pub admin_limiter: crate::ops::rate::RateLimiter,
    channel_cache: Mutex<HashMap<String, (Instant, Arc<ResolvedChannel>)>>,
}

/// A channel with its credentials opened.
pub struct ResolvedChannel {
    pub record: ChannelRecord,
    pub credentials: Credentials,
}

/// How long an opened channel is reused before it is read again. Bounds how long
/// another instance keeps using a channel deleted elsewhere; this instance forgets
/// it at once.
const CHANNEL_CACHE_TTL: Duration = Duration::from_secs(5);

impl std::ops::Deref for App {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl App {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Wakes the dispatcher here and, through the database, on every instance.
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.announce(store::Wake::Outbox).await {
                tracing::debug!(error = %e, "outbox announcement failed");
            }
        });
    }

    /// The lease owner name of this instance's worker.
    pub fn worker_owner(&self) -> String {
        format!("worker-{}", self.instance)
    }

    /// The lease owner name of this instance's dispatcher.
    pub fn dispatcher_owner(&self) -> String {
        format!("dispatcher-{}", self.instance)
    }

    /// The channel implementation for a platform, if omnigate supports it yet.
    pub fn channel_impl(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }

    /// A live channel with its credentials opened, from a short-lived cache (webhooks
    /// and sends look channels up on every request).
    pub async fn resolved_channel(
        &self,
        channel_id: &str,
    ) -> anyhow::Result<Option<Arc<ResolvedChannel>>> {
        if let Ok(cache) = self.channel_cache.lock() {
            if let Some((at, channel)) = cache.get(channel_id) {
                if at.elapsed() < CHANNEL_CACHE_TTL {
                    return Ok(Some(channel.clone()));
                }
            }
        }
        let Some(record) = self.store.channel(channel_id).await? else {
            self.forget_channel(channel_id);
            return Ok(None);
        };
        let credentials = self.credentials(&record)?;
        let resolved = Arc::new(ResolvedChannel {
            record,
            credentials,
        });
        if let Ok(mut cache) = self.channel_cache.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < CHANNEL_CACHE_TTL);
            cache.insert(channel_id.to_string(), (Instant::now(), resolved.clone()));
        }
        Ok(Some(resolved))
    }

    /// Drops a channel from the cache (after it was deleted or changed).
    pub fn forget_channel(&self, channel_id: &str) {
        if let Ok(mut cache) = self.channel_cache.lock() {
            cache.remove(channel_id);
        }
    }

    /// Opens a channel's sealed credentials.
    pub fn credentials(&self, channel: &ChannelRecord) -> anyhow::Result<Credentials> {
        let sealed = channel
            .credentials
            .as_deref()
            .context("channel has no credentials")?;
        let plain = self.sealer.open(
            &crypto::channel_context(&channel.tenant_id, &channel.id),
            sealed,
        )?;
        Ok(serde_json::from_slice(&plain)?)
    }

    /// Seals credentials for a channel row.
    pub fn seal_credentials(
        &self,
        tenant_id: &str,
        channel_id: &str,
        credentials: &Credentials,
    ) -> anyhow::Result<Vec<u8>> {
        let plain = serde_json::to_vec(credentials)?;
        Ok(self
            .sealer
            .seal(&crypto::channel_context(tenant_id, channel_id), &plain)?)
    }
}

/// The master key: configured, or (SQLite only) kept in a file beside the database.
pub fn master_key(config: &Config) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = &config.master_key {
        return config::decode_master_key(key).context("master_key must be base64 of 32 bytes");
    }
    anyhow::ensure!(
        config.database_url.is_sqlite(),
        "master_key is required when database_url is PostgreSQL"
    );
    let Some(db_path) = config.database_url.sqlite_path() else {
        // In-memory database: nothing outlives the process, neither may the key.
        return config::decode_master_key(&crypto::generate_master_key().into())
            .context("generated key");
    };
    let mut key_path = db_path.into_os_string();
    key_path.push(".key");
    let key_path = std::path::PathBuf::from(key_path);
    let (key, created) = crypto::load_or_create_key_file(&key_path)
        .with_context(|| format!("master key file {}", key_path.display()))?;
    if created {
        tracing::warn!(
            path = %key_path.display(),
            "no master_key configured: generated one beside the database; back it up with the database"
        );
    }
    config::decode_master_key(&key).context("master key file must hold base64 of 32 bytes")
}

/// The earlier master keys still accepted for opening credentials (key rotation).
pub fn previous_master_keys(config: &Config) -> anyhow::Result<Vec<[u8; 32]>> {
    config
        .previous_master_keys
        .iter()
        .map(|k| {
            config::decode_master_key(k).context("previous_master_keys must be base64 of 32 bytes")
        })
        .collect()
}

/// Builds the gateway on `config`: opens and migrates the database, starts the
/// committer, worker and dispatcher, and serves HTTP on `listener` until `shutdown`.
pub async fn run(
    mut config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // -- web: the sandbox's fake platform APIs are served by this process ----
    let self_url = crate::web::self_url(listener.local_addr()?);
    if config.sandbox {
        crate::sandbox::configure(&mut config, &self_url);
    }
    let key = master_key(&config)?;
    let store = store::open(&config.database_url).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.worker.send_timeout_ms))
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut channels: HashMap<ChannelKind, Arc<dyn Channel>> = HashMap::new();
    channels.insert(
        ChannelKind::WhatsApp,
        Arc::new(channels::whatsapp::WhatsApp::new(
            http.clone(),
            config.platforms.meta.graph_url.clone(),
            config.platforms.meta.api_version.clone(),
        )),
    );
    // -- Meta messaging (Messenger, Instagram) --------------------------------------
    channels.insert(
        ChannelKind::Messenger,
        Arc::new(channels::messenger::Messenger::new(
            http.clone(),
            config.platforms.meta.graph_url.clone(),
            config.platforms.meta.api_version.clone(),
        )),
    );
    channels.insert(
        ChannelKind::Instagram,
        Arc::new(channels::instagram::Instagram::new(
            http.clone(),
            config.platforms.meta.graph_url.clone(),
            config.platforms.meta.api_version.clone(),
        )),
    );
    // -- slack ----
    channels.insert(
        ChannelKind::Slack,
        Arc::new(channels::slack::Slack::new(
            http.clone(),
            config.platforms.slack.api_url.clone(),
        )),
    );
    // -- telegram, discord -----------------------------------------------------------
    let telegram = Arc::new(channels::telegram::Telegram::new(
        http.clone(),
        config.platforms.telegram.api_url.clone(),
    ));
    let discord = Arc::new(channels::discord::Discord::new(
        http.clone(),
        config.platforms.discord.api_url.clone(),
    ));
    channels.insert(ChannelKind::Telegram, telegram.clone());
    channels.insert(ChannelKind::Discord, discord.clone());
    let inbox_wake = Arc::new(Notify::new());
    let committer_stop = CancellationToken::new();
    let (committer, committer_task) = crate::inbound::spawn_committer(
        store.clone(),
        inbox_wake.clone(),
        committer_stop.clone(),
        config.worker.flood_rate_for(store.backend()),
    );
    let public_url = config.public_url();
    let ai = Arc::new(Pipeline::new(store.clone(), &config)?);
    let app = App {
        inner: Arc::new(Inner {
            assistant: ai.clone(),
            ai,
            sealer: Sealer::new(&key).with_previous(&previous_master_keys(&config)?),
            store,
            channels,
            committer,
            inbox_wake,
            outbox_wake: Arc::new(Notify::new()),
            replies: crate::queue::HandOff::new(config.worker.concurrency),
            public_url,
            telegram,
            discord,
            draining: AtomicBool::new(false),
            instance: crate::store::new_id(),
            admin_limiter: crate::ops::rate::RateLimiter::new(
                config.limits.admin_per_second,
                config.limits.admin_burst,
            ),
            channel_cache: Mutex::new(HashMap::new()),
            config,
        }),
    };

    // -- Meta data-deletion callback: finish erasures a stop interrupted.
    tokio::spawn(crate::inbound::data_deletion::resume_pending(app.clone()));
    let role = app.config.role;
    let work_stop = CancellationToken::new();
    let mut background = Vec::new();
    if role.runs_workers() {
        background.push(tokio::spawn(crate::pipeline::run_worker(
            app.clone(),
            work_stop.clone(),
        )));
        background.push(tokio::spawn(crate::outbound::run_dispatcher(
            app.clone(),
            work_stop.clone(),
        )));
        // -- privacy: the retention sweeper
        background.push(tokio::spawn(crate::privacy::retention::run_sweeper(
            app.store.clone(),
            app.config.retention.clone(),
            work_stop.clone(),
        )));
    }
    // Wake-ups announced by other instances (Postgres LISTEN; nothing on SQLite).
    let listen_stop = CancellationToken::new();
    let listen = role.runs_workers().then(|| {
        let (store, inbox, outbox) = (
            app.store.clone(),
            app.inbox_wake.clone(),
            app.outbox_wake.clone(),
        );
        let stop = listen_stop.clone();
        tokio::spawn(async move { store.listen(inbox, outbox, stop).await })
    });

    // -- telegram, discord: Discord gateway sessions (one instance holds each bot's)
    let gateway_stop = CancellationToken::new();
    let mut gateway = tokio::spawn(crate::inbound::discord_gateway::supervise(
        app.clone(),
        gateway_stop.clone(),
    ));
    tracing::info!(
        addr = %listener.local_addr()?,
        backend = app.store.backend(),
        role = role.as_str(),
        instance = %app.instance,
        "omnigate listening"
    );
    let mut router = crate::http::router(app.clone());
    // -- web: the operator console calls the admin API in-process ----
    router = router
        .clone()
        .merge(crate::console::router(app.clone(), router));
    // -- web: the sandbox (set up through the admin API before serving) ----
    if app.config.sandbox {
        let sandbox = crate::sandbox::start(app.clone(), router.clone(), self_url).await?;
        router = router.merge(crate::sandbox::router(sandbox));
    }
    let draining_app = app.clone();
    let grace = Duration::from_millis(app.config.shutdown.grace_ms);
    crate::http::serve::serve(listener, router, async move {
        shutdown.cancelled().await;
        // Readiness goes false first; requests are still served for the grace
        // period, so the load balancer stops routing here before the listener closes.
        draining_app.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "draining: not ready, still accepting"
        );
        tokio::time::sleep(grace).await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await;

    // Requests are done. The Discord gateway sessions end next (sockets closed, then
    // their leases freed for another instance), while the committer still stores
    // what they read; then the committer flushes and the background work stops,
    // letting in-flight events and sends finish within the drain period.
    let drain = Duration::from_millis(app.config.shutdown.drain_ms);
    gateway_stop.cancel();
    if tokio::time::timeout(drain, &mut gateway).await.is_err() {
        tracing::warn!("discord gateway sessions did not end in time; abandoning them");
        gateway.abort();
        let _ = gateway.await;
    }
    committer_stop.cancel();
    let _ = committer_task.await;
    work_stop.cancel();
    let finished = tokio::time::timeout(drain, async {
        for task in &mut background {
            let _ = task.await;
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "in-flight work did not finish in time; abandoning it"
        );
        for task in &background {
            task.abort();
        }
        for task in background {
            let _ = task.await;
        }
    }
    listen_stop.cancel();
    if let Some(listen) = listen {
        let _ = listen.await;
    }
    // Whatever is still leased here goes back to the queue for the other instances.
    if role.runs_workers() {
        for owner in [app.worker_owner(), app.dispatcher_owner()] {
            match app.store.release_leases(&owner).await {
                Ok(released) if released != store::Released::default() => tracing::info!(
                    inbox = released.inbox,
                    outbox = released.outbox,
                    "released leases"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not release leases; they will expire"),
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}
