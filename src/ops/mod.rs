//! Running omnigate in production: which parts an instance runs, its limits, how it
//! shuts down, and the operator commands (`rotate-key`, `backup`).

pub mod backup;
pub mod rate;
pub mod rotate;

use serde::Deserialize;

/// Which parts of the gateway an instance runs. Several instances on one Postgres
/// may split them: ingress instances behind the load balancer, workers beside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Webhooks, admin API, worker and dispatcher.
    #[default]
    All,
    /// Webhooks and admin API only: stores and acknowledges, never processes.
    Ingress,
    /// Worker and dispatcher only; HTTP serves health and metrics.
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }

    pub fn runs_workers(self) -> bool {
        self != Self::Ingress
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Ingress => "ingress",
            Self::Worker => "worker",
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest time a request may take before it is answered 408.
    #[serde(default = "Limits::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest admin API request body, in bytes (webhooks have their own 1 MiB cap).
    #[serde(default = "Limits::default_admin_body_bytes")]
    pub admin_body_bytes: usize,
    /// Admin API requests per second each tenant may make (sustained), per instance.
    #[serde(default = "Limits::default_admin_per_second")]
    pub admin_per_second: f64,
    /// Admin API requests a tenant may make in a burst.
    #[serde(default = "Limits::default_admin_burst")]
    pub admin_burst: u32,
}

impl Limits {
    fn default_request_timeout_ms() -> u64 {
        30_000
    }
    fn default_admin_body_bytes() -> usize {
        2 * 1024 * 1024
    }
    fn default_admin_per_second() -> f64 {
        100.0
    }
    fn default_admin_burst() -> u32 {
        200
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.request_timeout_ms == 0 {
            return Err(("limits.request_timeout_ms", "must be positive"));
        }
        if self.admin_body_bytes == 0 {
            return Err(("limits.admin_body_bytes", "must be positive"));
        }
        if !(self.admin_per_second.is_finite() && self.admin_per_second > 0.0) {
            return Err(("limits.admin_per_second", "must be a positive number"));
        }
        if self.admin_burst == 0 {
            return Err(("limits.admin_burst", "must be positive"));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout_ms: Self::default_request_timeout_ms(),
            admin_body_bytes: Self::default_admin_body_bytes(),
            admin_per_second: Self::default_admin_per_second(),
            admin_burst: Self::default_admin_burst(),
        }
    }
}

/// What SIGTERM does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// After SIGTERM, how long `/readyz` answers 503 while webhooks are still
    /// accepted (so the load balancer stops routing here before the listener closes).
    #[serde(default = "Shutdown::default_grace_ms")]
    pub grace_ms: u64,
    /// How long in-flight events and sends may take to finish after the grace
    /// period; whatever is still running then is abandoned and its leases released.
    #[serde(default = "Shutdown::default_drain_ms")]
    pub drain_ms: u64,
}

impl Shutdown {
    fn default_grace_ms() -> u64 {
        2_000
    }
    fn default_drain_ms() -> u64 {
        20_000
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            grace_ms: Self::default_grace_ms(),
            drain_ms: Self::default_drain_ms(),
        }
    }
}
