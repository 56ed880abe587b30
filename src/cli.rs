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
        /// Run only part of the gateway (overrides the `role` config key).
        #[arg(long, value_enum)]
        role: Option<crate::ops::Role>,
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
    // -- operations
    /// Re-seal every channel's credentials under `master_key`, opening them with it
    /// or any of `previous_master_keys`.
    RotateKey,
    /// Copy the SQLite database to FILE while it is in use, then verify the copy
    /// (PostgreSQL: use pg_dump).
    Backup {
        file: PathBuf,
        /// Only verify FILE, an existing backup.
        #[arg(long)]
        verify: bool,
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
        // -- operations
        Command::RotateKey => {
            let rotation = crate::ops::rotate::run(&config).await?;
            println!(
                "re-sealed {}, already current {}, changed meanwhile {}, unreadable {}",
                rotation.resealed,
                rotation.current,
                rotation.changed,
                rotation.unreadable.len()
            );
            anyhow::ensure!(
                rotation.unreadable.is_empty(),
                "no configured key opens the credentials of channels: {}",
                rotation.unreadable.join(", ")
            );
            Ok(())
        }
        Command::Backup { file, verify } => {
            let report = if verify {
                crate::ops::backup::verify(&file).await?
            } else {
                crate::ops::backup::run(&config.database_url, &file).await?
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
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
