//! The NATS JetStream backend (`storage.backend = "nats"`): the only code
//! that talks to NATS. Several relays share one replicated stream (the log),
//! one durable consumer per destination (its cursor, fleet-wide), and one
//! key-value bucket (destination state, attempts, dead letters). It knows
//! nothing of HTTP or delivery policy; [`crate::backend`] puts it behind the
//! same seam as sled.
//!
//! | JetStream object              | holds                                            |
//! |-------------------------------|--------------------------------------------------|
//! | stream `S`, subjects `S.log.<source>` | every message, its [`Message`] record as payload; `Nats-Msg-Id` = source ‖ `:` ‖ idempotency key |
//! | consumer `S_<dest>`           | a destination's cursor (its ack floor), filtered to its sources; `max_ack_pending` 1 for strict |
//! | KV bucket `S-state`           | `state.<dest>` (operator state), `health.<dest>` (the fleet's view of its attempts), `move.<dest>` (a relay's hold while it replays or redelivers alone), `start.<dest>` (the last replay's start) |
//! | KV bucket `S-history`         | `att.<dest>.<seq>`, `dead.<dest>.<seq>` (codec records; keys older than `retention` go) |
//!
//! - `log`: publishing (the inbound `200` waits for JetStream's ack) and reads by seq;
//! - `ledger`: the buckets (state, health, holds, attempts, dead letters);
//! - `feed`: a destination's durable consumer;
//! - `replies`: sync replies, answered by whichever relay delivers.

mod feed;
mod ledger;
mod log;
mod replies;

use std::time::Duration;

use async_nats::jetstream;

use crate::config::{NatsAuth, NatsConfig, StorageConfig};

pub use feed::{Delivery, Feed, Moved, Shape, Stopping};
pub use log::Published;
pub use replies::{Answer, ReplyTo};

/// How long the fleet remembers an idempotency key at least (JetStream's
/// default); a source's longer `dedup_window` raises it.
const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Most time a call to NATS may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// NATS failures, each with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot connect to NATS ({urls}): {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("JetStream {what}: {detail}")]
    JetStream { what: &'static str, detail: String },
    /// The server's `max_payload` is below what a webhook may need.
    #[error("the NATS server's max_payload is {server} bytes, below the {needed} a {body}-byte webhook may need; raise max_payload in the NATS config (at most 64 MiB)")]
    PayloadTooSmall {
        server: usize,
        needed: usize,
        body: usize,
    },
    /// 2.9 loses dedup and KV state across node restarts (seen in tests).
    #[error("the NATS server is {0}; the fleet needs nats-server 2.10 or newer")]
    OldServer(String),
    /// A hold lapsed (its renewal came too late) and another relay took it.
    #[error("the destination's hold lapsed and another relay took it over")]
    HoldLost,
    /// The stream refused the message: `max_disk_bytes` (the stream's `max_bytes`) is reached.
    #[error("the stream is full (storage.max_disk_bytes)")]
    Full,
}

impl FleetError {
    /// Whether trying again later may succeed (not a setup or config problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FleetError::JetStream { .. } | FleetError::Full | FleetError::HoldLost
        )
    }

    fn js(what: &'static str, e: impl std::fmt::Display) -> FleetError {
        FleetError::JetStream {
            what,
            detail: e.to_string(),
        }
    }
}

/// A relay's connection to the fleet's stream and bucket.
pub struct Fleet {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// `<stream>-state`: each destination's operator state.
    bucket: jetstream::kv::Store,
    /// `<stream>-history`: attempts and dead letters, expiring after `retention`.
    records: jetstream::kv::Store,
    cfg: NatsConfig,
    /// `S.log`: a message goes to `S.log.<source>`.
    subject: String,
    /// How long a delivery may go without a sign of life before another relay takes it over.
    ack_wait: Duration,
    /// Each destination's state as the bucket's watch last reported it.
    states: ledger::StateCopies,
    /// This process among the fleet's relays (where sync replies come back to).
    relay_id: String,
}

