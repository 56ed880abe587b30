use std::process::ExitCode;

use clap::Parser;
use omnigate::cli::{Cli, Command};
use omnigate::config::Config;
use omnigate::telemetry;

/// The request path allocates many small, short-lived buffers (bodies, JSON, SQL
/// arguments) across threads; mimalloc serves them with far less contention and
/// fragmentation than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(mut config) => {
            if let Command::Serve { role, sandbox } = &cli.command {
                if let Some(role) = role {
                    config.role = *role;
                }
                config.sandbox |= *sandbox;
            }
            config
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve { .. } => serve(config).await,
        other => omnigate::cli::execute(other, config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(omnigate::cli::cancel_on_signal(shutdown.clone()));
    omnigate::run(config, listener, shutdown).await
}
