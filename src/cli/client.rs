//! Client commands (`status`, `pause`, `resume`, `replay`, `tail`, ...): talk
//! to the running relay's admin API, found through the same config file, and
//! print the answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::AdminAccess;

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
}

impl ClientError {
    /// 2 when the request itself was wrong (unknown destination, bad token), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused { status, .. } if status.is_client_error() => 2,
            _ => 1,
        }
    }
}

/// Where and how to reach the admin API.
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
}

impl AdminClient {
    /// From the config: a wildcard listen address is reached on loopback.
    pub fn from_config(admin: &AdminAccess) -> AdminClient {
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
        AdminClient { addr, token }
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: self.addr,
            reason,
        };
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(root_cause(&e)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::BadAnswer(String::from_utf8_lossy(&bytes).into_owned()))?;
        if !status.is_success() {
            let message = json["error"].as_str().unwrap_or("").to_owned();
            return Err(ClientError::Refused { status, message });
        }
        Ok(json)
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
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = Request::builder()
            .uri(format!("http://{}{}", self.addr, path))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: self.addr,
            reason,
        };
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(root_cause(&e)))?;
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
