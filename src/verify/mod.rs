//! Inbound verification: decides whether an inbound request is authentic under
//! its source's `verify` scheme, and what its idempotency key is; answers the
//! providers' handshakes (Slack `url_verification`, Discord PING, Meta's
//! subscription GET) itself.
//!
//! A [`Verifier`] is built once per source at startup from the source's
//! [`VerifySpec`], whose keys the config already decoded, so building one
//! cannot fail. Per request it sees
//! only method, URI, headers, raw body bytes and the clock passed in, and
//! returns a [`Verdict`]. A [`Verified`] can only be made here, so only an
//! authentic request can reach the appender.
//!
//! It must not touch storage, delivery or the network, never panics on any
//! header or body, compares every secret and MAC in constant time, and never
//! puts a secret or a signature into an error.

mod common;
mod discord;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod generic;
mod hub;
mod paypal;
mod shopify;
mod slack;
mod standard;
mod stripe;
mod twilio;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};

use crate::config::{Scheme, Secret, SourceConfig, VerifySpec};

/// The parts of an inbound request verification looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// What to do with a request that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic: store it.
    Accept(Verified),
    /// A provider handshake: answer this and store nothing.
    Respond(Reply),
}

/// Proof that a request verified, with its idempotency key. Only this module
/// can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    idempotency_key: Option<String>,
}

impl Verified {
    /// The key under which duplicates are recognized, if the request has one.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// Same, by value.
    pub fn into_idempotency_key(self) -> Option<String> {
        self.idempotency_key
    }
}

/// An answer the relay gives itself (handshakes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    fn json(value: &serde_json::Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }
}

/// Why a request is not authentic. Messages name at most a header, never a
/// secret, a signature or anything else taken from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed header {0}")]
    MalformedHeader(String),
    #[error("signature does not match")]
    BadSignature,
    #[error("credentials do not match")]
    BadCredentials,
    #[error("timestamp outside the allowed tolerance")]
    StaleTimestamp,
    #[error("subscription verification failed")]
    HandshakeRefused,
}

impl VerifyError {
    /// One value of every kind (for tests that must cover them all).
    #[cfg(test)]
    pub(crate) fn every_kind() -> [VerifyError; 6] {
        [
            VerifyError::MissingHeader("h".into()),
            VerifyError::MalformedHeader("h".into()),
            VerifyError::BadSignature,
            VerifyError::BadCredentials,
            VerifyError::StaleTimestamp,
            VerifyError::HandshakeRefused,
        ]
    }

    /// Short fixed reason, for the JSON answer, logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::BadCredentials => "bad_credentials",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::HandshakeRefused => "bad_handshake",
        }
    }

    fn malformed(name: &str) -> VerifyError {
        VerifyError::MalformedHeader(name.to_owned())
    }
}

/// What a scheme found: an authentic request (with the provider's delivery id,
/// if it has one) or a handshake answer.
enum Passed {
    Authentic { provider_key: Option<String> },
    Answer(Reply),
}

/// The one interface every scheme implements.
trait Check: Send + Sync {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError>;
}

/// `scheme = "none"`.
struct Nothing;

impl Check for Nothing {
    fn check(&self, _: &Inbound<'_>, _: u64) -> Result<Passed, VerifyError> {
        Ok(Passed::Authentic { provider_key: None })
    }
}