impl Fleet {
    /// Connects, then creates the stream and the bucket if they are missing
    /// (or brings their replicas, window and limits to the config).
    pub async fn connect(
        storage: &StorageConfig,
        cfg: &NatsConfig,
        dedup_window: Duration,
        max_body: usize,
    ) -> Result<Fleet, FleetError> {
        let client = connect(cfg).await?;
        let version = client.server_info().version;
        if !at_least_2_10(&version) {
            return Err(FleetError::OldServer(version));
        }
        // A webhook is its body plus headers and the record's framing.
        let needed = max_body.saturating_add(64 * 1024);
        let server = client.server_info().max_payload;
        if server < needed {
            return Err(FleetError::PayloadTooSmall {
                server,
                needed,
                body: max_body,
            });
        }
        let js = jetstream::new(client.clone());
        let subject = format!("{}.log", cfg.stream);
        let config = jetstream::stream::Config {
            name: cfg.stream.to_string(),
            subjects: vec![format!("{subject}.>")],
            storage: jetstream::stream::StorageType::File,
            retention: jetstream::stream::RetentionPolicy::Limits,
            // No age limit: JetStream cannot tell which messages every
            // destination finished; `purge_finished` deletes those.
            max_age: Duration::ZERO,
            max_bytes: i64::try_from(storage.max_disk_bytes).unwrap_or(i64::MAX),
            // A full stream refuses new webhooks (a 503) rather than drop old ones.
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: cfg.replicas,
            duplicate_window: dedup_window.max(MIN_DEDUP_WINDOW),
            max_message_size: i32::try_from(needed).unwrap_or(i32::MAX),
            description: Some("hookrelay's log".into()),
            ..Default::default()
        };
        let stream = match js.get_stream(&config.name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| FleetError::js("stream info", e))?;
                let c = &info.config;
                let differs = c.subjects != config.subjects
                    || c.num_replicas != config.num_replicas
                    || c.duplicate_window != config.duplicate_window
                    || c.max_age != config.max_age
                    || c.max_bytes != config.max_bytes
                    || c.max_message_size != config.max_message_size;
                if differs {
                    tracing::info!(stream = %cfg.stream, "updating the stream's replicas, window and limits to the config");
                    js.update_stream(&config)
                        .await
                        .map_err(|e| FleetError::js("stream update", e))?;
                }
                s
            }
            Err(_) => js
                .get_or_create_stream(config)
                .await
                .map_err(|e| FleetError::js("stream create", e))?,
        };
        // Operator state lives until changed; attempts and dead letters
        // go with their messages' retention.
        let state = format!("{}-state", cfg.stream);
        let bucket = open_bucket(&js, &state, cfg.replicas, Duration::ZERO).await?;
        let history = format!("{}-history", cfg.stream);
        let records = open_bucket(&js, &history, cfg.replicas, storage.retention).await?;
        // A NUID: unique per process, and a single subject token.
        let relay_id = client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(Fleet {
            client,
            js,
            stream,
            bucket,
            records,
            cfg: cfg.clone(),
            subject,
            ack_wait: cfg.ack_wait,
            states: ledger::StateCopies::default(),
            relay_id,
        })
    }

    /// Whether the client is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        self.cfg.stream.as_str()
    }
}

/// The key-value bucket `name`, created if missing; its replicas and age
/// limit brought to the config if they differ.
async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<jetstream::kv::Store, FleetError> {
    match js.get_key_value(name).await {
        Ok(b) => {
            let mut stream = js
                .get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| FleetError::js("bucket stream", e))?;
            let info = stream
                .info()
                .await
                .map_err(|e| FleetError::js("bucket info", e))?;
            if info.config.num_replicas != replicas || info.config.max_age != max_age {
                let config = jetstream::stream::Config {
                    num_replicas: replicas,
                    max_age,
                    ..info.config.clone()
                };
                tracing::info!(
                    bucket = name,
                    "updating the bucket's replicas and age limit to the config"
                );
                js.update_stream(&config)
                    .await
                    .map_err(|e| FleetError::js("bucket update", e))?;
            }
            Ok(b)
        }
        Err(_) => js
            .create_key_value(jetstream::kv::Config {
                bucket: name.to_owned(),
                description: "hookrelay's delivery state".into(),
                history: 1,
                max_age,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| FleetError::js("bucket create", e)),
    }
}

/// Whether a server version (`2.15.1`) is 2.10 or newer.
fn at_least_2_10(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// The next message of an ordered consumer's read, or a timeout error: a
/// read of what the server said is there never waits forever.
async fn next_read<S>(messages: &mut S, what: &'static str) -> Result<Option<S::Item>, FleetError>
where
    S: futures_util::Stream + Unpin,
{
    use futures_util::StreamExt;
    tokio::time::timeout(REQUEST_TIMEOUT, messages.next())
        .await
        .map_err(|_| FleetError::js(what, "timed out"))
}

/// Opens the client with the configured servers and credentials; it
/// reconnects on its own afterwards.
async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, FleetError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("hookrelay")
        .request_timeout(Some(REQUEST_TIMEOUT));
    options = match &cfg.auth {
        NatsAuth::None => options,
        NatsAuth::Token(t) => options.token(String::from_utf8_lossy(t.expose()).into_owned()),
        NatsAuth::UserPassword { user, password } => options.user_and_password(
            user.clone(),
            String::from_utf8_lossy(password.expose()).into_owned(),
        ),
        NatsAuth::CredentialsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| FleetError::Credentials {
                    path: path.clone(),
                    source,
                })?
        }
    };
    let urls = cfg.urls.join(", ");
    let addrs: Vec<async_nats::ServerAddr> =
        cfg.urls.iter().filter_map(|u| u.parse().ok()).collect();
    // The first connection must succeed (a relay that cannot reach any
    // server fails to start, and systemd retries it); later losses are
    // reconnected by the client.
    options
        .connect(addrs)
        .await
        .map_err(|source| FleetError::Connect { urls, source })
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_versions() {
        assert!(super::at_least_2_10("2.10.0"));
        assert!(super::at_least_2_10("2.15.1"));
        assert!(super::at_least_2_10("3.0.0"));
        assert!(!super::at_least_2_10("2.9.10"));
        assert!(!super::at_least_2_10("garbage"));
    }
}
