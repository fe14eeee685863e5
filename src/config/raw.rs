//! relay.toml as written: every key optional and spanned, so validation can
//! report all problems with their lines. Nothing here applies defaults.
//!
//! Unknown keys are not refused here (serde would stop at the first one):
//! [`super::parse`] walks the document against [`fields`] of these structs and
//! reports every key none of them takes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::units::RawSize;
use super::{DeliveryOrder, Durability, HmacAlgorithm, OnExhausted, Schedule, Scheme, SigEncoding};

pub(super) type Text = Option<Spanned<String>>;
pub(super) type TextList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawConfig {
    pub server: Option<Spanned<RawServer>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub storage: Option<Spanned<RawStorage>>,
    #[serde(default)]
    pub source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub destination: Vec<Spanned<RawDestination>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawServer {
    pub listen: Text,
    pub max_body_bytes: Option<Spanned<RawSize>>,
    pub request_timeout: Text,
    pub tls_cert_file: Text,
    pub tls_key_file: Text,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawAdmin {
    pub listen: Text,
    pub token: Text,
    pub token_env: Text,
    pub token_file: Text,
    pub tls_cert_file: Text,
    pub tls_key_file: Text,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawStorage {
    pub data_dir: Text,
    pub durability: Option<Spanned<Durability>>,
    pub retention: Text,
    pub max_disk_bytes: Option<Spanned<RawSize>>,
    pub min_free_bytes: Option<Spanned<RawSize>>,
    pub backend: Option<Spanned<StorageBackend>>,
    pub nats: Option<Spanned<RawNats>>,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StorageBackend {
    Sled,
    Nats,
}

/// `storage.nats`: a JetStream cluster the fleet shares.
#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawNats {
    /// One server URL or a list of them.
    pub url: Option<Spanned<OneOrMany>>,
    pub stream: Text,
    pub replicas: Option<Spanned<i64>>,
    pub ack_wait: Text,
    pub token: Text,
    pub token_env: Text,
    pub token_file: Text,
    pub user: Text,
    pub password: Text,
    pub password_env: Text,
    pub password_file: Text,
    pub credentials_file: Text,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawSource {
    pub name: Text,
    pub path: Text,
    pub verify: Option<Spanned<RawVerify>>,
    pub dedup_window: Text,
    pub dedup_header: Text,
    pub event_type: Text,
    pub reply: Option<Spanned<RawReply>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawReply {
    pub destination: Text,
    pub timeout: Text,
    pub status: Option<Spanned<i64>>,
    pub content_type: Text,
    pub body: Text,
}

#[derive(Default, Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawVerify {
    pub scheme: Option<Spanned<Scheme>>,
    pub secret: Text,
    pub secrets: TextList,
    pub secret_env: Text,
    pub secrets_env: TextList,
    pub secret_file: Text,
    pub tolerance: Text,
    pub header: Text,
    pub algorithm: Option<Spanned<HmacAlgorithm>>,
    pub encoding: Option<Spanned<SigEncoding>>,
    pub prefix: Text,
    pub verify_token: Text,
    pub verify_token_env: Text,
    pub verify_token_file: Text,
    pub public_key: Text,
    pub public_url: Text,
    pub cert_file: Text,
    pub webhook_id: Text,
    pub username: Text,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawDestination {
    pub name: Text,
    pub url: Text,
    pub sources: TextList,
    pub timeout: Text,
    pub ordering: Option<Spanned<DeliveryOrder>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub rate_limit: Text,
    pub headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub forward_headers: TextList,
    pub signing: Option<Spanned<RawSigning>>,
    pub retry: Option<Spanned<RawRetry>>,
    pub on_exhausted: Option<Spanned<OnExhausted>>,
    pub ca_file: Text,
    pub event_types: TextList,
    pub filter: Text,
    pub transform: Text,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawSigning {
    pub secret: Text,
    pub secrets: TextList,
    pub secret_env: Text,
    pub secrets_env: TextList,
    pub secret_file: Text,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub(super) struct RawRetry {
    pub schedule: Option<Spanned<Schedule>>,
    pub initial: Text,
    pub max_interval: Text,
    pub max_attempts: Option<Spanned<i64>>,
    pub max_age: Text,
}

/// The keys a raw table takes: the field names serde derives for `T`, read
/// from its `Deserialize` impl so that the structs above stay the one list.
pub(super) fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Ok(_) => &[],
        Err(Found(names)) => names,
    }
}

/// A deserializer that only records the field names a struct asks for.
struct FieldNames;

/// What [`FieldNames`] found (nothing for a type that is not a struct).
#[derive(Debug)]
struct Found(&'static [&'static str]);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names only")
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Found(&[])
    }
}

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