/// One source's verification, ready to use.
pub struct Verifier {
    scheme: Scheme,
    check: Box<dyn Check>,
    dedup_header: Option<HeaderName>,
    credential_header: Option<HeaderName>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier for `source`; its keys were decoded when the config loaded.
    pub fn new(source: &SourceConfig) -> Verifier {
        let raw = |secrets: &[Secret]| -> Vec<Vec<u8>> {
            secrets.iter().map(|s| s.expose().to_vec()).collect()
        };
        let check: Box<dyn Check> = match &source.verify {
            VerifySpec::None => Box::new(Nothing),
            VerifySpec::Standard { keys, tolerance } => {
                Box::new(standard::Standard::new(keys.clone(), *tolerance))
            }
            VerifySpec::Stripe { secrets, tolerance } => {
                Box::new(stripe::Stripe::new(raw(secrets), *tolerance))
            }
            VerifySpec::Github { secrets } => Box::new(hub::Github::new(raw(secrets))),
            VerifySpec::Meta {
                secrets,
                verify_token,
            } => Box::new(hub::Meta::new(raw(secrets), verify_token.expose().to_vec())),
            VerifySpec::Shopify { secrets } => Box::new(shopify::Shopify::new(raw(secrets))),
            VerifySpec::Slack { secrets, tolerance } => {
                Box::new(slack::Slack::new(raw(secrets), *tolerance))
            }
            VerifySpec::Discord {
                public_key,
                tolerance,
            } => Box::new(discord::Discord::new(*public_key, *tolerance)),
            VerifySpec::Twilio {
                secrets,
                public_url,
            } => Box::new(twilio::Twilio::new(raw(secrets), public_url)),
            VerifySpec::Paypal {
                public_key,
                webhook_id,
                tolerance,
            } => Box::new(paypal::Paypal::new(
                public_key.clone(),
                webhook_id,
                *tolerance,
            )),
            VerifySpec::Hmac {
                secrets,
                header,
                algorithm,
                encoding,
                prefix,
            } => Box::new(generic::HmacHeader::new(
                raw(secrets),
                header.clone(),
                *algorithm,
                *encoding,
                prefix.clone(),
            )),
            VerifySpec::Token { secrets, header } => {
                Box::new(generic::Token::new(raw(secrets), header.clone()))
            }
            VerifySpec::Basic {
                passwords,
                username,
            } => Box::new(generic::Basic::new(raw(passwords), username)),
        };
        let credential_header = match &source.verify {
            VerifySpec::Token { header, .. } => {
                Some(header.clone().unwrap_or(http::header::AUTHORIZATION))
            }
            VerifySpec::Basic { .. } => Some(http::header::AUTHORIZATION),
            _ => None,
        };
        Verifier {
            scheme: source.verify.scheme(),
            check,
            dedup_header: source.dedup_header.clone(),
            credential_header,
        }
    }

    /// The configured scheme.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether this source answers `GET` (Meta's subscription handshake);
    /// everything else takes `POST` only.
    pub fn answers_get(&self) -> bool {
        self.scheme == Scheme::Meta
    }

    /// The header that carries the credential itself (the shared token of
    /// `token`, `Authorization` of `basic`), which must never be stored.
    pub fn credential_header(&self) -> Option<&HeaderName> {
        self.credential_header.as_ref()
    }

    /// The `WWW-Authenticate` value a `401` carries, for the schemes that
    /// are HTTP authentication schemes (`basic`, `token` as bearer).
    pub fn challenge(&self) -> Option<&'static str> {
        match (self.scheme, &self.credential_header) {
            (Scheme::Basic, _) => Some("Basic realm=\"hookrelay\", charset=\"UTF-8\""),
            (Scheme::Token, Some(h)) if h == http::header::AUTHORIZATION => Some("Bearer"),
            _ => None,
        }
    }

    /// Decides about one request. `now_unix_secs` is the clock for replay
    /// protection (a parameter so tests can use the vendors' old vectors).
    pub fn verify(&self, req: &Inbound<'_>, now_unix_secs: u64) -> Result<Verdict, VerifyError> {
        match self.check.check(req, now_unix_secs)? {
            Passed::Answer(reply) => Ok(Verdict::Respond(reply)),
            Passed::Authentic { provider_key } => {
                let idempotency_key = provider_key.or_else(|| {
                    self.dedup_header
                        .as_ref()
                        .and_then(|h| common::key_from_header(req.headers, h.as_str()))
                });
                Ok(Verdict::Accept(Verified { idempotency_key }))
            }
        }
    }
}
