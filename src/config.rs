//! Configuration: built-in defaults, then an optional TOML file, then `OMNIGATE_`
//! environment variables (`__` between sections), as CONTRACT.md fixes. Unknown keys
//! and bad values are rejected at start-up with one line naming the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Everything `omnigate` reads from its configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// `sqlite://FILE` (the default) or `postgres://...`.
    pub database_url: DatabaseUrl,
    /// Base URL the platforms reach this gateway on; webhook URLs are built from it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Operator token: may create tenants through the admin API.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// Base64 of 32 bytes; encrypts channel credentials (AES-256-GCM).
    #[serde(default)]
    pub master_key: Option<SecretString>,
    #[serde(default)]
    pub platforms: Platforms,
    #[serde(default)]
    pub ai: Ai,
    #[serde(default)]
    pub knowledge: Knowledge,
    #[serde(default)]
    pub worker: Worker,
    // -- privacy: retention ----------------------------------------------------------
    #[serde(default)]
    pub retention: Retention,
    // -- operations (issue 8) --------------------------------------------------------
    /// Which parts of the gateway `serve` runs (`serve --role` overrides it).
    #[serde(default)]
    pub role: crate::ops::Role,
    /// Earlier master keys, accepted for opening credentials while `omnigate
    /// rotate-key` re-seals them under `master_key`.
    #[serde(default)]
    pub previous_master_keys: Vec<SecretString>,
    #[serde(default)]
    pub limits: crate::ops::Limits,
    #[serde(default)]
    pub shutdown: crate::ops::Shutdown,
    // -- web: the sandbox (`serve --sandbox`) ------------------------------------------
    /// Runs the built-in stand-in platforms and the demo tenant (never in production).
    #[serde(default)]
    pub sandbox: bool,
}

/// A database URL whose `Debug` hides any password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// The database file of a SQLite URL (`sqlite://path?opts` or `sqlite:path`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.0.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("redacted"));
                write!(f, "{url}")
            }
            _ => write!(f, "{}", self.0),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platforms {
    #[serde(default)]
    pub meta: Meta,
    #[serde(default)]
    pub slack: Slack,
    #[serde(default)]
    pub telegram: Telegram,
    #[serde(default)]
    pub discord: Discord,
}

/// The operator's own Meta app (WhatsApp, Messenger, Instagram).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    #[serde(default = "Meta::default_graph_url")]
    pub graph_url: String,
    #[serde(default = "Meta::default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    #[serde(default)]
    pub verify_token: Option<SecretString>,
}

impl Meta {
    fn default_graph_url() -> String {
        "https://graph.facebook.com".into()
    }
    fn default_api_version() -> String {
        "v21.0".into()
    }
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            graph_url: Self::default_graph_url(),
            api_version: Self::default_api_version(),
            app_secret: None,
            verify_token: None,
        }
    }
}

/// The operator's distributed Slack app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    #[serde(default = "Slack::default_api_url")]
    pub api_url: String,
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    // -- slack install (additions to CONTRACT.md's keys) ----
    /// Where a workspace admin is sent to approve the install (OAuth v2).
    #[serde(default = "Slack::default_authorize_url")]
    pub authorize_url: String,
    /// Bot scopes the install asks for, comma-separated.
    #[serde(default = "Slack::default_scopes")]
    pub scopes: String,
}

impl Slack {
    fn default_api_url() -> String {
        "https://slack.com/api".into()
    }
    fn default_authorize_url() -> String {
        "https://slack.com/oauth/v2/authorize".into()
    }
    fn default_scopes() -> String {
        "app_mentions:read,channels:history,groups:history,im:history,mpim:history,chat:write"
            .into()
    }
}

