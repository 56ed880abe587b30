//! Retention: per-tenant periods for each data class, within the platform's maximums,
//! and the sweep that deletes what expired — on a schedule inside `serve` and on
//! demand with `omnigate retention run [--dry-run]`.
//!
//! Deletion runs in small batches, each its own short transaction taken as background
//! work, so webhook acknowledgements never wait long for the writer. Each tenant's
//! per-class counts are recorded in its audit log, also when the sweep stops part way
//! (the gateway shutting down, or a batch failing): every committed deletion is
//! accounted for. Dedupe keys (handled inbox rows:
//! platform ids only) are kept at least [`DEDUPE_MIN_DAYS`] whatever the message
//! period, so a platform's late redelivery of an expired message is not answered
//! again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::Retention as Limits;
use crate::store::{now_ms, DataClass, Store};

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Handled inbox rows (platform ids, no content) outlive messages at least this long.
pub const DEDUPE_MIN_DAYS: i64 = 7;

/// A tenant's retention periods, in whole days; 0 means "as soon as handled".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub messages_days: i64,
    pub raw_events_days: i64,
    pub analytics_days: i64,
    pub audit_days: i64,
}

impl RetentionSettings {
    /// What a tenant gets until it chooses: the maximums, raw envelopes a week.
    pub fn defaults(limits: &Limits) -> Self {
        Self {
            messages_days: limits.max_messages_days,
            raw_events_days: limits.max_raw_events_days.min(7),
            analytics_days: limits.max_analytics_days,
            audit_days: limits.max_audit_days,
        }
    }

    /// The first value outside `0..=maximum`, named.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        for (name, value, max) in [
            (
                "messages_days",
                self.messages_days,
                limits.max_messages_days,
            ),
            (
                "raw_events_days",
                self.raw_events_days,
                limits.max_raw_events_days,
            ),
            (
                "analytics_days",
                self.analytics_days,
                limits.max_analytics_days,
            ),
            ("audit_days", self.audit_days, limits.max_audit_days),
        ] {
            if !(0..=max).contains(&value) {
                return Err(format!("{name} must be between 0 and {max}"));
            }
        }
        Ok(())
    }

    /// Stored values lowered to maximums the operator has since reduced.
    fn within(self, limits: &Limits) -> Self {
        Self {
            messages_days: self.messages_days.min(limits.max_messages_days),
            raw_events_days: self.raw_events_days.min(limits.max_raw_events_days),
            analytics_days: self.analytics_days.min(limits.max_analytics_days),
            audit_days: self.audit_days.min(limits.max_audit_days),
        }
    }
}

/// A tenant's settings as they apply now.
pub async fn settings_of(
    store: &dyn Store,
    limits: &Limits,
    tenant_id: &str,
) -> crate::store::Result<RetentionSettings> {
    Ok(store
        .retention_settings(tenant_id)
        .await?
        .map_or_else(|| RetentionSettings::defaults(limits), |s| s.within(limits)))
}

/// What one sweep deleted (or, dry, would delete), per class, summed over tenants.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    pub classes: BTreeMap<&'static str, u64>,
    /// The sweep stopped before the end (asked to stop); what it deleted so far is
    /// counted, and the rest waits for the next sweep.
    pub interrupted: bool,
}

impl SweepReport {
    pub fn total(&self) -> u64 {
        self.classes.values().sum()
    }
}

const CLASSES: [DataClass; 5] = [
    DataClass::Messages,
    DataClass::RawEvents,
    DataClass::Unhandled,
    DataClass::DedupeKeys,
    DataClass::Analytics,
];

/// How hard a sweep presses on the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Batch after batch (`omnigate retention run`: the operator waits for it).
    Full,
    /// After each batch, a rest as long as the batch held the writer and flushed: the
    /// writer and the disk are the sweep's half the time at most, so webhook
    /// acknowledgements keep their latency while a large backlog is deleted (the
    /// scheduled sweep in `serve`).
    Background,
}

/// Deletes (or with `dry_run` counts) everything expired at `now`, for every tenant,
/// then the rows no tenant owns (unroutable envelopes and events) by the maximums.
pub async fn sweep(
    store: &dyn Store,
    limits: &Limits,
    now: i64,
    dry_run: bool,
) -> crate::store::Result<SweepReport> {
    sweep_at(
        store,
        limits,
        now,
        dry_run,
        Pace::Full,
        &CancellationToken::new(),
    )
    .await
}

/// [`sweep`] at `pace`, stopping between two batches once `stop` is cancelled (the
/// report says it was interrupted).
pub async fn sweep_at(
    store: &dyn Store,
    limits: &Limits,
    now: i64,
    dry_run: bool,
    pace: Pace,
    stop: &CancellationToken,
) -> crate::store::Result<SweepReport> {
    let mut report = SweepReport {
        dry_run,
        ..SweepReport::default()
    };
    let sweep = Sweep {
        store,
        limits,
        dry_run,
        pace,
        stop,
    };
    let swept = sweep.all(now, &mut report).await;
    if !dry_run {
        for (class, rows) in &report.classes {
            crate::metrics::retention_deleted(class, *rows);
        }
    }
    // Deleted rows leave the files, also after a sweep that stopped part way.
    if !dry_run && report.total() > 0 {
        store.compact().await?;
    }
    report.interrupted = !swept?;
    Ok(report)
}

