//! The outbound request of one attempt: the stored body byte for byte, its
//! content type, the forwarded inbound headers (the provider defaults plus
//! `forward_headers`, never hop-by-hop ones), the destination's `headers`,
//! and the relay's own headers, which always win; plus the Standard Webhooks
//! signature, computed afresh for every attempt.

use bytes::Bytes;
use http::header::InvalidHeaderValue;
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::config::DestinationConfig;
use crate::model::Seq;
use crate::store::Message;

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

/// Whether the stored inbound header `name` (lowercase) goes to `dest`.
pub fn forwarded(dest: &DestinationConfig, name: &str) -> bool {
    let listed =
        DEFAULT_FORWARD.contains(&name) || dest.forward_headers.iter().any(|f| f.as_str() == name);
    listed && !crate::model::is_reserved_header(name)
}

/// A request that cannot be built from a stored message (values that
/// validation at ingest should have kept out).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot send header {name}: {source}")]
    Header {
        name: &'static str,
        source: InvalidHeaderValue,
    },
    #[error("stored query string does not make a valid URL: {0}")]
    Query(#[from] http::uri::InvalidUri),
}

/// `url` with the inbound `query` appended to any query it already has.
fn with_query(url: &Uri, query: Option<&str>) -> Result<Uri, RequestError> {
    let Some(query) = query else {
        return Ok(url.clone());
    };
    let sep = if url.query().is_some() { '&' } else { '?' };
    Ok(format!("{url}{sep}{query}").parse()?)
}

/// The outbound request for attempt `attempt` made at `now_secs`.
pub fn build_request(
    dest: &DestinationConfig,
    seq: Seq,
    msg: &Message,
    attempt: u32,
    now_secs: u64,
) -> Result<Request<Full<Bytes>>, RequestError> {
    let mut req = Request::new(Full::new(Bytes::copy_from_slice(&msg.body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = with_query(&dest.url, msg.query.as_deref())?;
    let h = req.headers_mut();

    for (name, value) in &msg.headers {
        if !forwarded(dest, name) {
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
    let signature = dest
        .signing
        .as_ref()
        .map(|key| ("webhook-signature", key.sign(id, &ts, &msg.body)));
    for (name, value) in relay_headers.into_iter().chain(signature) {
        let v = HeaderValue::from_str(&value)
            .map_err(|source| RequestError::Header { name, source })?;
        h.insert(HeaderName::from_static(name), v);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageId;
    use std::path::Path;

    fn dest() -> DestinationConfig {
        let text = r#"
[[source]]
name = "s"
path = "/s"
[[destination]]
name = "d"
url = "http://127.0.0.1:9/x"
sources = ["s"]
forward_headers = ["x-listed", "proxy-thing"]
headers = { "X-Env" = "prod" }
signing = { secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
"#;
        let mut cfg = crate::config::Config::from_str(text, Path::new("relay.toml")).unwrap();
        cfg.destinations.remove(0)
    }

    fn message() -> Message {
        let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
        Message {
            id: MessageId::generate(1),
            source: "s".parse().unwrap(),
            received_at_ms: 1,
            event_type: None,
            content_type: Some("application/json".into()),
            idempotency_key: None,
            query: None,
            headers: vec![
                h("x-github-event", "push"),
                h("x-listed", "yes"),
                h("x-unlisted", "no"),
                h("proxy-thing", "no"),
                h("webhook-signature", "v1,inbound"),
                h("webhook-id", "inbound"),
            ],
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn forwards_listed_headers_and_never_hop_by_hop_or_relay_ones() {
        let d = dest();
        let m = message();
        let req = build_request(&d, Seq(7), &m, 2, 1_700_000_000).unwrap();
        let h = req.headers();
        assert_eq!(h["x-github-event"], "push");
        assert_eq!(h["x-listed"], "yes");
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h["content-type"], "application/json");
        assert!(h.get("x-unlisted").is_none());
        assert!(h.get("proxy-thing").is_none());
        assert_eq!(h["webhook-id"], m.id.as_str());
        assert_eq!(h.get_all("webhook-signature").iter().count(), 1);
        assert_eq!(h["x-hookrelay-seq"], "7");
        assert_eq!(h["x-hookrelay-attempt"], "2");
        assert_eq!(h["webhook-timestamp"], "1700000000");
    }

    #[test]
    fn the_inbound_query_joins_the_destination_url() {
        let url =
            |u: &str, q: Option<&str>| with_query(&u.parse().unwrap(), q).unwrap().to_string();
        assert_eq!(url("http://h:9/x", None), "http://h:9/x");
        assert_eq!(
            url("http://h:9/x", Some("a=1&b=%20")),
            "http://h:9/x?a=1&b=%20"
        );
        assert_eq!(url("http://h:9/x?k=v", Some("a=1")), "http://h:9/x?k=v&a=1");
        assert_eq!(url("http://h:9", Some("a=1")), "http://h:9/?a=1");
    }

    #[test]
    fn every_attempt_is_signed_over_its_own_timestamp() {
        let d = dest();
        let m = message();
        let sig = |ts: u64| {
            let req = build_request(&d, Seq(1), &m, 1, ts).unwrap();
            let got = req.headers()["webhook-signature"]
                .to_str()
                .unwrap()
                .to_string();
            let want = d
                .signing
                .as_ref()
                .unwrap()
                .sign(m.id.as_str(), &ts.to_string(), &m.body);
            assert_eq!(got, want);
            got
        };
        assert_ne!(sig(1_700_000_000), sig(1_700_000_001));
    }
}
