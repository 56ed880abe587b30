//! The command line (CONTRACT.md): `serve`, `migrate`, `tenant create`, `retention run`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "omnigate", version, about = "Messaging-channel bot gateway")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OMNIGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: webhooks, admin API, worker and dispatcher.
    Serve {
        /// Also run the sandbox: a demo tenant, stand-in platform APIs and a page at
        /// /sandbox to write as a customer.
        #[arg(long)]
        sandbox: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants without the admin API.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Retention (privacy): delete what expired.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Run one retention sweep now and print what it deleted per data class.
    Run {
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id and API key (shown only this once).
    Create {
        name: String,
        #[arg(long)]
        domain: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a one-shot command.
pub async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => anyhow::bail!("serve is run by main"),
        Command::Migrate => {
            let store = crate::store::open(&config.database_url).await?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Tenant {
            command: TenantCommand::Create { name, domain, json },
        } => {
            let store = crate::store::open(&config.database_url).await?;
            let created = crate::admin::tenants::create(store.as_ref(), &name, &domain).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": created.id, "api_key": created.api_key.expose_secret()})
                );
            } else {
                println!(
                    "tenant id: {}\napi key:   {}",
                    created.id,
                    created.api_key.expose_secret()
                );
                println!("(the API key is shown only now; store it safely)");
            }
            Ok(())
        }
        Command::Retention {
            command: RetentionCommand::Run { dry_run, json },
        } => {
            let store = crate::store::open(&config.database_url).await?;
            let report = crate::privacy::retention::sweep(
                store.as_ref(),
                &config.retention,
                crate::store::now_ms(),
                dry_run,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                for (class, n) in &report.classes {
                    println!("{class}: {verb} {n}");
                }
            }
            Ok(())
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    token.cancel();
}