/// One sweep's way of deleting.
struct Sweep<'a> {
    store: &'a dyn Store,
    limits: &'a Limits,
    dry_run: bool,
    pace: Pace,
    stop: &'a CancellationToken,
}

impl Sweep<'_> {
    /// Sweeps every tenant, then the rows no tenant owns, into `report`; false when
    /// asked to stop before the end.
    async fn all(&self, now: i64, report: &mut SweepReport) -> crate::store::Result<bool> {
        for tenant_id in self.store.tenant_ids().await? {
            let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
            let swept = self.tenant(&tenant_id, now, &mut counts).await;
            // Whatever was deleted is in the tenant's audit log, also when the sweep
            // stopped or failed part way through it.
            let recorded = if !self.dry_run && counts.values().any(|n| *n > 0) {
                let mut detail = serde_json::to_value(&counts).unwrap_or_default();
                if !matches!(swept, Ok(true)) {
                    detail["interrupted"] = serde_json::Value::Bool(true);
                }
                let entry = Audit::new(&tenant_id, "system", "retention.sweep").detail(detail);
                self.store.append_audit(&entry).await
            } else {
                Ok(())
            };
            for (class, n) in counts {
                *report.classes.entry(class).or_default() += n;
            }
            recorded?;
            if !swept? {
                return Ok(false);
            }
        }
        let unowned = RetentionSettings {
            raw_events_days: self.limits.max_raw_events_days,
            ..RetentionSettings::defaults(self.limits)
        };
        for class in [DataClass::RawEvents, DataClass::Unhandled] {
            let total = report.classes.entry(class.as_str()).or_default();
            if !self
                .expire(None, class, cutoff(class, &unowned, now), total)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sweeps `tenant_id`'s classes into `counts` (kept on error too); false when
    /// asked to stop before the end.
    async fn tenant(
        &self,
        tenant_id: &str,
        now: i64,
        counts: &mut BTreeMap<&'static str, u64>,
    ) -> crate::store::Result<bool> {
        let settings = settings_of(self.store, self.limits, tenant_id).await?;
        for class in CLASSES {
            let total = counts.entry(class.as_str()).or_default();
            if !self
                .expire(Some(tenant_id), class, cutoff(class, &settings, now), total)
                .await?
            {
                return Ok(false);
            }
        }
        let audit_cutoff = now - settings.audit_days * DAY_MS;
        counts.insert(
            DataClass::Audit.as_str(),
            self.store
                .prune_audit(tenant_id, audit_cutoff, self.dry_run)
                .await?,
        );
        Ok(true)
    }

    /// Deletes `class` rows older than `cutoff` in batches, adding each committed
    /// batch to `total` (so a failed batch leaves the count of those before it);
    /// false when asked to stop before the last batch.
    async fn expire(
        &self,
        tenant_id: Option<&str>,
        class: DataClass,
        cutoff: i64,
        total: &mut u64,
    ) -> crate::store::Result<bool> {
        if self.dry_run {
            *total += self.store.count_expired(tenant_id, class, cutoff).await?;
            return Ok(true);
        }
        loop {
            if self.stop.is_cancelled() {
                return Ok(false);
            }
            let (n, took) = self
                .store
                .delete_expired(tenant_id, class, cutoff, self.limits.batch_size)
                .await?;
            *total += n;
            if n < self.limits.batch_size as u64 {
                return Ok(true);
            }
            // Let waiting writers in between batches.
            match self.pace {
                Pace::Full => tokio::task::yield_now().await,
                Pace::Background => tokio::select! {
                    _ = tokio::time::sleep(took) => {}
                    _ = self.stop.cancelled() => {}
                },
            }
        }
    }
}

fn cutoff(class: DataClass, s: &RetentionSettings, now: i64) -> i64 {
    let days = match class {
        DataClass::Messages => s.messages_days,
        DataClass::RawEvents | DataClass::Unhandled => s.raw_events_days,
        DataClass::DedupeKeys => DEDUPE_MIN_DAYS.max(s.raw_events_days),
        DataClass::Analytics => s.analytics_days,
        DataClass::Audit => s.audit_days,
    };
    now - days * DAY_MS
}

/// Sweeps every `sweep_interval_minutes` until `stop`.
pub async fn run_sweeper(
    store: std::sync::Arc<dyn Store>,
    limits: Limits,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(limits.sweep_interval_minutes.max(1) * 60);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match sweep_at(
            store.as_ref(),
            &limits,
            now_ms(),
            false,
            Pace::Background,
            &stop,
        )
        .await
        {
            Ok(report) => tracing::info!(
                deleted = report.total(),
                classes = ?report.classes,
                interrupted = report.interrupted,
                "retention sweep"
            ),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
    }
}
