//! Reload: re-reading `relay.toml` (and with it every secret) into the
//! running relay, on `SIGHUP`, `hookrelay reload` or `POST /api/v1/reload`.
//!
//! What a reload restarts is a [`Generation`]: the delivery workers (each
//! resumes at its cursor), retention and the disk budget, and operator
//! events. The listeners, open connections, the store and the appender
//! stay, so no connection or accepted webhook is dropped; the ingest routes
//! and the admin's lists are swapped whole. An invalid config changes
//! nothing. What only a restart can change is reported, not applied.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::config::Config;
use crate::delivery::{self, Control};
use crate::events::{self, Events};
use crate::model::{DestinationName, Seq};
use crate::store::{self, Appender, DiskGuard};

/// A request to reload; the answer goes back on `reply` when there is one
/// (the admin API), else only to the log (`SIGHUP`).
pub struct Request {
    pub reply: Option<oneshot::Sender<Outcome>>,
}

/// What a reload did, or every problem of the new config (nothing changed).
pub type Outcome = Result<Changes, Vec<String>>;

/// What a reload changed, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// `source NAME` / `destination NAME` entries.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Keys whose new value needs a restart; the old one stays in force.
    pub restart_needed: Vec<String>,
}

/// How `new` differs from `old`.
pub fn diff(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    // Compared through their debug form: these types hold decoded keys and
    // compiled programs, which have no equality of their own; nothing of
    // it is shown.
    let sources = |cfg: &Config| -> Vec<(String, String)> {
        cfg.sources
            .iter()
            .map(|s| (format!("source {}", s.name), format!("{s:?}")))
            .collect()
    };
    let destinations = |cfg: &Config| -> Vec<(String, String)> {
        cfg.destinations
            .iter()
            .map(|d| (format!("destination {}", d.name), format!("{d:?}")))
            .collect()
    };
    for (before, after) in [
        (sources(old), sources(new)),
        (destinations(old), destinations(new)),
    ] {
        for (name, v) in &after {
            match before.iter().find(|(n, _)| n == name) {
                None => c.added.push(name.clone()),
                Some((_, w)) if w != v => c.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        for (name, _) in &before {
            if !after.iter().any(|(n, _)| n == name) {
                c.removed.push(name.clone());
            }
        }
    }
    let restart = [
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.max_body_bytes",
            old.server.max_body_bytes != new.server.max_body_bytes,
        ),
        (
            "server.request_timeout",
            old.server.request_timeout != new.server.request_timeout,
        ),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "server.tls_cert_file",
            old.server.tls.is_some() != new.server.tls.is_some(),
        ),
        (
            "admin.tls_cert_file",
            old.admin.tls.is_some() != new.admin.tls.is_some(),
        ),
        (
            "admin.token",
            old.admin.token.as_ref().map(|t| t.expose().to_vec())
                != new.admin.token.as_ref().map(|t| t.expose().to_vec()),
        ),
        (
            "storage.data_dir",
            old.storage.data_dir != new.storage.data_dir,
        ),
        (
            "storage.durability",
            old.storage.durability != new.storage.durability,
        ),
        (
            "storage.backend",
            fleet_settings(&old.storage.backend) != fleet_settings(&new.storage.backend),
        ),
    ];
    c.restart_needed = restart
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(k, _)| k.to_owned())
        .collect();
    c
}

/// The parts of a running relay that a reload stops and starts again.
pub struct Generation {
    token: CancellationToken,
    tracker: TaskTracker,
    /// Operator events stop last, so that what the workers report while
    /// they stop is still stored.
    events_token: CancellationToken,
    events_tracker: TaskTracker,
    pub controls: Vec<(DestinationName, Arc<Control>)>,
    pub events: Events,
}

