//! Admin API and CLI against a running relay.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const TOKEN: &str = "test-admin-token";

/// Source `s` routed to `d` at `url` (two attempts at most), and source `other` routed nowhere.
fn config(url: &str) -> RelayConfig {
    RelayConfig::one_route(url)
        .token(TOKEN)
        .source(Source::new("other", "/other"))
        .edit_destination("d", |d| d.retry(Retry::every("10ms", "20ms").attempts(2)))
}

/// A receiver answering 200, and a relay started with [`config`] for it.
async fn started() -> (Receiver, TestRelay) {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    (rx, relay)
}

/// POSTs `m0`, `m1`, .. as text to `path`.
async fn post_n(relay: &TestRelay, path: &str, n: usize) {
    let bodies = (0..n).map(|i| format!("m{i}"));
    post_ok(&relay.url(path), &[("content-type", "text/plain")], bodies).await;
}

/// GET `path` on the admin API with `token`.
async fn get_with(relay: &TestRelay, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    json_request(Method::GET, &relay.admin_url(path), None, token).await
}

#[tokio::test]
async fn api_needs_the_bearer_token_but_probes_and_metrics_do_not() {
    let (_rx, relay) = started().await;
    let (s, v) = get_with(&relay, "/api/v1/destinations", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].is_string());
    let (s, _) = get_with(&relay, "/api/v1/destinations", Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = get_with(&relay, "/api/v1/destinations", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(relay.admin_probe("/healthz").await.status, StatusCode::OK);
    assert_eq!(relay.admin_probe("/metrics").await.status, StatusCode::OK);
}

#[tokio::test]
async fn sources_destinations_and_messages_describe_the_relay() {
    let (rx, relay) = started().await;
    post_n(&relay, "/s", 3).await;
    post_n(&relay, "/other", 1).await;
    rx.wait_delivered(3, Duration::from_secs(10)).await;
    relay
        .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 4)
        .await;

    let (s, v) = relay.api_get("/api/v1/sources").await;
    assert_eq!(s, StatusCode::OK);
    let src = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "s")
        .unwrap();
    assert_eq!(
        (
            src["path"].as_str(),
            src["scheme"].as_str(),
            src["received"].as_u64()
        ),
        (Some("/s"), Some("none"), Some(3))
    );

    let (s, d) = relay.api_get("/api/v1/destinations/d").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["state"], "active");
    assert_eq!(
        (d["cursor"].as_u64(), d["head"].as_u64(), d["lag"].as_u64()),
        (Some(4), Some(4), Some(0))
    );
    assert_eq!(d["last_attempt"]["status"], 200);
    assert_eq!(d["dead_letters"], 0);
    let (_, all) = relay.api_get("/api/v1/destinations").await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    let (s, list) = relay
        .api_get("/api/v1/messages?source=s&after_seq=1&limit=5")
        .await;
    assert_eq!(s, StatusCode::OK);
    let seqs: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);

    let (s, m) = relay.api_get("/api/v1/messages/2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["body_base64"], "bTE="); // "m1"
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["destinations"]["d"]["status"], "delivered");
    assert_eq!(m["destinations"]["d"]["attempts"][0]["status"], 200);

    for (path, status) in [
        ("/api/v1/messages/99", StatusCode::NOT_FOUND),
        ("/api/v1/messages/abc", StatusCode::BAD_REQUEST),
        ("/api/v1/messages?limit=0", StatusCode::BAD_REQUEST),
        ("/api/v1/messages?bogus=1", StatusCode::BAD_REQUEST),
        ("/api/v1/destinations/nope", StatusCode::NOT_FOUND),
        (
            "/api/v1/destinations/nope/dead-letters",
            StatusCode::NOT_FOUND,
        ),
        ("/api/v1/nothing", StatusCode::NOT_FOUND),
    ] {
        let (s, v) = relay.api_get(path).await;
        assert_eq!(s, status, "{path}");
        assert!(v["error"].is_string(), "{path}: JSON error body");
    }
    let (s, _) = relay.api_get("/api/v1/destinations/d/pause").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn pause_holds_deliveries_survives_a_restart_and_resume_releases_them() {
    let (rx, relay) = started().await;
    let (s, v) = relay.api_post("/api/v1/destinations/d/pause", None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("paused")));
    post_n(&relay, "/s", 2).await;
    let relay = relay.restart().await;
    let (_, v) = relay.api_get("/api/v1/destinations/d").await;
    assert_eq!(v["state"], "paused");
    assert_eq!(v["lag"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "nothing delivered while paused");
    let (s, v) = relay.api_post("/api/v1/destinations/d/resume", None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("active")));
    rx.wait_delivered(2, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn replay_by_seq_and_by_time_redelivers_with_the_original_ids() {
    let (rx, relay) = started().await;
    post_n(&relay, "/s", 2).await;
    // Receive times have millisecond resolution: keep message 2 strictly before.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_third = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    post_n(&relay, "/s", 2).await;
    let first = rx.wait_delivered(4, Duration::from_secs(10)).await;

    let (s, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 2})),
        )
        .await;
    assert_eq!((s, v["cursor"].as_u64()), (StatusCode::OK, Some(1)));
    let got = rx.wait_delivered(7, Duration::from_secs(10)).await;
    let replayed: Vec<u64> = got[4..].iter().map(Received::seq).collect();
    assert_eq!(replayed, vec![2, 3, 4]);
    assert_eq!(got[4].header("webhook-id"), first[1].header("webhook-id"));

    let t = humantime::format_rfc3339_millis(before_third).to_string();
    let (s, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_time": t})),
        )
        .await;
    assert_eq!((s, v["cursor"].as_u64()), (StatusCode::OK, Some(2)));
    let got = rx.wait_delivered(9, Duration::from_secs(10)).await;
    let replayed: Vec<u64> = got[7..].iter().map(Received::seq).collect();
    assert_eq!(replayed, vec![3, 4]);
    assert_eq!(got[8].header("webhook-id"), first[3].header("webhook-id"));

    for body in [
        json!({}),
        json!({"from_seq": 1, "from_time": t}),
        json!({"from_time": "yesterday"}),
        // RFC 3339 needs the offset: not guessed to be UTC.
        json!({"from_time": t.trim_end_matches('Z')}),
        json!({"x": 1}),
    ] {
        let (s, v) = relay
            .api_post("/api/v1/destinations/d/replay", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(v["error"].is_string());
    }
    let (s, _) = relay
        .api_post(
            "/api/v1/destinations/nope/replay",
            Some(json!({"from_seq": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dead_letters_are_listed_and_can_be_redelivered() {
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rx = Receiver::gated(&fixed, StatusCode::BAD_REQUEST).await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    post_n(&relay, "/s", 1).await;
    let v = relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(v[0]["seq"], 1);
    assert_eq!(v[0]["attempts"], 2);
    assert!(v[0]["last_error"].as_str().unwrap().contains("400"));
    let (_, m) = relay.api_get("/api/v1/messages/1").await;
    assert_eq!(m["destinations"]["d"]["status"], "dead");

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, _) = relay
        .api_post("/api/v1/destinations/d/dead-letters/1/redeliver", None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v.as_array().is_some_and(|a| a.is_empty())
        })
        .await;
    let (s, _) = relay
        .api_post("/api/v1/destinations/d/dead-letters/1/redeliver", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no longer a dead letter");
    let (s, _) = relay
        .api_post("/api/v1/destinations/d/dead-letters/x/redeliver", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_expose_the_documented_names() {
    let (rx, relay) = started().await;
    post_n(&relay, "/s", 2).await;
    rx.wait_delivered(2, Duration::from_secs(10)).await;
    let text = relay.admin_probe("/metrics").await.text();
    for needle in [
        r#"hookrelay_received_total{source="s",outcome="stored"} 2"#,
        r#"hookrelay_deliveries_total{destination="d",outcome="delivered"}"#,
        r#"hookrelay_destination_lag{destination="d"}"#,
        "hookrelay_log_entries 2",
        r#"hookrelay_delivery_duration_seconds_count{destination="d"} 2"#,
        r#"hookrelay_ingest_duration_seconds_count{source="s"} 2"#,
        "hookrelay_flush_batch_size_count",
        "hookrelay_sync_duration_seconds_count",
        "hookrelay_storage_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

/// `hookrelay ARGS --config F` where F points at `relay`'s admin listener.
fn cli(relay: &TestRelay, args: &[&str]) -> (i32, String, String) {
    let cfg = cli_config(relay);
    run_cli(
        args.iter()
            .copied()
            .chain(["--config", cfg.to_str().unwrap()]),
    )
}

/// A config file with only the relay's admin address and token, as an
/// operator's client machine would have.
fn cli_config(relay: &TestRelay) -> std::path::PathBuf {
    let dir = relay.dir.join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    RelayConfig::new()
        .admin("listen", relay.admin.to_string())
        .token(TOKEN)
        .write(&dir)
}

/// `hookrelay tail [--source] [--json]` follows the message stream; it ends
/// (exit 1) when the relay stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_each_webhook_as_it_is_stored() {
    let (_rx, mut relay) = started().await;
    post_n(&relay, "/s", 1).await; // 1: before the tail, not shown
    let cfg = cli_config(&relay);
    let cfg = cfg.to_str().unwrap();
    let mut lines = Running::spawn(["tail", "--source", "s", "--config", cfg]);
    let mut json = Running::spawn(["tail", "--json", "--config", cfg]);
    for t in [&lines, &json] {
        wait_until("tail connected", Duration::from_secs(20), || {
            t.stderr()
                .iter()
                .any(|l| l.contains("following new webhooks"))
        })
        .await;
    }
    post_n(&relay, "/s", 1).await; // 2
    post_ok(&relay.url("/other?x=1"), &[], [r#"{"a":1}"#]).await; // 3
    post_n(&relay, "/s", 1).await; // 4
    wait_until("two lines for source s", Duration::from_secs(10), || {
        lines.stdout().len() >= 2
    })
    .await;
    wait_until("three JSON lines", Duration::from_secs(10), || {
        json.stdout().len() >= 3
    })
    .await;
    let shown = lines.stdout();
    assert_eq!(shown.len(), 2, "{shown:?}");
    for (line, seq) in shown.iter().zip([2, 4]) {
        let cols: Vec<&str> = line.split("  ").collect();
        assert_eq!(cols[0], seq.to_string(), "{line}");
        assert!(cols[1].ends_with('Z'), "an RFC 3339 time: {line}");
        assert_eq!(&cols[2..], ["s", "-", "2 bytes"], "{line}");
    }
    let messages: Vec<Value> = json
        .stdout()
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON message per line"))
        .collect();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(messages[1]["source"], "other");
    assert_eq!(messages[1]["query"], "x=1");
    assert_eq!(messages[1]["body_base64"], "eyJhIjoxfQ==");

    relay.stop().await.unwrap();
    for t in [&mut lines, &mut json] {
        assert_eq!(t.wait_exit(Duration::from_secs(20)), 1);
        assert!(
            t.stderr().iter().any(|l| l.contains("closed the stream")),
            "{:?}",
            t.stderr()
        );
    }
}

/// The stream resumes after `after_seq`, or after the `Last-Event-ID` a
/// reconnecting EventSource sends, and refuses an unknown source.
#[tokio::test]
async fn the_stream_resumes_after_a_seq() {
    let (_rx, relay) = started().await;
    post_n(&relay, "/s", 3).await;
    // Reads the raw answer until event 3 has arrived (the stream never ends).
    let read_events = |request: String| async move {
        let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, request.as_bytes())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (mut seen, mut buf) = (String::new(), [0u8; 4096]);
        while !seen.contains("id: 3\n") {
            let read = tokio::io::AsyncReadExt::read(&mut s, &mut buf);
            let n = tokio::time::timeout_at(deadline, read)
                .await
                .unwrap_or_else(|_| panic!("no event 3 within 10 s: {seen}"))
                .unwrap();
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    };
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    for request in [
        format!("GET /api/v1/stream?after_seq=1 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
        format!("GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n{auth}\r\n"),
    ] {
        let text = read_events(request.clone()).await;
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        assert!(!text.contains("id: 1\n"), "{request}: {text}");
        assert!(text.contains("id: 2\nevent: message\ndata: {"), "{text}");
    }
    let (s, v) = relay.api_get("/api/v1/stream?source=nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_pause_resume_and_replay_talk_to_the_running_relay() {
    let (rx, relay) = started().await;
    post_n(&relay, "/s", 2).await;
    rx.wait_delivered(2, Duration::from_secs(10)).await;
    relay
        .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 2)
        .await;

    let (code, out, err) = cli(&relay, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().next().unwrap().starts_with("DESTINATION"));
    assert!(out.lines().nth(1).unwrap().starts_with("d "), "{out}");

    let (code, out, _) = cli(&relay, &["status", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["cursor"], 2);

    assert_eq!(cli(&relay, &["pause", "d"]).1.trim(), "d: paused");
    assert_eq!(cli(&relay, &["resume", "d"]).1.trim(), "d: active");
    let (code, out, _) = cli(&relay, &["replay", "d", "--from-seq", "1"]);
    assert_eq!((code, out.trim()), (0, "d: cursor now 0"));
    rx.wait_delivered(4, Duration::from_secs(10)).await;

    let (code, _, err) = cli(&relay, &["pause", "nope"]);
    assert_eq!(code, 2, "unknown destination is bad usage");
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = cli(&relay, &["replay", "d"]);
    assert_eq!(code, 2, "replay needs --from-seq or --from-time");
    assert!(
        err.contains("--from-seq") && err.contains("--from-time"),
        "names both: {err}"
    );
}

#[test]
fn cli_says_clearly_when_the_relay_is_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = RelayConfig::new()
        .admin("listen", format!("127.0.0.1:{port}"))
        .write(tmp.path());
    let (code, _, err) = run_cli(["status", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is the relay running?"), "{err}");
}

/// `--to-seq` sends only its range again (in order for strict), then
/// delivery resumes where it was; `--dry-run` counts what would go again
/// (only messages routed here) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_replay_sends_its_range_then_resumes_where_it_was() {
    for (ordering, max_in_flight) in [("strict", 1), ("unordered", 4)] {
        let rx = Receiver::ok().await;
        let cfg = config(&rx.url("/")).edit_destination("d", |d| {
            d.set("ordering", ordering)
                .set("max_in_flight", max_in_flight)
        });
        let relay = TestRelay::start(&cfg).await;
        post_n(&relay, "/s", 3).await; // 1..=3
        post_n(&relay, "/other", 1).await; // 4, not routed to d
        post_n(&relay, "/s", 3).await; // 5..=7
        rx.wait_delivered(6, Duration::from_secs(10)).await;
        relay
            .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 7)
            .await;

        let args = ["replay", "d", "--from-seq", "2", "--to-seq", "5"];
        let (code, out, err) = cli(&relay, &[&args[..], &["--dry-run"]].concat());
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("would send 3 messages again"),
            "{ordering}: {out}"
        );
        let v = relay.admin_get("/api/v1/destinations/d").await;
        assert_eq!(v["cursor"], 7, "a dry run changes nothing");

        let (code, out, err) = cli(&relay, &args);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("d: cursor now 1;"), "{out}");
        let got = rx.wait_delivered(9, Duration::from_secs(10)).await;
        let mut replayed: Vec<u64> = got[6..].iter().map(Received::seq).collect();
        if ordering == "unordered" {
            replayed.sort();
        }
        assert_eq!(replayed, vec![2, 3, 5], "{ordering}");
        relay
            .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 7)
            .await;
        post_n(&relay, "/s", 1).await; // 8
        let got = rx.wait_delivered(10, Duration::from_secs(10)).await;
        assert_eq!(got[9].seq(), 8, "{ordering}: 6 and 7 were not sent again");
        relay
            .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 8)
            .await;
        assert_eq!(rx.count(), 10, "{ordering}");

        let (s, v) = relay
            .api_post(
                "/api/v1/destinations/d/replay",
                Some(json!({"from_seq": 5, "to_seq": 4})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
}

#[tokio::test]
async fn replay_beyond_head_is_refused() {
    let (_rx, relay) = started().await;
    post_n(&relay, "/s", 1).await;
    let (s, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 1000})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 2})),
        )
        .await;
    assert_eq!(
        (s, v["cursor"].as_u64()),
        (StatusCode::OK, Some(1)),
        "head + 1 is allowed"
    );
}

/// GET `path` on `relay`'s admin listener with `host` as the Host header.
async fn get_as_host(relay: &TestRelay, path: &str, host: &str) -> StatusCode {
    let req = http::Request::get(relay.admin_url(path))
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    crate::support::requests::send(&client(), req)
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn without_a_token_only_requests_addressed_to_an_address_or_localhost_are_answered() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&RelayConfig::one_route(&rx.url("/"))).await;
    let port = relay.admin.port();
    // A page of a rebound name (evil.example -> 127.0.0.1) is refused, API and console alike.
    for path in ["/api/v1/destinations", "/ui/", "/"] {
        let s = get_as_host(&relay, path, &format!("evil.example:{port}")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let s = get_as_host(&relay, "/api/v1/destinations", &host).await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
    // Probes answer whatever the name (a balancer's health check).
    let s = get_as_host(&relay, "/healthz", "relay.internal").await;
    assert_eq!(s, StatusCode::OK);
    // With a token, names are fine: the token is what guards it.
    let (_rx, relay) = started().await;
    let s = get_as_host(&relay, "/api/v1/destinations", "relay.internal").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