impl Default for Slack {
    fn default() -> Self {
        Self {
            api_url: Self::default_api_url(),
            signing_secret: None,
            client_id: None,
            client_secret: None,
            authorize_url: Self::default_authorize_url(),
            scopes: Self::default_scopes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telegram {
    #[serde(default = "Telegram::default_api_url")]
    pub api_url: String,
}

impl Telegram {
    fn default_api_url() -> String {
        "https://api.telegram.org".into()
    }
}

impl Default for Telegram {
    fn default() -> Self {
        Self {
            api_url: Self::default_api_url(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discord {
    #[serde(default = "Discord::default_api_url")]
    pub api_url: String,
}

impl Discord {
    fn default_api_url() -> String {
        "https://discord.com/api/v10".into()
    }
}

impl Default for Discord {
    fn default() -> Self {
        Self {
            api_url: Self::default_api_url(),
        }
    }
}

/// LLM providers. A provider with no `api_key` is off; the offline knowledge
/// answerer is always the last resort.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ai {
    #[serde(default = "Ai::default_providers")]
    pub providers: Vec<ProviderName>,
    #[serde(default = "Ai::default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "Provider::openai")]
    pub openai: Provider,
    #[serde(default = "Provider::anthropic")]
    pub anthropic: Provider,
    #[serde(default = "Provider::gemini")]
    pub gemini: Provider,
    // -- AI pipeline tuning (additions to CONTRACT.md's keys) ----
    /// Consecutive failures after which a provider is skipped for a cool-down.
    #[serde(default = "Ai::default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long a failing provider is skipped before one probe call is let through.
    #[serde(default = "Ai::default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// Budget, in estimated tokens, for the conversation turns sent with a question.
    #[serde(default = "Ai::default_context_tokens")]
    pub context_tokens: usize,
    /// Longest answer asked of a provider, in tokens.
    #[serde(default = "Ai::default_max_output_tokens")]
    pub max_output_tokens: u32,
}

impl Ai {
    fn default_providers() -> Vec<ProviderName> {
        vec![
            ProviderName::Anthropic,
            ProviderName::OpenAi,
            ProviderName::Gemini,
        ]
    }
    fn default_timeout_ms() -> u64 {
        20_000
    }
    fn default_breaker_failures() -> u32 {
        5
    }
    fn default_breaker_cooldown_ms() -> u64 {
        30_000
    }
    fn default_context_tokens() -> usize {
        3_000
    }
    fn default_max_output_tokens() -> u32 {
        512
    }
}

impl Default for Ai {
    fn default() -> Self {
        Self {
            providers: Self::default_providers(),
            timeout_ms: Self::default_timeout_ms(),
            openai: Provider::openai(),
            anthropic: Provider::anthropic(),
            gemini: Provider::gemini(),
            breaker_failures: Self::default_breaker_failures(),
            breaker_cooldown_ms: Self::default_breaker_cooldown_ms(),
            context_tokens: Self::default_context_tokens(),
            max_output_tokens: Self::default_max_output_tokens(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub model: Option<String>,
    /// Price of a million input tokens in US dollars, for cost accounting.
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// Price of a million output tokens in US dollars.
    #[serde(default)]
    pub output_usd_per_mtok: f64,
}

impl Provider {
    fn openai() -> Self {
        Self::with_url("https://api.openai.com/v1")
    }
    fn anthropic() -> Self {
        Self::with_url("https://api.anthropic.com")
    }
    fn gemini() -> Self {
        Self::with_url("https://generativelanguage.googleapis.com")
    }
    fn with_url(url: &str) -> Self {
        Self {
            base_url: url.into(),
            api_key: None,
            model: None,
            input_usd_per_mtok: 0.0,
            output_usd_per_mtok: 0.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knowledge {
    /// Lets the website crawler fetch loopback/private addresses (tests, intranets).
    #[serde(default)]
    pub allow_private_targets: bool,
    // -- crawler limits (additions to CONTRACT.md's keys) ----
    /// Most pages one crawl may fetch, whatever the request asks.
    #[serde(default = "Knowledge::default_max_pages")]
    pub max_pages: usize,
    /// Most links followed away from the start page.
    #[serde(default = "Knowledge::default_max_depth")]
    pub max_depth: usize,
    /// Largest page read, in bytes; bigger pages are skipped.
    #[serde(default = "Knowledge::default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// Time allowed for one page fetch.
    #[serde(default = "Knowledge::default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
}

impl Knowledge {
    fn default_max_pages() -> usize {
        200
    }
    fn default_max_depth() -> usize {
        3
    }
    fn default_max_page_bytes() -> usize {
        2 * 1024 * 1024
    }
    fn default_fetch_timeout_ms() -> u64 {
        10_000
    }
}

impl Default for Knowledge {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            max_pages: Self::default_max_pages(),
            max_depth: Self::default_max_depth(),
            max_page_bytes: Self::default_max_page_bytes(),
            fetch_timeout_ms: Self::default_fetch_timeout_ms(),
        }
    }
}

/// Background work tuning (an addition to CONTRACT.md's keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// Inbox events handled at once (different conversations run in parallel).
    #[serde(default = "Worker::default_concurrency")]
    pub concurrency: usize,
    /// How long a claimed event or send stays leased before another worker may take it.
    #[serde(default = "Worker::default_lease_ms")]
    pub lease_ms: u64,
    /// Longest pause between looks at the queues when nothing wakes the worker.
    #[serde(default = "Worker::default_poll_ms")]
    pub poll_ms: u64,
    /// Outbound HTTP timeout for platform APIs.
    #[serde(default = "Worker::default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// Give up on a reply part after this many transient failures.
    #[serde(default = "Worker::default_max_send_attempts")]
    pub max_send_attempts: i64,
    /// Webhooks a second above which this instance's worker keeps to one event at a
    /// time, so that acknowledging them comes first (unset: by database, see
    /// [`Worker::flood_rate_for`]).
    #[serde(default)]
    pub flood_rate: Option<u64>,
}

impl Worker {
    fn default_concurrency() -> usize {
        16
    }
    fn default_lease_ms() -> u64 {
        30_000
    }
    fn default_poll_ms() -> u64 {
        500
    }
    fn default_send_timeout_ms() -> u64 {
        10_000
    }
    fn default_max_send_attempts() -> i64 {
        12
    }

    /// `flood_rate`, or the default for `backend` (`sqlite` or `postgres`): above
    /// what the worker answers at full width on two shared cores, 2,000 a second on
    /// SQLite and 800 on Postgres.
    pub fn flood_rate_for(&self, backend: &str) -> u64 {
        self.flood_rate.unwrap_or(match backend {
            "postgres" => crate::inbound::POSTGRES_FLOOD_RATE,
            _ => crate::inbound::SQLITE_FLOOD_RATE,
        })
    }
}

impl Default for Worker {
    fn default() -> Self {
        Self {
            concurrency: Self::default_concurrency(),
            lease_ms: Self::default_lease_ms(),
            poll_ms: Self::default_poll_ms(),
            send_timeout_ms: Self::default_send_timeout_ms(),
            max_send_attempts: Self::default_max_send_attempts(),
            flood_rate: None,
        }
    }
}

// -- privacy: retention --------------------------------------------------------------

/// The platform's retention maximums (tenants choose up to these) and the sweeper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "Retention::default_messages")]
    pub max_messages_days: i64,
    #[serde(default = "Retention::default_raw_events")]
    pub max_raw_events_days: i64,
    #[serde(default = "Retention::default_analytics")]
    pub max_analytics_days: i64,
    #[serde(default = "Retention::default_audit")]
    pub max_audit_days: i64,
    /// How often `serve` sweeps.
    #[serde(default = "Retention::default_interval")]
    pub sweep_interval_minutes: u64,
    /// Rows deleted per short transaction.
    #[serde(default = "Retention::default_batch")]
    pub batch_size: i64,
}

impl Retention {
    fn default_messages() -> i64 {
        90
    }
    fn default_raw_events() -> i64 {
        30
    }
    fn default_analytics() -> i64 {
        180
    }
    fn default_audit() -> i64 {
        730
    }
    fn default_interval() -> u64 {
        60
    }
    fn default_batch() -> i64 {
        500
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages_days: Self::default_messages(),
            max_raw_events_days: Self::default_raw_events(),
            max_analytics_days: Self::default_analytics(),
            max_audit_days: Self::default_audit(),
            sweep_interval_minutes: Self::default_interval(),
            batch_size: Self::default_batch(),
        }
    }
}

/// Built-in values for the top-level keys that always have one.
#[derive(Serialize)]
struct Defaults {
    listen: &'static str,
    database_url: &'static str,
}

/// A configuration problem, as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then `file` (if given), then the `OMNIGATE_` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Self::defaults();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file `{}` does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Not configuration: the config file path itself and the test suite's switches.
        // Keys keep the environment's case, so compare lowercased.
        figment = figment.merge(Env::prefixed("OMNIGATE_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key != "config" && !key.starts_with("test_")
        }));
        let config: Self = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads defaults and then `toml`, ignoring the environment (tests, tools).
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config: Self = Self::defaults()
            .merge(Toml::string(toml))
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn defaults() -> Figment {
        Figment::from(Serialized::defaults(Defaults {
            listen: "127.0.0.1:8080",
            database_url: "sqlite://omnigate.db",
        }))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("config key `{key}`: {why}")));
        if !self.database_url.is_sqlite() && !self.database_url.is_postgres() {
            return bad("database_url", "must start with sqlite: or postgres://");
        }
        if let Some(key) = &self.master_key {
            if decode_master_key(key).is_none() {
                return bad("master_key", "must be base64 of exactly 32 bytes");
            }
        }
        if let Some(url) = &self.public_url {
            if reqwest::Url::parse(url).is_err() {
                return bad("public_url", "is not a valid URL");
            }
        }
        for (key, url) in [
            ("platforms.meta.graph_url", &self.platforms.meta.graph_url),
            ("platforms.slack.api_url", &self.platforms.slack.api_url),
            (
                "platforms.slack.authorize_url",
                &self.platforms.slack.authorize_url,
            ),
            (
                "platforms.telegram.api_url",
                &self.platforms.telegram.api_url,
            ),
            ("platforms.discord.api_url", &self.platforms.discord.api_url),
            ("ai.openai.base_url", &self.ai.openai.base_url),
            ("ai.anthropic.base_url", &self.ai.anthropic.base_url),
            ("ai.gemini.base_url", &self.ai.gemini.base_url),
        ] {
            if reqwest::Url::parse(url).is_err() {
                return bad(key, "is not a valid URL");
            }
        }
        if self.ai.timeout_ms == 0 {
            return bad("ai.timeout_ms", "must be positive");
        }
        if self.ai.breaker_failures == 0 {
            return bad("ai.breaker_failures", "must be positive");
        }
        for (key, p) in [
            ("ai.openai", &self.ai.openai),
            ("ai.anthropic", &self.ai.anthropic),
            ("ai.gemini", &self.ai.gemini),
        ] {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_usd_per_mtok) || !ok(p.output_usd_per_mtok) {
                return bad(key, "prices must be zero or positive");
            }
        }
        if self.worker.concurrency == 0 {
            return bad("worker.concurrency", "must be positive");
        }
        if self.worker.lease_ms < 1_000 {
            return bad("worker.lease_ms", "must be at least 1000");
        }
        // -- privacy: retention
        for (key, value) in [
            (
                "retention.max_messages_days",
                self.retention.max_messages_days,
            ),
            (
                "retention.max_raw_events_days",
                self.retention.max_raw_events_days,
            ),
            (
                "retention.max_analytics_days",
                self.retention.max_analytics_days,
            ),
            ("retention.max_audit_days", self.retention.max_audit_days),
        ] {
            if value < 0 {
                return bad(key, "must not be negative");
            }
        }
        if self.retention.batch_size < 1 {
            return bad("retention.batch_size", "must be positive");
        }
        // -- operations
        if self
            .previous_master_keys
            .iter()
            .any(|k| decode_master_key(k).is_none())
        {
            return bad(
                "previous_master_keys",
                "each must be base64 of exactly 32 bytes",
            );
        }
        if let Err(why) = self.limits.validate() {
            return bad(why.0, why.1);
        }
        Ok(())
    }

    /// The base URL platforms reach us on.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Decodes a configured master key (base64 of 32 bytes).
pub fn decode_master_key(key: &SecretString) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose_secret().trim())
        .ok()?;
    bytes.try_into().ok()
}

fn describe(err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let path = err.path.join(".");
    // figment's path sometimes already ends with the field it reports.
    let join = |field: &str| match err.path.last() {
        None => field.to_string(),
        Some(last) if last == field => path.clone(),
        Some(_) => format!("{path}.{field}"),
    };
    let line = match &err.kind {
        Kind::UnknownField(field, _) => format!("config: unknown key `{}`", join(field)),
        Kind::MissingField(field) => format!("config: missing key `{}`", join(field)),
        Kind::UnknownVariant(value, expected) => format!(
            "config key `{path}`: unknown value `{value}` (expected one of: {})",
            expected.join(", ")
        ),
        other => format!("config key `{path}`: {other}"),
    };
    ConfigError(line.replace('\n', " "))
}
