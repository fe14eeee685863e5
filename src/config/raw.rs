//! relay.toml as written: every key optional and spanned, so validation can
//! report all problems with their lines. Nothing here applies defaults.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::units::RawSize;
use super::{DeliveryOrder, Durability, HmacAlgorithm, OnExhausted, Schedule, Scheme, SigEncoding};

pub(super) type Text = Option<Spanned<String>>;
pub(super) type TextList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
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
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawServer {
    pub listen: Text,
    pub max_body_bytes: Option<Spanned<RawSize>>,
    pub request_timeout: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAdmin {
    pub listen: Text,
    pub token: Text,
    pub token_env: Text,
    pub token_file: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawStorage {
    pub data_dir: Text,
    pub durability: Option<Spanned<Durability>>,
    pub retention: Text,
    pub max_disk_bytes: Option<Spanned<RawSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSource {
    pub name: Text,
    pub path: Text,
    pub verify: Option<Spanned<RawVerify>>,
    pub dedup_window: Text,
    pub dedup_header: Text,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
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
#[serde(deny_unknown_fields, expecting = "a table")]
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSigning {
    pub secret: Text,
    pub secrets: TextList,
    pub secret_env: Text,
    pub secrets_env: TextList,
    pub secret_file: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRetry {
    pub schedule: Option<Spanned<Schedule>>,
    pub initial: Text,
    pub max_interval: Text,
    pub max_attempts: Option<Spanned<i64>>,
    pub max_age: Text,
}
