//! Client commands (`status`, `pause`, `resume`, `replay`, `tail`, ...): talk
//! to the running relay's admin API, found through the same config file, and
//! print the answer. With `[admin] tls_cert_file` they speak HTTPS and trust
//! exactly the certificate in that file (pinned): the admin API is reached on
//! its listen address (often loopback), which the certificate need not name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::config::AdminAccess;

/// How long an admin call may take (a fleet replay's drain included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a client command failed; [`ClientError::exit_code`] maps it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the hookrelay admin API at {addr}: {reason} (is the relay running?)")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the relay refused: {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from the relay: {0}")]
    BadAnswer(String),
    #[error("the relay closed the stream (did it stop?)")]
    Closed,
    #[error("cannot use admin.tls_cert_file {}: {reason}", path.display())]
    TlsCert { path: PathBuf, reason: String },
    #[error(
        "the hookrelay admin API at {addr} serves a certificate other than the one in {} \
         (was the file replaced without reloading the relay?)",
        path.display()
    )]
    WrongCertificate { addr: SocketAddr, path: PathBuf },
}

impl ClientError {
    /// 2 when the request itself was wrong (unknown destination, bad token)
    /// or the config is (an unusable `tls_cert_file`), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused { status, .. } if status.is_client_error() => 2,
            ClientError::TlsCert { .. } => 2,
            _ => 1,
        }
    }
}

/// The HTTP(S) client of one command.
type AdminHttp = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and how to reach the admin API.
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
    /// With `admin.tls_cert_file`: the pinned certificate, and the file it came from.
    tls: Option<(Arc<PinnedCert>, PathBuf)>,
    http: AdminHttp,
}

impl AdminClient {
    /// From the config: a wildcard listen address is reached on loopback.
    /// With `tls_cert_file`, reads its leaf certificate to pin it.
    pub fn from_config(admin: &AdminAccess) -> Result<AdminClient, ClientError> {
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let token = admin
            .token
            .as_ref()
            .map(|t| String::from_utf8_lossy(t.expose()).into_owned());
        let tls = match &admin.tls_cert_file {
            Some(path) => Some((Arc::new(PinnedCert::from_file(path)?), path.clone())),
            None => None,
        };
        let tls_error = |e: rustls::Error| ClientError::TlsCert {
            path: admin.tls_cert_file.clone().unwrap_or_default(),
            reason: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let tls_config = match &tls {
            Some((pin, _)) => builder
                .dangerous()
                .with_custom_certificate_verifier(pin.clone())
                .with_no_client_auth(),
            // Never used: without TLS every URL is http://.
            None => builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(AdminClient {
            addr,
            token,
            tls,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// A failed request, told apart when the certificate was not the pinned one.
    fn unreachable(&self, reason: String) -> ClientError {
        match &self.tls {
            Some((pin, path)) if pin.refused.load(Ordering::Relaxed) => {
                ClientError::WrongCertificate {
                    addr: self.addr,
                    path: path.clone(),
                }
            }
            _ => ClientError::Unreachable {
                addr: self.addr,
                reason,
            },
        }
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let (status, json) = self.send(method, path, body).await?;
        if !status.is_success() {
            let message = json["error"].as_str().unwrap_or("").to_owned();
            return Err(ClientError::Refused { status, message });
        }
        Ok(json)
    }

    /// Calls `method path`; the status and JSON answer, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        // A fleet's replay waits for in-flight deliveries (up to the
        // destination's timeout) before it answers.
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| self.unreachable("timed out".into()))?
            .map_err(|e| self.unreachable(root_cause(&e)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::BadAnswer(String::from_utf8_lossy(&bytes).into_owned()))?;
        Ok((status, json))
    }
}

/// What one Server-Sent Event of the message stream carried.
pub enum StreamEvent {
    /// The stream is open: messages after this seq follow.
    Opened(String),
    /// One stored message, as JSON.
    Message(Value),
}

impl AdminClient {
    /// Follows `GET path` (Server-Sent Events), calling `on_event` for the
    /// opening comment and for each message, until the relay closes it.
    pub async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(StreamEvent),
    ) -> Result<(), ClientError> {
        let mut req = Request::builder()
            .uri(self.url(path))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| self.unreachable("timed out".into()))?
            .map_err(|e| self.unreachable(root_cause(&e)))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let json: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = json["error"].as_str().unwrap_or("").to_owned();
            return Err(ClientError::Refused { status, message });
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ClientError::Closed)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&block))? {
                    on_event(event);
                }
            }
        }
        Err(ClientError::Closed)
    }
}

