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
mod backend;
mod cli;
pub mod config;
mod delivery;
mod events;
mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod ingest;
mod keys;
mod listen;
pub mod model;
mod notify;
mod reload;
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
use model::Seq;
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

/// What a reload keeps and works through: everything but the config and
/// the generation.
#[derive(Clone, Copy)]
struct Stays<'a> {
    backend: &'a backend::Backend,
    head: &'a watch::Receiver<Seq>,
    ingest: &'a Arc<ingest::Ingest>,
    admin: &'a Arc<admin::Admin>,
    /// The ingest and admin listeners' TLS, whose certificates a reload swaps.
    tls: [&'a Option<tls::TlsAcceptor>; 2],
    shutdown: &'a CancellationToken,
}

/// Re-reads the config file into the running relay; see [`reload`](mod@reload).
async fn reload(
    config: &mut Config,
    generation: &mut reload::Generation,
    stays: &Stays<'_>,
) -> reload::Outcome {
    let Stays {
        backend,
        head,
        ingest,
        admin,
        tls: [ingest_tls, admin_tls],
        shutdown,
    } = *stays;
    let problems = |e: &dyn std::fmt::Display| -> Vec<String> {
        e.to_string().lines().map(str::to_owned).collect()
    };
    let loaded = match Config::load(&config.file) {
        Ok(new) => new,
        Err(e) => {
            let problems = problems(&e);
            tracing::warn!(
                problems = problems.len(),
                "reload refused: the config is invalid; the running one stays"
            );
            for p in &problems {
                tracing::warn!("{p}");
            }
            generation.events.emit(
                events::Kind::ConfigReloadFailed,
                None,
                serde_json::json!({ "problems": problems }),
            );
            return Err(problems);
        }
    };
    let changes = reload::diff(config, &loaded);
    // What needs a restart keeps its running value; the certificates just
    // read are kept aside for the swap below.
    let fresh_tls = [loaded.server.tls.clone(), loaded.admin.tls.clone()];
    let mut new = loaded;
    new.server = config.server.clone();
    new.admin = config.admin.clone();
    new.storage.data_dir = config.storage.data_dir.clone();
    new.storage.durability = config.storage.durability;
    // The backend is opened once: switching it takes a restart.
    new.storage.backend = config.storage.backend.clone();
    let clients = match delivery::Clients::build(&new.destinations) {
        Ok(c) => c,
        Err(e) => {
            let problems = problems(&e);
            generation.events.emit(
                events::Kind::ConfigReloadFailed,
                None,
                serde_json::json!({ "problems": problems }),
            );
            return Err(problems);
        }
    };
    // Nothing below can fail: only now does the reload change anything.
    // Certificates are re-read with the config (checked as it loaded);
    // turning TLS on or off needs a restart (reported by the diff).
    for (acceptor, tls) in [ingest_tls, admin_tls].into_iter().zip(&fresh_tls) {
        if let (Some(acceptor), Some(tls)) = (acceptor, tls) {
            acceptor.replace(&tls.identity);
        }
    }
    let head_now = *head.borrow();
    let added: Vec<_> = new
        .destinations
        .iter()
        .filter(|d| !config.destinations.iter().any(|o| o.name == d.name))
        .map(|d| d.name.clone())
        .collect();
    // A new destination receives what arrives from now on; one added back
    // resumes at the cursor it kept (in a fleet: its consumer's).
    if let backend::Backend::Sled(store) = backend {
        for d in &added {
            if let Err(e) = store.cursors().init_at(d, head_now) {
                tracing::warn!(destination = %d, error = %e, "cannot start the new destination at the head");
            }
        }
    }
    // The old workers stop before the new ones start: a strict destination
    // must never have two deliveries in flight.
    let placeholder = reload::Generation::idle(shutdown);
    std::mem::replace(generation, placeholder).stop().await;
    let disk = ingest.disk();
    *generation = reload::Generation::start(
        &new,
        &clients,
        backend,
        head,
        (&ingest.appender(), &disk),
        shutdown,
        &added,
    );
    ingest.reconfigure(&new, &generation.controls);
    admin.reconfigure(&new, ingest.stats(), generation.controls.clone());
    *config = new;
    tracing::info!(
        added = ?changes.added,
        removed = ?changes.removed,
        changed = ?changes.changed,
        restart_needed = ?changes.restart_needed,
        "config reloaded"
    );
    generation.events.emit(
        events::Kind::ConfigReloaded,
        None,
        serde_json::to_value(&changes).unwrap_or_default(),
    );
    Ok(changes)
}