impl Generation {
    /// Starts delivery, retention and operator events for `config`, with
    /// `clients` built for its destinations beforehand (the one step that
    /// can fail, done while the previous generation still runs).
    pub fn start(
        config: &Config,
        clients: &delivery::Clients,
        backend: &Backend,
        head: &watch::Receiver<Seq>,
        (appender, disk): (&Appender, &Arc<DiskGuard>),
        shutdown: &CancellationToken,
        added: &[DestinationName],
    ) -> Generation {
        let token = shutdown.child_token();
        let tracker = TaskTracker::new();
        // Not a child of `shutdown`: only `stop` ends it, after the workers.
        let events_token = CancellationToken::new();
        let events_tracker = TaskTracker::new();
        let subscribed = config
            .destinations
            .iter()
            .any(|d| d.sources.iter().any(|s| s.as_str() == events::SOURCE));
        let events = Events::spawn(
            subscribed,
            appender.clone(),
            &events_tracker,
            events_token.clone(),
        );
        let controls = delivery::spawn_workers(
            &config.destinations,
            clients,
            backend,
            head,
            &events,
            &tracker,
            (&token, shutdown),
            added,
        );
        if let Backend::Fleet(fleet) = backend {
            tracker.spawn(fleet_retention(
                fleet.clone(),
                config.destinations.iter().map(|d| d.name.clone()).collect(),
                config.storage.retention,
                token.clone(),
            ));
        }
        if let Backend::Sled(store) = backend {
            let limits = store::Limits {
                max: config.storage.max_disk_bytes,
                min_free: config.storage.min_free_bytes,
            };
            store::spawn_retention(
                store.clone(),
                config.destinations.iter().map(|d| d.name.clone()).collect(),
                config.storage.retention,
                (limits, disk.clone()),
                &tracker,
                token.clone(),
            );
        }
        events::spawn_watcher(
            events.clone(),
            (controls.clone(), backend.clone()),
            disk.clone(),
            &tracker,
            token.clone(),
        );
        Generation {
            token,
            tracker,
            events_token,
            events_tracker,
            controls,
            events,
        }
    }

    /// A generation with nothing running, held while one is being replaced.
    pub fn idle(shutdown: &CancellationToken) -> Generation {
        Generation {
            token: shutdown.child_token(),
            tracker: TaskTracker::new(),
            events_token: CancellationToken::new(),
            events_tracker: TaskTracker::new(),
            controls: Vec::new(),
            events: Events::none(),
        }
    }

    /// Stops every task of this generation and waits for them: in-flight
    /// attempts get their shutdown grace, cursors are where they are.
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.events_token.cancel();
        self.events_tracker.close();
        self.events_tracker.wait().await;
    }
}

/// What a fleet's connection was opened with, as bytes to compare (a
/// restart applies a change); secrets compared, never shown.
fn fleet_settings(b: &crate::config::Backend) -> Option<Vec<u8>> {
    let crate::config::Backend::Nats(n) = b else {
        return None;
    };
    let mut out = format!(
        "{:?}\0{}\0{}\0{}\0",
        n.urls,
        n.stream,
        n.replicas,
        n.ack_wait.as_millis()
    )
    .into_bytes();
    match &n.auth {
        crate::config::NatsAuth::None => {}
        crate::config::NatsAuth::Token(t) => out.extend_from_slice(t.expose()),
        crate::config::NatsAuth::UserPassword { user, password } => {
            out.extend_from_slice(user.as_bytes());
            out.push(0);
            out.extend_from_slice(password.expose());
        }
        crate::config::NatsAuth::CredentialsFile(p) => {
            out.extend_from_slice(p.to_string_lossy().as_bytes())
        }
    }
    Some(out)
}

/// How often a fleet relay deletes what every destination finished.
const FLEET_RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The fleet's retention, run by every relay (it is idempotent); the
/// stream's `max_bytes` is its disk budget.
async fn fleet_retention(
    fleet: Arc<crate::fleet::Fleet>,
    dests: Vec<DestinationName>,
    retention: std::time::Duration,
    shutdown: CancellationToken,
) {
    // A retention under a minute ages things out sooner: checked as often.
    let mut tick = tokio::time::interval(FLEET_RETENTION_EVERY.min(retention));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match fleet.purge_finished(&dests, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "retention deleted messages every destination finished"
            ),
            Err(e) => tracing::warn!(error = %e, "fleet retention failed; retrying in a minute"),
        }
    }
}
