//! Inbound HTTP surface: answers, limits, delivered bytes and headers.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Source `demo` at `/hooks/demo` routed to `app` at `url`; 64 KiB bodies, 1 s to send one.
fn one_route(url: &str) -> RelayConfig {
    RelayConfig::new()
        .server("max_body_bytes", "64KiB")
        .server("request_timeout", "1s")
        .source(Source::new("demo", "/hooks/demo"))
        .destination(Dest::new("app", url).sources(["demo"]))
}

/// A raw connection to `addr` that has sent `bytes`.
async fn connect_and_send(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// A receiver answering 200, and a relay with [`one_route`] to it.
async fn demo() -> (Receiver, TestRelay) {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&one_route(&rx.url("/"))).await;
    (rx, relay)
}

#[tokio::test]
async fn binary_body_and_headers_arrive_byte_for_byte() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&one_route(&rx.url("/in"))).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let headers = [
        ("content-type", "application/octet-stream"),
        ("x-github-event", "push"),
        ("x-not-forwarded", "secret-ish"),
        ("authorization", "Bearer nope"),
    ];
    let a = post_ok(&relay.url("/hooks/demo"), &headers, [body.clone()])
        .await
        .remove(0);
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["seq"], 1);
    assert_eq!(a.json["duplicate"], false);
    let id = a.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("msg_"));

    let got = rx.wait_delivered(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.path, "/in");
    assert_eq!(r.body.as_ref(), body.as_slice());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    assert_eq!(r.header("x-hookrelay-source"), Some("demo"));
    assert_eq!(r.header("x-hookrelay-seq"), Some("1"));
    assert_eq!(r.header("x-hookrelay-attempt"), Some("1"));
    assert_eq!(r.header("x-github-event"), Some("push"));
    assert_eq!(r.header("x-not-forwarded"), None);
    assert_eq!(r.header("authorization"), None);
    let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts.abs_diff(now) < 60, "timestamp {ts} vs now {now}");
}

/// Some providers put the account or a signature in the query: it is stored,
/// shown, and forwarded after the destination's own query.
#[tokio::test]
async fn the_query_string_is_stored_and_forwarded() {
    let rx = Receiver::ok().await;
    let mut relay = TestRelay::start(&one_route(&rx.url("/in?k=v"))).await;
    let query = "account=acct_1&sig=a%2Bb&empty=";
    post_ok(&relay.url(&format!("/hooks/demo?{query}")), &[], ["one"]).await;
    post_ok(&relay.url("/hooks/demo"), &[], ["two"]).await;
    let got = rx.wait_delivered(2, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/in");
    assert_eq!(got[0].query.as_deref(), Some(&*format!("k=v&{query}")));
    assert_eq!(got[1].query.as_deref(), Some("k=v"));
    let shown = relay.admin_get("/api/v1/messages/1").await;
    assert_eq!(shown["query"], query);
    let listed = relay.admin_get("/api/v1/messages").await;
    assert_eq!(listed[0]["query"], query);
    assert_eq!(listed[1]["query"], serde_json::Value::Null);

    // Replayed after a restart, from what is on disk.
    relay = relay.restart().await;
    let (status, _) = relay
        .api_post(
            "/api/v1/destinations/app/replay",
            Some(serde_json::json!({"from_seq": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let again = rx.wait_delivered(3, Duration::from_secs(10)).await;
    assert_eq!(again[2].query.as_deref(), Some(&*format!("k=v&{query}")));
}

#[tokio::test]
async fn inbound_errors_are_json_with_the_right_status() {
    let (_rx, relay) = demo().await;
    let c = client();

    let a = post(&c, &relay.url("/nope"), &[], "x").await.unwrap();
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json["error"].is_string());

    let a = get(&relay.url("/hooks/demo")).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers["allow"], "POST");

    let big = vec![b'a'; 64 * 1024 + 1];
    let a = post(&c, &relay.url("/hooks/demo"), &[], big).await.unwrap();
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json["error"].as_str().unwrap().contains("max_body_bytes"));

    // Exactly at the limit is fine.
    let ok = vec![b'a'; 64 * 1024];
    let a = post(&c, &relay.url("/hooks/demo"), &[], ok).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["seq"], 1, "nothing refused was stored");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused_while_streaming() {
    let (_rx, relay) = demo().await;
    let head = b"POST /hooks/demo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut s = connect_and_send(relay.ingest, head).await;
    let chunk = vec![b'z'; 16 * 1024];
    let mut answer = Vec::new();
    // Keep sending until the relay answers; it must not wait for the end.
    for _ in 0..64 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            if n > 0 {
                break;
            }
        }
    }
    if answer.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "got {text:?}");
}

