//! Outbound HTTP: builds the delivery request (body byte for byte, relay and
//! forwarded headers, optional signature) and performs one attempt.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use super::retry::parse_retry_after;
use crate::config::DestinationConfig;
use crate::model::Seq;
use crate::store::Message;

/// Pooled keep-alive client shared by all workers.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Provider event and delivery-id headers that are always forwarded.
pub const DEFAULT_FORWARD: &[&str] = &[
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-shopify-topic",
    "x-shopify-event-id",
    "x-shopify-webhook-id",
    "x-shopify-shop-domain",
    "stripe-signature",
    "x-slack-request-timestamp",
    "x-gitlab-event",
    "user-agent",
];

/// Headers that only ever describe one hop and never pass.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// Bytes of an error answer kept for the attempt record.
const ERROR_BODY_BYTES: usize = 256;

/// Builds the shared client.
pub fn new_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .build(connector)
}

/// How one attempt ended.
#[derive(Debug)]
pub enum AttemptResult {
    /// 2xx.
    Delivered { status: u16 },
    /// Anything else; `retry_after` only for 429 and 503.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
}

/// Sends attempt number `attempt` of `msg` to `dest`, bounded by `dest.timeout`.
pub async fn attempt(
    client: &HttpClient,
    dest: &DestinationConfig,
    seq: Seq,
    msg: &Message,
    attempt: u32,
) -> (AttemptResult, Duration) {
    let started = Instant::now();
    let result = match build_request(dest, seq, msg, attempt, crate::time::now_secs()) {
        Ok(req) => match tokio::time::timeout(dest.timeout, send(client, req)).await {
            Ok(r) => r,
            Err(_) => AttemptResult::Failed {
                status: None,
                retry_after: None,
                error: format!("timed out after {:?}", dest.timeout),
            },
        },
        Err(error) => AttemptResult::Failed {
            status: None,
            retry_after: None,
            error,
        },
    };
    (result, started.elapsed())
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> AttemptResult {
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
    // Read (a bounded part of) the body so the connection can go back to the pool.
    let body = Limited::new(resp.into_body(), 64 * 1024).collect().await;
    if status.is_success() {
        return AttemptResult::Delivered {
            status: status.as_u16(),
        };
    }
    let snippet = body
        .map(|b| {
            let b = b.to_bytes();
            String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_BYTES)]).into_owned()
        })
        .unwrap_or_default();
    AttemptResult::Failed {
        status: Some(status.as_u16()),
        retry_after,
        error: if snippet.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {}", status.as_u16(), snippet.trim())
        },
    }
}

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

/// The outbound request for one attempt.
pub fn build_request(
    dest: &DestinationConfig,
    seq: Seq,
    msg: &Message,
    attempt: u32,
    now_secs: u64,
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::new(Full::new(Bytes::copy_from_slice(&msg.body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = dest.url.clone();
    let h = req.headers_mut();

    for (name, value) in &msg.headers {
        let forwarded = DEFAULT_FORWARD.contains(&name.as_str())
            || dest.forward_headers.iter().any(|f| f.as_str() == name);
        if !forwarded || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    for (name, value) in &dest.headers {
        h.insert(name.clone(), value.clone());
    }
    if let Some(ct) = msg
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(header::CONTENT_TYPE, ct);
    }
    let id = msg.id.as_str();
    let ts = now_secs.to_string();
    let relay_headers = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.clone()),
        ("x-hookrelay-source", msg.source.to_string()),
        ("x-hookrelay-seq", seq.to_string()),
        ("x-hookrelay-attempt", attempt.to_string()),
    ];
    for (name, value) in relay_headers {
        let v = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
        h.insert(HeaderName::from_static(name), v);
    }
    if let Some(secret) = &dest.signing {
        let sig = sign(secret.expose(), id, &ts, &msg.body)?;
        let v = HeaderValue::from_str(&sig).map_err(|e| e.to_string())?;
        h.insert(HeaderName::from_static("webhook-signature"), v);
    }
    // Strip anything a forwarded `Connection` header could have named.
    h.remove(header::CONNECTION);
    Ok(req)
}

/// Standard Webhooks signature `v1,<base64>` over `id.timestamp.body` with a `whsec_` secret.
pub fn sign(secret: &[u8], id: &str, ts: &str, body: &[u8]) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    let key = b64
        .decode(encoded)
        .map_err(|_| "signing secret is not whsec_<base64>".to_string())?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "bad signing key".to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", b64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard Webhooks spec test vector (SIGNATURES.md section 1.6).
    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        let sig = sign(
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
