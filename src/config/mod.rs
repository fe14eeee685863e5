//! Reading and validating `relay.toml` into typed values.
//!
//! This module owns the config contract (README, "Configuration"): the TOML
//! shape, the defaults, units (durations, sizes, rates), secrets (literal,
//! environment variable or file), each scheme's keys decoded once (see
//! [`VerifySpec`]) and every cross-field rule. [`Config::load`] reports all
//! problems at once, each with file, line and dotted key. After loading, the
//! rest of the crate trusts these values and never re-parses them.
//!
//! It must not touch anything else: no I/O beyond reading the config file, the
//! secret files, PayPal's `cert_file`, the listeners' `tls_cert_file` and
//! `tls_key_file` and environment variables (and checking that `ca_file`
//! exists), no networking, no logging of secret values. A [`Secret`] (and a
//! TLS key) prints as `[redacted]` and no error message ever contains one.

mod ctx;
mod destination;
mod parse;
mod raw;
mod reply;
mod scheme;
mod secret;
mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::keys::{Ed25519PublicKey, RsaPublicKey, TlsIdentity, WhsecKey};
use crate::model::{DestinationName, SourceName};

pub use reply::{MAX_REPLY_BYTES, MAX_TIMEOUT as MAX_REPLY_TIMEOUT};
pub use scheme::VerifySpec;
pub use secret::Secret;

/// The whole, validated relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file path as given.
    pub file: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub sources: Vec<SourceConfig>,
    pub destinations: Vec<DestinationConfig>,
}

/// `[server]`: the inbound webhook listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub request_timeout: Duration,
    /// Inbound HTTPS when `tls_cert_file` and `tls_key_file` are set.
    pub tls: Option<TlsConfig>,
}

/// `[admin]`: the admin API listener and its bearer token.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// HTTPS when `tls_cert_file` and `tls_key_file` are set.
    pub tls: Option<TlsConfig>,
}

/// What the client commands need of `[admin]` (see [`Config::load_admin`]):
/// where it listens, its token, and with TLS the certificate file the relay
/// serves, which they pin. Never the TLS key.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// Resolved against the config dir; not read by the config.
    pub tls_cert_file: Option<PathBuf>,
}

/// `tls_cert_file` and `tls_key_file` of `[server]` or `[admin]`: both
/// resolved against the config dir, and what they held when the config
/// loaded (the chain and its matching key, checked).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub identity: TlsIdentity,
}

/// `[storage]`: where and how the log is kept.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Resolved against the config file's directory.
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub retention: Duration,
    pub max_disk_bytes: u64,
    /// Inbound is refused while the data dir's file system has less free.
    pub min_free_bytes: u64,
    /// Where the log and the delivery state live.
    pub backend: Backend,
}

/// `storage.backend`: one relay on its own sled database, or a fleet on NATS JetStream.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    #[default]
    Sled,
    Nats(NatsConfig),
}

/// `storage.nats`: the JetStream cluster a fleet of relays shares.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`, or `tls://`), tried in turn.
    pub urls: Vec<String>,
    /// The stream holding the log; also names the fleet's state bucket and consumers.
    pub stream: StreamName,
    /// How many servers keep each message (1, 3 or 5).
    pub replicas: usize,
    /// How long a delivery may go without a sign of life (the relay sends
    /// one every third of it) before another relay takes the message over.
    pub ack_wait: Duration,
    pub auth: NatsAuth,
}

/// A JetStream stream name: `[A-Za-z0-9_-]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamName(String);

impl StreamName {
    /// `None` unless `[A-Za-z0-9_-]{1,32}`.
    pub fn parse(s: &str) -> Option<StreamName> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| StreamName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a relay authenticates to NATS.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    None,
    Token(Secret),
    UserPassword {
        user: String,
        password: Secret,
    },
    /// A `.creds` file (JWT and NKey seed), read at connect.
    CredentialsFile(PathBuf),
}

/// When an inbound webhook counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Answer only after the entry is on disk.
    Fsync,
    /// Flush every 100 ms.
    Buffered,
}

/// What routing needs of a config: each source's event-type rule, each
/// destination's sources and rules.
#[derive(Debug, Clone, Default)]
pub struct RoutingConfig {
    pub sources: Vec<(SourceName, crate::route::EventTypeRule)>,
    pub destinations: Vec<(DestinationName, Vec<SourceName>, crate::route::Rules)>,
}

/// One `[[source]]`: an inbound endpoint.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceName,
    /// Starts with `/`.
    pub path: String,
    pub verify: VerifySpec,
    pub dedup_window: Duration,
    pub dedup_header: Option<http::HeaderName>,
    /// How each message's event type is found (the scheme's default unless
    /// `event_type` is set).
    pub event_type: crate::route::EventTypeRule,
    /// `reply`: the provider gets a destination's answer (sync replies).
    pub reply: Option<ReplyConfig>,
}

/// A source's `reply` table: the provider is answered with `destination`'s
/// answer when it is a 2xx within `timeout`, with the fallback otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyConfig {
    /// Exists, is unordered and receives the source (checked at load).
    pub destination: DestinationName,
    /// Counted from the request's arrival.
    pub timeout: Duration,
    pub status: http::StatusCode,
    pub content_type: http::HeaderValue,
    /// At most 1 MiB.
    pub body: bytes::Bytes,
}

/// `verify.scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    None,
    Standard,
    Stripe,
    Github,
    Shopify,
    Slack,
    Meta,
    Discord,
    Twilio,
    Paypal,
    Hmac,
    Token,
    Basic,
}