#[tokio::test]
async fn stalled_body_gets_408_and_other_connections_are_unaffected() {
    let (rx, relay) = demo().await;
    let stalled = b"POST /hooks/demo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc";
    let mut slow = connect_and_send(relay.ingest, stalled).await;
    let _garbage = connect_and_send(
        relay.ingest,
        &[0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'],
    )
    .await;

    let c = client();
    let a = post(&c, &relay.url("/hooks/demo"), &[], "fine")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);

    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("relay closes the stalled request")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert_eq!(rx.wait_delivered(1, Duration::from_secs(10)).await.len(), 1);
}

#[tokio::test]
async fn h2c_requests_are_served() {
    let (rx, relay) = demo().await;
    let c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    for i in 0..3 {
        let a = post(&c, &relay.url("/hooks/demo"), &[], format!("h2 {i}"))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    let got = rx.wait_delivered(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].body.as_ref(), b"h2 2");
}

#[tokio::test]
async fn health_and_readiness_probes_answer_on_the_admin_listener() {
    let (_rx, relay) = demo().await;
    let h = relay.admin_probe("/healthz").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.headers["content-type"], "application/json");
    let r = relay.admin_probe("/readyz").await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let n = relay.admin_probe("/nope").await;
    assert_eq!(n.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn buffered_durability_accepts_and_delivers() {
    let rx = Receiver::ok().await;
    let relay =
        TestRelay::start(&RelayConfig::one_route(&rx.url("/")).storage("durability", "buffered"))
            .await;
    let c = client();
    for i in 0..5 {
        let a = tokio::time::timeout(
            Duration::from_secs(5),
            post(&c, &relay.url("/s"), &[], format!("{i}")),
        )
        .await
        .expect("buffered append answers")
        .unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(rx.wait_delivered(5, Duration::from_secs(10)).await.len(), 5);
}

#[tokio::test]
async fn connections_that_never_choose_a_protocol_are_closed() {
    // request_timeout is 1s: a connection that sends nothing, or stops inside
    // what could be the HTTP/2 preface, is closed like a stalled HTTP/1 head.
    let (_rx, relay) = demo().await;
    let mut waits = Vec::new();
    for sent in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n\r\nSM"] {
        let addr = relay.ingest;
        waits.push(tokio::spawn(async move {
            let mut s = connect_and_send(addr, sent).await;
            let mut answer = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
            assert!(closed.is_ok(), "open after 5s having sent {sent:?}");
            assert!(answer.is_empty(), "{answer:?}");
        }));
    }
    for w in waits {
        w.await.unwrap();
    }
    let a = post(&client(), &relay.url("/hooks/demo"), &[], "still here")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

/// How one over-limit upload ended for the sender.
#[derive(Debug)]
struct Upload {
    /// The write error that stopped the body, with how many bytes were left.
    write_failed: Option<(usize, String)>,
    /// The answer's status line, if any.
    status: Option<String>,
    /// How the read ended: closed (`Ok`), reset, or still open after 10 s.
    end: Result<(), String>,
}

/// Sends `head` and then `body_len` bytes of body (`chunked`: as 16 KiB
/// chunks and the last chunk) in 16 KiB writes, as a sender that does not
/// read while it sends; stops writing when a write fails. Then reads what
/// the relay sent, until it closes or 10 s pass.
async fn upload(addr: std::net::SocketAddr, body_len: usize, chunked: bool) -> Upload {
    let framing = if chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {body_len}")
    };
    let head = format!("POST /hooks/demo HTTP/1.1\r\nhost: x\r\n{framing}\r\n\r\n");
    let mut s = connect_and_send(addr, head.as_bytes()).await;
    let piece = vec![b'b'; 16 * 1024];
    let mut left = body_len;
    let mut write_failed = None;
    while left > 0 {
        let n = left.min(piece.len());
        let sent = if chunked {
            let mut chunk = format!("{n:x}\r\n").into_bytes();
            chunk.extend_from_slice(&piece[..n]);
            chunk.extend_from_slice(b"\r\n");
            s.write_all(&chunk).await
        } else {
            s.write_all(&piece[..n]).await
        };
        if let Err(e) = sent {
            write_failed = Some((left, e.to_string()));
            break;
        }
        left -= n;
    }
    if chunked && write_failed.is_none() {
        if let Err(e) = s.write_all(b"0\r\n\r\n").await {
            write_failed = Some((0, e.to_string()));
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Err(_) => break Err("still open after 10 s".to_string()),
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Err(e.to_string()),
        }
    };
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string);
    Upload {
        write_failed,
        status,
        end,
    }
}

