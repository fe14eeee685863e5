//! hookrelay: a self-hosted webhook relay.
//!
//! The path of one webhook, one module per stage:
//!
//! - `config`: reads and validates `relay.toml` into typed values; each
//!   source's verification scheme becomes a `VerifySpec` with its keys decoded.
//! - `ingest`: inbound HTTP; routing by path, limits, then hands off to the appender.
//! - `verify`: whether an inbound request is authentic, and its idempotency key;
//!   one file per scheme.
//! - `store`: the only code touching sled; group-commit appender, log, cursors,
//!   attempts, dead letters, dedup index, retention.
//! - `delivery`: one worker per destination; ordered delivery with retries.
//! - `admin`: health, readiness, metrics and the operator API (`/api/v1/`).
//! - `cli`: the `hookrelay` command line.
//!
//! Beside them: `keys` (key material and its encodings, shared by config,
//! verify and delivery signing), `model` (the typed names and ids), and small
//! helpers (`listen`: the accept step and JSON answers both listeners share;
//! `tls`: both listeners' inbound TLS, its certificate swappable for reload;
//! `notify` for systemd; `telemetry`; `time`).
//!
//! [`run`] wires them together and owns shutdown: one [`CancellationToken`]
//! fanned out to every task, which are joined before it returns.
//!
//! The public surface is what the binary, the integration tests and the
//! benches need: [`run`], [`Cli`], [`config`], [`model`] and [`store`] (to
//! inspect a stopped relay's data dir). The fuzz entry points are behind the
//! `fuzzing` feature, which only the test and fuzz builds enable.

#![forbid(unsafe_code)]

mod admin;
mod cli;
pub mod config;
mod delivery;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod ingest;
mod keys;
mod listen;
pub mod model;
mod notify;
pub mod route;
pub mod store;
mod telemetry;
mod time;
mod tls;
mod verify;

pub use cli::Cli;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Config;
use store::{Store, StoreError};

/// Failures that stop the relay; [`Error::exit_code`] is the one mapping to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] delivery::TlsSetupError),
    #[error(transparent)]
    InboundTls(#[from] tls::TlsError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// 2 for bad configuration, 1 for anything that went wrong at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Tls(_) | Error::InboundTls(_) => 2,
            _ => 1,
        }
    }
}

/// The relay's two bound sockets; tests bind port 0 and pass them in.
pub struct Listeners {
    pub ingest: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the config.
    pub async fn bind(config: &Config) -> Result<Listeners, Error> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Listeners {
            ingest: bind(config.server.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }
}

/// Where a started relay serves, passed to [`run_notify`]'s callback once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
}

/// How much longer than `TimeoutStopSec` systemd is asked to wait for the
/// checkpoint at a clean stop (as long as the unit's `TimeoutStartSec`).
const CHECKPOINT_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the relay until `shutdown` is cancelled, then stops in order: stop
/// accepting, let open requests finish and their appends commit, give in-flight
/// deliveries their shutdown grace (5 s), persist cursors, sync, checkpoint
/// the store (see [`store::Store::checkpoint`]), return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_notify(config, listeners, shutdown, |_| ()).await
}

/// [`run`], calling `on_ready` once both listeners serve and the store is
/// open (when systemd is told `READY=1`), e.g. to write `--ready-file`. What
/// it returns is dropped as soon as the relay stops being ready (shutdown
/// began), so a guard can take the news back.
pub async fn run_notify<G>(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Ready) -> G,
) -> Result<(), Error> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // Everything that can fail comes first, so a failure leaves no task to stop.
    let clients = delivery::Clients::build(&config.destinations)?;
    // Kept by the listeners; a reload swaps their certificates through
    // `tls::TlsAcceptor::reload` / `replace` on clones of these.
    let acceptor = |t: &Option<config::TlsConfig>| {
        t.as_ref()
            .map(|t| tls::TlsAcceptor::new(&t.identity))
            .transpose()
    };
    let ingest_tls = acceptor(&config.server.tls)?;
    let admin_tls = acceptor(&config.admin.tls)?;
    let local = |l: &TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| Error::Bind { addr, source })
    };
    let ingest_addr = local(&listeners.ingest, config.server.listen)?;
    let admin_addr = local(&listeners.admin, config.admin.listen)?;
    let data_dir = config.storage.data_dir.clone();
    let store = store::blocking(move || Store::open(&data_dir)).await?;
    let last = store.log().last_seq()?;
    let (head_tx, head_rx) = watch::channel(last);

    let tracker = TaskTracker::new();
    let appender = store::spawn_appender(
        store.clone(),
        config.storage.durability,
        head_tx,
        &tracker,
        shutdown.clone(),
    )?;
    notify::spawn(&tracker, shutdown.clone());
    let controls = delivery::spawn_workers(
        &config.destinations,
        &clients,
        &store,
        &head_rx,
        &tracker,
        &shutdown,
    );
    let over_budget = store::spawn_retention(
        store.clone(),
        config.destinations.iter().map(|d| d.name.clone()).collect(),
        config.storage.retention,
        config.storage.max_disk_bytes,
        &tracker,
        shutdown.clone(),
    );
    let ingest = Arc::new(ingest::Ingest::new(&config, appender).with_disk_budget(over_budget));
    let admin_state = Arc::new(admin::Admin::new(
        &config,
        store.clone(),
        head_rx.clone(),
        ingest.stats(),
        controls,
    ));
    tracker.spawn(admin::serve(
        listeners.admin,
        admin_state.clone(),
        admin_tls.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        ingest = %ingest_addr,
        admin = %admin_addr,
        ingest_tls = ingest_tls.is_some(),
        admin_tls = admin_tls.is_some(),
        data_dir = %config.storage.data_dir.display(),
        last_seq = last.0,
        "hookrelay listening"
    );
    // `/readyz` says ready before anyone is told so.
    admin_state.ready.store(true, Ordering::Relaxed);
    notify::ready();
    let ready = on_ready(Ready {
        ingest: ingest_addr,
        admin: admin_addr,
    });
    ingest::serve(listeners.ingest, ingest, ingest_tls, shutdown.clone()).await;
    admin_state.ready.store(false, Ordering::Relaxed);
    drop(ready);

    tracker.close();
    tracker.wait().await;
    if store.is_poisoned() {
        return Err(Error::Store(StoreError::Poisoned));
    }
    store.blocking(Store::sync).await?;
    // Everything is durable; the checkpoint only shortens the next start, so
    // failing it is not an error. The other handles go first: it needs the
    // last one.
    drop(admin_state);
    notify::extend_stop(CHECKPOINT_ALLOWANCE);
    tracing::info!("checkpointing the store");
    let checkpoint = std::time::Instant::now();
    match store::blocking(move || store.checkpoint()).await {
        Ok(()) => tracing::info!(
            took_ms = checkpoint.elapsed().as_millis() as u64,
            "store checkpointed"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "store checkpoint failed; the next start replays more of the log")
        }
    }
    tracing::info!("hookrelay stopped");
    Ok(())
}
