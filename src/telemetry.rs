//! Logging: JSON lines in production, readable text on a terminal; `RUST_LOG` wins,
//! except that serenity logs errors only: its warnings and spans carry Discord
//! gateway payloads (a dispatch that does not parse is logged whole, the event being
//! handled is a span field). Logs carry ids, never message text, tokens or signatures.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";
/// Added to any filter: libraries whose logs would carry message text.
const PAYLOAD_CARRIERS: &[&str] = &["serenity=error"];

/// `RUST_LOG` (or the default when it is unset or invalid), with the payload-carrying
/// libraries held at `error`.
fn filter(env: Option<&str>) -> EnvFilter {
    let mut filter = env
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    for directive in PAYLOAD_CARRIERS {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber (call once, from main).
pub fn init(format: LogFormat) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Even with everything asked for, serenity's warnings (which quote gateway
    /// payloads) stay out; its errors and everyone else's logs stay in.
    #[test]
    fn serenity_logs_errors_only_whatever_rust_log_says() {
        for env in [Some("trace"), Some("info,serenity=debug"), None] {
            let out = Captured::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter(env))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(target: "serenity::gateway::ws", "Err deserializing text; text: what are your opening hours");
                tracing::error!(target: "serenity::gateway::shard", "invalid authentication");
                tracing::info!(target: "omnigate::inbound", "session ready");
            });
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("opening hours"), "{env:?}: {text}");
            assert!(text.contains("invalid authentication"), "{env:?}: {text}");
            assert!(text.contains("session ready"), "{env:?}: {text}");
        }
    }
}