/// Opens the configured backend: the data dir's sled store, or a
/// connection to the fleet's JetStream (creating its stream, bucket and
/// consumers as needed). Returns it with the log's newest seq.
async fn open_backend(config: &Config) -> Result<(backend::Backend, Seq), Error> {
    match &config.storage.backend {
        config::Backend::Sled => {
            let data_dir = config.storage.data_dir.clone();
            let store = store::blocking(move || Store::open(&data_dir)).await?;
            let last = store.log().last_seq()?;
            Ok((backend::Backend::Sled(store), last))
        }
        config::Backend::Nats(nats) => {
            let window = config
                .sources
                .iter()
                .map(|s| s.dedup_window)
                .max()
                .unwrap_or_default();
            let max_body = usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX);
            // A cluster just started (or electing leaders) refuses JetStream
            // calls for a few seconds; what retrying cannot fix fails at once.
            let deadline = tokio::time::Instant::now() + FLEET_START_PATIENCE;
            let fleet = loop {
                match fleet::Fleet::connect(&config.storage, nats, window, max_body).await {
                    Ok(fleet) => break fleet,
                    Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                        tracing::warn!(error = %e, "the fleet's JetStream is not ready; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(StoreError::from(e).into()),
                }
            };
            let last = fleet.head().await.map_err(StoreError::from)?;
            Ok((backend::Backend::Fleet(Arc::new(fleet)), last))
        }
    }
}

/// How long a fleet relay keeps trying to set up its stream at start.
const FLEET_START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a fleet relay reads the stream's newest seq (which any relay
/// moves) for its admin views.
const FLEET_HEAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `head` at the fleet stream's newest seq until `shutdown`.
async fn follow_fleet_head(
    fleet: Arc<fleet::Fleet>,
    head: watch::Sender<Seq>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(FLEET_HEAD_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Ok(last) = fleet.head().await {
            head.send_if_modified(|h| {
                let moved = last > *h;
                *h = (*h).max(last);
                moved
            });
        }
    }
}

/// `SIGHUP` asks for a reload, answered in the log.
async fn on_hangup(
    reloads: tokio::sync::mpsc::Sender<reload::Request>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin API instead");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let sent = tokio::select! {
                        r = reloads.send(reload::Request { reply: None }) => r.is_ok(),
                        _ = shutdown.cancelled() => false,
                    };
                    if !sent {
                        return;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloads, shutdown);
    }
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
    let tracker = TaskTracker::new();
    let disk = Arc::new(store::DiskGuard::default());
    let (backend, last) = open_backend(&config).await?;
    let (head_tx, head_rx) = watch::channel(last);
    let appender = match &backend {
        backend::Backend::Sled(store) => store::spawn_appender(
            store.clone(),
            config.storage.durability,
            head_tx,
            disk.clone(),
            &tracker,
            shutdown.clone(),
        )?,
        backend::Backend::Fleet(fleet) => {
            tracker.spawn(follow_fleet_head(fleet.clone(), head_tx, shutdown.clone()));
            store::Appender::fleet(fleet.clone())
        }
    };
    notify::spawn(&tracker, shutdown.clone());
    let mut generation = reload::Generation::start(
        &config,
        &clients,
        &backend,
        &head_rx,
        (&appender, &disk),
        &shutdown,
        &[],
    );
    drop(clients);
    let ingest = Arc::new(ingest::Ingest::new(
        &config,
        &generation.controls,
        appender.clone(),
        disk,
    ));
    let (reload_tx, mut reloads) = tokio::sync::mpsc::channel(4);
    let admin_state = Arc::new(admin::Admin::new(
        &config,
        backend.clone(),
        head_rx.clone(),
        Some(reload_tx.clone()),
    ));
    admin_state.reconfigure(&config, ingest.stats(), generation.controls.clone());
    generation.events.emit(
        events::Kind::RelayStarted,
        None,
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "last_seq": last.0 }),
    );
    // Only the events task may keep the appender past the ingest's end.
    drop(appender);
    tracker.spawn(admin::serve(
        listeners.admin,
        admin_state.clone(),
        admin_tls.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(on_hangup(reload_tx, shutdown.clone()));
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
    let serving = tokio::spawn(ingest::serve(
        listeners.ingest,
        ingest.clone(),
        ingest_tls.clone(),
        shutdown.clone(),
    ));
    let mut config = config;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(request) = reloads.recv() => {
                let stays = Stays {
                    backend: &backend,
                    head: &head_rx,
                    ingest: &ingest,
                    admin: &admin_state,
                    tls: [&ingest_tls, &admin_tls],
                    shutdown: &shutdown,
                };
                let outcome = reload(&mut config, &mut generation, &stays).await;
                if let Some(reply) = request.reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
    // Nothing reads reload requests from here on; a SIGHUP sender waiting
    // for room must see the channel closed, not wait forever.
    drop(reloads);
    if let Err(e) = serving.await {
        tracing::error!(error = %e, "inbound listener task failed");
    }
    admin_state.ready.store(false, Ordering::Relaxed);
    drop(ready);
    generation.stop().await;
    drop(ingest);

    tracker.close();
    tracker.wait().await;
    // Everything the fleet was told is already in JetStream.
    let backend::Backend::Sled(store) = backend else {
        drop(admin_state);
        tracing::info!("hookrelay stopped");
        return Ok(());
    };
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
