//! Outbound HTTP clients and one attempt. Builds, at startup, one pooled
//! keep-alive client per distinct TLS setup (shared by every destination
//! without `ca_file`, one per `ca_file`): rustls with the `ring` provider,
//! webpki and system roots, plus the destination's PEM CA. Sends one attempt
//! and classifies the answer. Redirects are never followed: a 3xx is a failure.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::reply::AppAnswer;
use super::request::build_request;
use super::retry::parse_retry_after;
use crate::config::{DestinationConfig, MAX_REPLY_BYTES};
use crate::model::Seq;
use crate::store::Message;

/// Pooled keep-alive client for `http://` and `https://` destinations.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Bytes of an error answer kept for the attempt record.
const ERROR_BODY_BYTES: usize = 256;
/// TCP connect deadline (the whole attempt is bounded by the destination's `timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the outbound clients could not be built; a startup (config) error.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("destination {dest}: cannot read ca_file {}: {source}", path.display())]
    ReadCa {
        dest: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("destination {dest}: ca_file {} holds no PEM certificate", path.display())]
    NoCertificate { dest: String, path: PathBuf },
    #[error("destination {dest}: ca_file {} has an invalid certificate: {reason}", path.display())]
    BadCertificate {
        dest: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Every client the destinations need, built once at startup.
pub struct Clients {
    shared: HttpClient,
    by_ca: HashMap<PathBuf, HttpClient>,
}

impl Clients {
    /// Builds the shared client and one per distinct `ca_file`; an unreadable
    /// or invalid `ca_file` is an error.
    pub fn build(destinations: &[DestinationConfig]) -> Result<Clients, TlsSetupError> {
        let roots = default_roots();
        let shared = new_client(roots.clone())?;
        let mut by_ca = HashMap::new();
        for d in destinations {
            let Some(path) = &d.ca_file else { continue };
            if by_ca.contains_key(path) {
                continue;
            }
            let mut roots = roots.clone();
            add_ca_file(&mut roots, d.name.as_str(), path)?;
            by_ca.insert(path.clone(), new_client(roots)?);
        }
        Ok(Clients { shared, by_ca })
    }

    /// The client for `dest` (cheap clone of a pooled client).
    pub fn for_destination(&self, dest: &DestinationConfig) -> HttpClient {
        dest.ca_file
            .as_ref()
            .and_then(|p| self.by_ca.get(p))
            .unwrap_or(&self.shared)
            .clone()
    }
}

/// webpki's roots plus whatever the system trusts (if it can be read).
fn default_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(
            errors = native.errors.len(),
            "some system root certificates could not be read"
        );
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(system_roots = added, "TLS roots loaded");
    roots
}

fn add_ca_file(roots: &mut RootCertStore, dest: &str, path: &Path) -> Result<(), TlsSetupError> {
    let file = std::fs::File::open(path).map_err(|source| TlsSetupError::ReadCa {
        dest: dest.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| TlsSetupError::BadCertificate {
        dest: dest.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsSetupError::NoCertificate {
            dest: dest.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn new_client(roots: RootCertStore) -> Result<HttpClient, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .build(connector))
}

/// How one attempt ended.
#[derive(Debug)]
pub enum AttemptResult {
    /// 2xx; with the answer when it was asked for and fits in 1 MiB.
    Delivered {
        status: u16,
        answer: Option<AppAnswer>,
    },
    /// Anything else; `retry_after` only for 429 and 503.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
}

/// Sends attempt number `attempt` of `msg` to `dest`, bounded by
/// `dest.timeout`; `keep_answer`: a provider waits for the answer (sync replies).
pub async fn attempt(
    client: &HttpClient,
    dest: &DestinationConfig,
    seq: Seq,
    msg: &Message,
    (attempt, keep_answer): (u32, bool),
) -> (AttemptResult, Duration) {
    let started = Instant::now();
    // Built per attempt: a fresh webhook-timestamp and signature every time.
    let result = match build_request(dest, seq, msg, attempt, crate::time::now_secs()) {
        Ok(req) => match tokio::time::timeout(dest.timeout, send(client, req, keep_answer)).await {
            Ok(r) => r,
            Err(_) => AttemptResult::Failed {
                status: None,
                retry_after: None,
                error: format!("timed out after {:?}", dest.timeout),
            },
        },
        Err(e) => AttemptResult::Failed {
            status: None,
            retry_after: None,
            error: e.to_string(),
        },
    };
    (result, started.elapsed())
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>, keep_answer: bool) -> AttemptResult {
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            return AttemptResult::Failed {
                status: None,
                retry_after: None,
                error: error_chain(&e),
            }
        }
    };
    let status = resp.status();
    let retry_after =
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let content_encoding = resp.headers().get(header::CONTENT_ENCODING).cloned();
    // Read (a bounded part of) the body so the connection can go back to the pool.
    let limit = if keep_answer && status.is_success() {
        MAX_REPLY_BYTES
    } else {
        64 * 1024
    };
    let body = Limited::new(resp.into_body(), limit).collect().await;
    if status.is_success() {
        // Too large or cut off: delivered all the same, but the provider
        // gets the fallback rather than part of an answer.
        let answer = match body {
            Ok(b) if keep_answer => Some(AppAnswer {
                status,
                content_type,
                content_encoding,
                body: b.to_bytes(),
            }),
            _ => None,
        };
        return AttemptResult::Delivered {
            status: status.as_u16(),
            answer,
        };
    }
    let snippet = body
        .map(|b| {
            let b = b.to_bytes();
            String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_BYTES)]).into_owned()
        })
        .unwrap_or_default();
    let redirect = if status.is_redirection() {
        " (redirects are not followed)"
    } else {
        ""
    };
    AttemptResult::Failed {
        status: Some(status.as_u16()),
        retry_after,
        error: if snippet.trim().is_empty() {
            format!("HTTP {}{redirect}", status.as_u16())
        } else {
            format!("HTTP {}{redirect}: {}", status.as_u16(), snippet.trim())
        },
    }
}

/// An error with its sources, e.g. `client error (Connect): invalid peer certificate: UnknownIssuer`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(ca: Option<PathBuf>) -> DestinationConfig {
        let text = r#"
[[source]]
name = "s"
path = "/s"
[[destination]]
name = "d"
url = "https://127.0.0.1:1/"
sources = ["s"]
"#;
        let mut cfg = crate::config::Config::from_str(text, Path::new("relay.toml")).unwrap();
        let mut d = cfg.destinations.remove(0);
        d.ca_file = ca;
        d
    }

    #[test]
    fn a_ca_file_without_certificates_or_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Clients::build(&[dest(Some(empty))]).err().unwrap();
        assert!(matches!(err, TlsSetupError::NoCertificate { .. }), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = Clients::build(&[dest(Some(missing))]).err().unwrap();
        assert!(matches!(err, TlsSetupError::ReadCa { .. }), "{err}");
        assert!(err.to_string().contains("destination d"), "{err}");
    }

    #[test]
    fn a_bad_pem_block_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = Clients::build(&[dest(Some(bad))]).err().unwrap();
        assert!(matches!(err, TlsSetupError::BadCertificate { .. }), "{err}");
    }

    #[test]
    fn destinations_share_the_default_client() {
        let clients = Clients::build(&[dest(None), dest(None)]).unwrap();
        assert!(clients.by_ca.is_empty());
    }
}