/// A sender of a body over `max_body_bytes` (by 1 MiB) that writes all of
/// it before reading, declared or chunked, can write it all and then reads
/// the 413 and a clean close: the relay answers at once, then reads and
/// drops the rest rather than closing on unread input, which makes the
/// kernel reset the connection (the sender's writes fail, and most clients
/// then report the reset and never read the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_is_readable_by_a_sender_still_sending_its_body() {
    let (_rx, relay) = demo().await;
    let body_len = 64 * 1024 + 1024 * 1024;
    let mut bad = Vec::new();
    for attempt in 0..100 {
        let chunked = attempt % 2 == 1;
        let got = upload(relay.ingest, body_len, chunked).await;
        let ok = got.write_failed.is_none()
            && got.status.as_deref() == Some("HTTP/1.1 413 Payload Too Large")
            && got.end.is_ok();
        if !ok {
            bad.push((attempt, chunked, got));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of 100 uploads (50 declared, 50 chunked) were cut or lost the 413: {bad:?}",
        bad.len()
    );
    let a = post(&client(), &relay.url("/hooks/demo"), &[], "still here")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

/// An HTTP client (hyper's) posting 1 MiB + 10 bytes over a 1 MiB limit
/// gets the 413 every time, not a "connection reset" while it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_posting_just_over_the_limit_always_gets_the_413() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(
        &one_route(&rx.url("/"))
            .server("max_body_bytes", "1MiB")
            .server("request_timeout", "5s"),
    )
    .await;
    let body = bytes::Bytes::from(vec![b'b'; 1024 * 1024 + 10]);
    let mut bad = Vec::new();
    for attempt in 0..50 {
        // A fresh client each time: the 413 closes its connection anyway.
        match post(&client(), &relay.url("/hooks/demo"), &[], body.clone()).await {
            Ok(a) if a.status == StatusCode::PAYLOAD_TOO_LARGE => {}
            Ok(a) => bad.push((attempt, a.status.to_string())),
            Err(e) => bad.push((attempt, e)),
        }
    }
    assert!(bad.is_empty(), "{} of 50 posts: {bad:?}", bad.len());
}

/// What the relay reads of a refused body is bounded: far above the bound
/// (64 MiB declared) the sender is cut off after a few MiB, and one that
/// trickles is cut off at `request_timeout` (1 s here); each still reads
/// the 413 or sees the connection end, and the relay goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_is_read_only_up_to_a_bound_in_bytes_and_time() {
    let (_rx, relay) = demo().await;
    let huge = 64 * 1024 * 1024;
    let got = tokio::time::timeout(Duration::from_secs(30), upload(relay.ingest, huge, false))
        .await
        .expect("the relay cuts a huge body off");
    let (left, _) = got.write_failed.clone().expect("the relay stops reading");
    // 4 MiB read and dropped at most, plus what socket buffers hold.
    assert!(
        huge - left < 24 * 1024 * 1024,
        "{} bytes taken",
        huge - left
    );
    assert!(
        matches!(
            got.status.as_deref(),
            None | Some("HTTP/1.1 413 Payload Too Large")
        ),
        "{got:?}"
    );

    let head = format!("POST /hooks/demo HTTP/1.1\r\nhost: x\r\ncontent-length: {huge}\r\n\r\n");
    let mut s = connect_and_send(relay.ingest, head.as_bytes()).await;
    let started = std::time::Instant::now();
    let cut = loop {
        if s.write_all(&[b't'; 1024]).await.is_err() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a trickling sender is still read after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 413"),
        "{text:?}"
    );

    let a = post(&client(), &relay.url("/hooks/demo"), &[], "still here")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

/// A sender that waits for `100 Continue` before its body gets the 413 in
/// its place, and the connection closes without waiting for a body.
#[tokio::test]
async fn a_sender_expecting_100_continue_gets_the_413_instead() {
    let (_rx, relay) = demo().await;
    let head = "POST /hooks/demo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\
                content-length: 10000000\r\n\r\n";
    let mut s = connect_and_send(relay.ingest, head.as_bytes()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_millis(900), s.read_to_end(&mut answer))
        .await
        .expect("closed before request_timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    assert!(!text.contains("100 Continue"), "{text:?}");
}
