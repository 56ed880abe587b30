//! The one table every section writes into, row by row as measurements finish, and
//! the list of broken promises (events acknowledged but not committed, replies that
//! never came, expired rows left behind) that makes the run fail.

use std::time::Duration;

/// One line of the table. Empty cells print as `-`.
#[derive(Debug, Default)]
pub struct Row {
    pub section: &'static str,
    pub what: String,
    pub backend: String,
    pub load: String,
    /// Requests (or replies) per second.
    pub rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: Option<u64>,
    /// The figure against the reference measured in the same run.
    pub vs: String,
    pub notes: String,
    pub target: String,
}

pub fn header() {
    println!(
        "| section | measurement | backend | load | per s | p50 ms | p99 ms | errors | vs reference (same run) | notes | target |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---|---|---|");
}

impl Row {
    pub fn print(&self) {
        let num =
            |v: Option<f64>, places: usize| v.map_or("-".to_string(), |v| format!("{v:.places$}"));
        let text = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.section,
            text(&self.what),
            text(&self.backend),
            text(&self.load),
            num(self.rate, 0),
            num(self.p50_ms, 2),
            num(self.p99_ms, 2),
            self.errors.map_or("-".to_string(), |e| e.to_string()),
            text(&self.vs),
            text(&self.notes),
            text(&self.target),
        );
    }
}

/// `description: met` or `description: MISSED`.
pub fn target(description: &str, met: bool) -> String {
    format!("{description}: {}", if met { "met" } else { "MISSED" })
}

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            samples
                .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What went wrong in the run; any entry fails the benchmark.
#[derive(Debug, Default)]
pub struct Broken(Vec<String>);

impl Broken {
    pub fn add(&mut self, what: String) {
        println!("  ! {what}");
        self.0.push(what);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn list(&self) -> &[String] {
        &self.0
    }
}

/// The 1, 5 and 15-minute load averages (Linux), to judge how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The date and time now, `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
fn utc(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_become_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_796_556_540), "2026-12-06 11:29");
    }

    #[test]
    fn percentiles_pick_ranks() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 51.0, 100.0, 100.0));
        assert_eq!(Percentiles::of(Vec::new()).p99, 0.0);
    }
}