/// Trusts exactly one certificate: the leaf of `admin.tls_cert_file`, the
/// one the relay serves. The handshake's signature is still checked, so
/// only a holder of that certificate's key gets through. The server name is
/// not checked: the client dials the listen address, which an operator's
/// certificate (for a DNS name) rarely lists.
#[derive(Debug)]
struct PinnedCert {
    leaf: CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    /// Set when the relay presented another certificate, for a clear error.
    refused: AtomicBool,
}

impl PinnedCert {
    fn from_file(path: &Path) -> Result<PinnedCert, ClientError> {
        let bad = |reason: String| ClientError::TlsCert {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let chain = crate::keys::cert_chain_of_pem(&pem).map_err(|e| bad(e.to_string()))?;
        let leaf = chain
            .into_iter()
            .next()
            .ok_or_else(|| bad("holds no PEM certificate".into()))?;
        Ok(PinnedCert {
            leaf,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            refused: AtomicBool::new(false),
        })
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            self.refused.store(true, Ordering::Relaxed);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One event block: its `data:` lines as JSON, or the opening comment.
fn parse_event(block: &str) -> Result<Option<StreamEvent>, ClientError> {
    let mut data = String::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(": hookrelay stream ") {
            return Ok(Some(StreamEvent::Opened(comment.to_owned())));
        }
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&data)
        .map(|v| Some(StreamEvent::Message(v)))
        .map_err(|e| ClientError::BadAnswer(format!("stream event: {e}")))
}

/// `hookrelay reload`: what changed.
pub fn reload_text(v: &Value) -> String {
    let list = |k: &str| -> String {
        let names: Vec<&str> = v[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let mut text = format!(
        "reloaded: added {}; removed {}; changed {}",
        list("added"),
        list("removed"),
        list("changed")
    );
    if v["restart_needed"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        text.push_str(&format!(
            "\nneeds a restart to take effect (the running value stays): {}",
            list("restart_needed")
        ));
    }
    text
}

/// `hookrelay route`: `deliver` and the body, `skip`, or `error: reason`.
pub fn route_text(v: &Value) -> String {
    match v["decision"].as_str() {
        Some("deliver") => format!("deliver\n{}", v["body"].as_str().unwrap_or("")),
        Some("skip") => "skip".to_owned(),
        _ => format!("error: {}", v["reason"].as_str().unwrap_or("unknown")),
    }
}

/// `hookrelay tail`: seq, time, source, event type and size of a message.
pub fn tail_line(m: &Value) -> String {
    let text = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
    format!(
        "{}  {}  {}  {}  {} bytes",
        m["seq"],
        text("received_at"),
        text("source"),
        text("event_type"),
        m["body_bytes"]
    )
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One table row per destination: name, state, cursor, head, lag, dead letters, last error.
pub fn status_table(destinations: &Value) -> String {
    let mut rows = vec![[
        "DESTINATION".to_owned(),
        "STATE".to_owned(),
        "CURSOR".to_owned(),
        "HEAD".to_owned(),
        "LAG".to_owned(),
        "DEAD".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for d in destinations.as_array().into_iter().flatten() {
        let field = |k: &str| match &d[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            v => v.to_string(),
        };
        let last_error = d["last_attempt"]["error"]
            .as_str()
            .map(|e| e.chars().take(60).collect())
            .unwrap_or_else(|| "-".to_owned());
        rows.push([
            field("name"),
            field("state"),
            field("cursor"),
            field("head"),
            field("lag"),
            field("dead_letters"),
            last_error,
        ]);
    }
    aligned(&rows)
}

/// `hookrelay dead-letters`: one row per dead letter, oldest first.
pub fn dead_letter_table(dead: &Value) -> String {
    let mut rows = vec![["SEQ", "AT", "ATTEMPTS", "LAST ERROR"].map(str::to_owned)];
    for d in dead.as_array().into_iter().flatten() {
        let text = |k: &str| match &d[k] {
            Value::String(s) => s.chars().take(80).collect(),
            Value::Null => "-".to_owned(),
            v => v.to_string(),
        };
        rows.push([
            text("seq"),
            text("at"),
            text("attempts"),
            text("last_error"),
        ]);
    }
    aligned(&rows)
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_has_one_aligned_row_per_destination() {
        let v = serde_json::json!([
            {"name": "billing", "state": "active", "cursor": 10, "head": 12, "lag": 2, "dead_letters": 0, "last_attempt": null},
            {"name": "crm", "state": "retrying", "cursor": 3, "head": 12, "lag": 9, "dead_letters": 1,
             "last_attempt": {"error": "HTTP 503"}}
        ]);
        let t = status_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("DESTINATION  STATE"));
        assert!(lines[2].contains("retrying") && lines[2].ends_with("HTTP 503"));
    }
}
