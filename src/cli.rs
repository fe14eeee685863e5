//! The `hookrelay` command line: argument parsing, logging setup, and the
//! commands. Exit codes come from [`crate::Error::exit_code`].

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{Error, Listeners};

/// Self-hosted webhook relay.
#[derive(Debug, Parser)]
#[command(name = "hookrelay", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format for `serve`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        /// Config file.
        #[arg(long, default_value = "relay.toml")]
        config: PathBuf,
        /// Log format on stderr (level from RUST_LOG, default info).
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Validate the config and exit: 0 valid, 2 invalid.
    Check {
        /// Config file.
        #[arg(long, default_value = "relay.toml")]
        config: PathBuf,
    },
}

/// Runs the parsed command; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} sources, {} destinations)",
                    config.display(),
                    c.sources.len(),
                    c.destinations.len()
                );
                0
            }
            Err(e) => report(&Error::Config(e)),
        },
        Command::Serve { config, log_format } => {
            init_logging(log_format);
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return report(&Error::Config(e)),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return report(&Error::Client(format!("cannot start runtime: {e}"))),
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => 0,
                Err(e) => report(&e),
            }
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    crate::run(config, listeners, shutdown).await
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

fn report(e: &Error) -> i32 {
    eprintln!("hookrelay: {e}");
    e.exit_code()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
