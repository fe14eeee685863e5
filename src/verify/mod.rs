//! Inbound verification: decides whether an inbound request is authentic under
//! its source's `verify` scheme, and what its idempotency key is; answers the
//! providers' handshakes (Slack `url_verification`, Discord PING, Meta's
//! subscription GET) itself.
//!
//! A [`Verifier`] is built once per source at startup (keys decoded, PayPal
//! certificate loaded; failures there are startup errors). Per request it sees
//! only method, URI, headers, raw body bytes and the clock passed in, and
//! returns a [`Verdict`]. A [`Verified`] can only be made here, so only an
//! authentic request can reach the appender.
//!
//! It must not touch storage, delivery or the network, never panics on any
//! header or body, compares every secret and MAC in constant time, and never
//! puts a secret or a signature into an error.

mod common;
mod discord;
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

use crate::config::{Scheme, Secret, SourceConfig};

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

/// A source whose verifier cannot be built (a config problem found at startup).
#[derive(Debug, thiserror::Error)]
#[error("source {name}: verify: {message}")]
pub struct SetupError {
    pub name: String,
    /// Names files and keys, never secret values.
    pub message: String,
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
    /// Builds the verifier for `source`: decodes keys and loads files once.
    pub fn new(source: &SourceConfig) -> Result<Verifier, SetupError> {
        let v = &source.verify;
        let fail = |message: String| SetupError {
            name: source.name.to_string(),
            message,
        };
        let keys = raw_keys(&v.secrets);
        let check: Box<dyn Check> = match v.scheme {
            Scheme::None => Box::new(Nothing),
            Scheme::Standard => {
                Box::new(standard::Standard::new(&v.secrets, v.tolerance).map_err(fail)?)
            }
            Scheme::Stripe => Box::new(stripe::Stripe::new(keys, v.tolerance)),
            Scheme::Github => Box::new(hub::Github::new(keys)),
            Scheme::Meta => {
                let token = v
                    .verify_token
                    .as_ref()
                    .ok_or_else(|| fail("`verify_token` is required".into()))?;
                Box::new(hub::Meta::new(keys, token.expose().to_vec()))
            }
            Scheme::Shopify => Box::new(shopify::Shopify::new(keys)),
            Scheme::Slack => Box::new(slack::Slack::new(keys, v.tolerance)),
            Scheme::Discord => {
                let key = v
                    .public_key
                    .as_deref()
                    .ok_or_else(|| fail("`public_key` is required".into()))?;
                Box::new(discord::Discord::new(key, v.tolerance).map_err(fail)?)
            }
            Scheme::Twilio => {
                let url = v
                    .public_url
                    .as_deref()
                    .ok_or_else(|| fail("`public_url` is required".into()))?;
                Box::new(twilio::Twilio::new(keys, url).map_err(fail)?)
            }
            Scheme::Paypal => {
                let (Some(cert), Some(id)) = (v.cert_file.as_deref(), v.webhook_id.as_deref())
                else {
                    return Err(fail("`cert_file` and `webhook_id` are required".into()));
                };
                Box::new(paypal::Paypal::new(cert, id, v.tolerance).map_err(fail)?)
            }
            Scheme::Hmac => {
                let header = v
                    .header
                    .clone()
                    .ok_or_else(|| fail("`header` is required".into()))?;
                Box::new(generic::HmacHeader::new(
                    keys,
                    header,
                    v.algorithm,
                    v.encoding,
                    v.prefix.clone(),
                ))
            }
            Scheme::Token => Box::new(generic::Token::new(keys, v.header.clone())),
            Scheme::Basic => {
                let user = v
                    .username
                    .as_deref()
                    .ok_or_else(|| fail("`username` is required".into()))?;
                Box::new(generic::Basic::new(keys, user))
            }
        };
        if v.scheme != Scheme::None
            && !matches!(v.scheme, Scheme::Discord | Scheme::Paypal)
            && v.secrets.is_empty()
        {
            return Err(fail("no secret configured".into()));
        }
        let credential_header = match v.scheme {
            Scheme::Token => Some(v.header.clone().unwrap_or(http::header::AUTHORIZATION)),
            Scheme::Basic => Some(http::header::AUTHORIZATION),
            _ => None,
        };
        Ok(Verifier {
            scheme: v.scheme,
            check,
            dedup_header: source.dedup_header.clone(),
            credential_header,
        })
    }

    /// The configured scheme.
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

/// Secrets as raw bytes (every scheme but `standard` uses them as written).
fn raw_keys(secrets: &[Secret]) -> Vec<Vec<u8>> {
    secrets.iter().map(|s| s.expose().to_vec()).collect()
}