impl Scheme {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::None => "none",
            Scheme::Standard => "standard",
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Shopify => "shopify",
            Scheme::Slack => "slack",
            Scheme::Meta => "meta",
            Scheme::Discord => "discord",
            Scheme::Twilio => "twilio",
            Scheme::Paypal => "paypal",
            Scheme::Hmac => "hmac",
            Scheme::Token => "token",
            Scheme::Basic => "basic",
        }
    }
}

/// `verify.algorithm` for the generic `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// `verify.encoding` for the generic `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigEncoding {
    Hex,
    Base64,
}

/// One `[[destination]]`.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    pub name: DestinationName,
    /// Scheme http or https, with a host.
    pub url: http::Uri,
    /// At least one; every one names a configured source.
    pub sources: Vec<SourceName>,
    pub timeout: Duration,
    pub ordering: DeliveryOrder,
    /// 1 for strict; at least 1 for unordered.
    pub max_in_flight: usize,
    pub rate_limit: Option<RateLimit>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub forward_headers: Vec<http::HeaderName>,
    /// Signs every delivery (Standard Webhooks).
    pub signing: Option<WhsecKey>,
    pub retry: RetryPolicy,
    pub on_exhausted: OnExhausted,
    /// Resolved against the config dir; exists.
    pub ca_file: Option<PathBuf>,
    /// `event_types`, `filter` and `transform`.
    pub rules: crate::route::Rules,
}

/// `destination.ordering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    Strict,
    Unordered,
}

impl DeliveryOrder {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOrder::Strict => "strict",
            DeliveryOrder::Unordered => "unordered",
        }
    }
}

/// `destination.rate_limit`: at most `count` deliveries per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// `destination.retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub schedule: Schedule,
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

/// `retry.schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Exponential,
    Fixed,
}

/// `destination.on_exhausted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    DeadLetter,
    Block,
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the config file, when known.
    pub line: Option<usize>,
    /// Dotted path such as `destination[1].retry.initial`; empty for syntax errors.
    pub key: String,
    /// What is wrong; never contains a secret.
    pub message: String,
}

/// One line per problem: `relay.toml:12: destination[0].timeout: invalid duration ...`.
fn format_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&file.display().to_string());
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
        }
        if !p.key.is_empty() {
            out.push_str(&format!(": {}", p.key));
        }
        out.push_str(&format!(": {}", p.message));
    }
    out
}

impl fmt::Display for Problem {
    /// `line 12: key: message` (without the file; see [`ConfigError`] for the full form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl Config {
    /// Reads, parses and validates the file; all problems at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_str(&read(path)?, path)
    }

    /// Same from a string; `file` is used in messages and to resolve relative
    /// paths against its parent directory. Environment variables come from the process.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        Config::from_str_with_env(text, file, &process_env)
    }

    /// Same as [`Config::from_str`], with environment variables looked up
    /// through `env` instead of the process environment (for tests).
    pub fn from_str_with_env(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse_then(text, file, |raw| validate::validate(raw, text, file, env))
    }

    /// What is valid but probably not meant; `check` prints these and
    /// `serve` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.destinations.is_empty() {
            out.push("no [[destination]]: webhooks are stored but delivered nowhere".to_string());
        }
        if self.admin.token.is_none() {
            out.push(format!(
                "the admin API on {} has no token: any local user can read stored \
                 webhooks, pause and replay (set admin.token_env or HOOKRELAY_ADMIN_TOKEN)",
                self.admin.listen
            ));
        }
        out
    }

    /// Only the `[admin]` table, for the client commands: the file must
    /// still parse (syntax, known keys, types), but no source or destination
    /// secret is resolved, nor the TLS key read, so `status` works without
    /// the service's secrets.
    pub fn load_admin(path: &Path) -> Result<AdminAccess, ConfigError> {
        let text = read(path)?;
        parse_then(&text, path, |raw| {
            validate::admin_only(raw, &text, path, &process_env)
        })
    }

    /// Only what routing needs, for `hookrelay route --body`: no secret is
    /// resolved, so it works without the service's environment.
    pub fn load_routing(path: &Path) -> Result<RoutingConfig, ConfigError> {
        let text = read(path)?;
        parse_then(&text, path, |raw| validate::routing_only(raw, &text, path))
    }

    /// The source with this name.
    pub fn source(&self, name: &SourceName) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| &s.name == name)
    }

    /// The destination with this name.
    pub fn destination(&self, name: &DestinationName) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| &d.name == name)
    }
}

/// The config file's text.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// An environment variable of this process, lossily as UTF-8.
fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// [`parse::parse`], then `validate` on the raw tables; the problems of
/// both, in line order, become [`ConfigError::Invalid`] naming `file`.
/// Validation runs even when parsing found unknown keys or wrong types (those
/// values are left out), so one run shows every problem; what only follows
/// from a value that was left out is not reported again.
fn parse_then<T>(
    text: &str,
    file: &Path,
    validate: impl FnOnce(raw::RawConfig) -> Result<T, Vec<Problem>>,
) -> Result<T, ConfigError> {
    let invalid = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        }
    };
    let parse::Parsed {
        raw,
        mut problems,
        dropped,
    } = parse::parse(text).map_err(invalid)?;
    match validate(raw) {
        Ok(t) if problems.is_empty() => return Ok(t),
        Ok(_) => {}
        Err(more) => problems.extend(more.into_iter().filter(|p| !dropped.explains(&p.key))),
    }
    Err(invalid(problems))
}

#[cfg(test)]
mod tests;
