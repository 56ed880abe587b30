//! Provider usage in this process, by tenant, provider, model and outcome, served as
//! Prometheus metrics at `/metrics`. The durable record, summed per tenant for the
//! admin API, is the `ai_calls` table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::config::ProviderName;
use crate::store::AiCall;

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
}

/// (tenant, provider, model, outcome)
type Key = (String, String, String, String);

#[derive(Default)]
pub struct Usage {
    totals: Mutex<BTreeMap<Key, Totals>>,
}

impl Usage {
    pub fn add(&self, tenant_id: &str, call: &AiCall) {
        let key = (
            tenant_id.to_string(),
            call.provider.clone(),
            call.model.clone(),
            call.outcome.clone(),
        );
        let mut totals = match self.totals.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let t = totals.entry(key).or_default();
        t.calls += 1;
        t.input_tokens += call.input_tokens.max(0) as u64;
        t.output_tokens += call.output_tokens.max(0) as u64;
        t.cost_micros += call.cost_micros.max(0) as u64;
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self, open_circuits: &[ProviderName]) -> String {
        let totals = match self.totals.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut out = String::new();
        let labels = |(tenant, provider, model, _): &Key| {
            format!(
                "tenant=\"{}\",provider=\"{}\",model=\"{}\"",
                escape(tenant),
                escape(provider),
                escape(model)
            )
        };
        out.push_str("# HELP omnigate_ai_calls_total LLM provider calls.\n");
        out.push_str("# TYPE omnigate_ai_calls_total counter\n");
        for (key, t) in &totals {
            let _ = writeln!(
                out,
                "omnigate_ai_calls_total{{{},outcome=\"{}\"}} {}",
                labels(key),
                escape(&key.3),
                t.calls
            );
        }
        // Tokens and cost come only from answered calls; sum over outcomes.
        let mut by_model: BTreeMap<Key, Totals> = BTreeMap::new();
        for (key, t) in &totals {
            let k = (key.0.clone(), key.1.clone(), key.2.clone(), String::new());
            let e = by_model.entry(k).or_default();
            e.input_tokens += t.input_tokens;
            e.output_tokens += t.output_tokens;
            e.cost_micros += t.cost_micros;
        }
        out.push_str("# HELP omnigate_ai_tokens_total Tokens reported by the providers.\n");
        out.push_str("# TYPE omnigate_ai_tokens_total counter\n");
        for (key, t) in &by_model {
            let l = labels(key);
            let _ = writeln!(
                out,
                "omnigate_ai_tokens_total{{{l},kind=\"input\"}} {}",
                t.input_tokens
            );
            let _ = writeln!(
                out,
                "omnigate_ai_tokens_total{{{l},kind=\"output\"}} {}",
                t.output_tokens
            );
        }
        out.push_str(
            "# HELP omnigate_ai_cost_usd_total Cost of the tokens at the configured prices.\n",
        );
        out.push_str("# TYPE omnigate_ai_cost_usd_total counter\n");
        for (key, t) in &by_model {
            let _ = writeln!(
                out,
                "omnigate_ai_cost_usd_total{{{}}} {}",
                labels(key),
                t.cost_micros as f64 / 1_000_000.0
            );
        }
        out.push_str(
            "# HELP omnigate_ai_circuit_open Whether a provider is being skipped after failures.\n",
        );
        out.push_str("# TYPE omnigate_ai_circuit_open gauge\n");
        for name in ProviderName::ALL {
            let open = u8::from(open_circuits.contains(&name));
            let _ = writeln!(
                out,
                "omnigate_ai_circuit_open{{provider=\"{}\"}} {open}",
                name.as_str()
            );
        }
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
