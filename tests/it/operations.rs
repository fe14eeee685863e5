//! Operating the relay: retention, the disk budget, and systemd notifications
//! from the real binary.

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

/// One destination `name` at `url` fed by `source`, retrying fast and never giving up.
fn patient(name: &str, url: &str, source: &str) -> Dest {
    Dest::new(name, url)
        .sources([source])
        .retry(Retry::patient("20ms", "100ms"))
}

/// Waits until the admin API answers `status` for message `seq`.
async fn wait_message_status(relay: &TestRelay, seq: u64, status: StatusCode) {
    relay
        .wait_admin(&format!("/api/v1/messages/{seq}"), |s, _| s == status)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_messages_keeps_unfinished_ones_and_seqs_survive_an_empty_log() {
    let up = Receiver::ok().await;
    let open = Arc::new(AtomicBool::new(false));
    let down = Receiver::gated(&open, StatusCode::SERVICE_UNAVAILABLE).await;
    let config = RelayConfig::new()
        .storage("retention", "1s")
        .source(Source::new("a", "/a"))
        .source(Source::new("b", "/b"))
        .destination(Dest::new("up", &up.url("/")).sources(["a"]))
        .destination(patient("down", &down.url("/"), "b"));
    let mut relay = TestRelay::start(&config).await;
    let c = client();
    let post_to = |path: &'static str, text: &'static str| {
        let (c, url) = (c.clone(), relay.url(path));
        async move {
            let a = post(&c, &url, &[], text).await.unwrap();
            assert_eq!(a.status, StatusCode::OK);
            a.json["seq"].as_u64().unwrap()
        }
    };

    // 1: delivered to `up`, not routed to `down`: deleted once a second old.
    assert_eq!(post_to("/a", "a1").await, 1);
    up.wait_delivered(1, Duration::from_secs(10)).await;
    wait_message_status(&relay, 1, StatusCode::NOT_FOUND).await;

    // 2: `down` refuses it; 3: delivered to `up` but behind 2 in the log.
    assert_eq!(post_to("/b", "b1").await, 2);
    let stored = Instant::now();
    assert_eq!(post_to("/a", "a2").await, 3);
    up.wait_delivered(2, Duration::from_secs(10)).await;
    wait_until("failed attempts at down", Duration::from_secs(10), || {
        down.count() >= 2
    })
    .await;
    // Proving that nothing happens needs a window: both messages are past the
    // 1 s retention for three more passes (one every 500 ms).
    tokio::time::sleep_until((stored + Duration::from_millis(2500)).into()).await;
    wait_message_status(&relay, 2, StatusCode::OK).await;
    wait_message_status(&relay, 3, StatusCode::OK).await;

    // Once `down` takes it, both go, and the log is empty.
    open.store(true, Ordering::SeqCst);
    down.wait_delivered(1, Duration::from_secs(10)).await;
    wait_message_status(&relay, 2, StatusCode::NOT_FOUND).await;
    wait_message_status(&relay, 3, StatusCode::NOT_FOUND).await;
    relay.stop().await.expect("clean stop");

    {
        let store = relay.store();
        for seq in 1..=3 {
            assert!(!store.has_message(seq), "seq {seq}");
        }
        assert_eq!(
            store.attempt_count("down", 2),
            0,
            "attempts of a deleted message are deleted too"
        );
        assert_eq!(store.last_seq(), 3, "the floor keeps the seq");
    }

    // After a restart on the emptied log, seqs go on from 4.
    let relay = relay.restart().await;
    let a = post(&client(), &relay.url("/a"), &[], "a3").await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["seq"], 4);
    let got = up.wait_delivered(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].seq(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_disk_bytes_inbound_gets_503_until_retention_frees_space() {
    let open = Arc::new(AtomicBool::new(false));
    let rx = Receiver::gated(&open, StatusCode::SERVICE_UNAVAILABLE).await;
    // A fresh database is a few hundred bytes; 64 KiB fill up in a few dozen webhooks.
    let config = RelayConfig::new()
        .storage("retention", "1s")
        .storage("max_disk_bytes", "64KiB")
        .source(Source::new("s", "/s"))
        .destination(patient("d", &rx.url("/"), "s"));
    let relay = TestRelay::start(&config).await;
    let c = client();
    let url = relay.url("/s");
    let payload = |i: usize| format!("{i:06}:{}", "x".repeat(4000));

    // The destination is down, so nothing can be deleted: fill until refused.
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        assert!(Instant::now() < deadline, "never refused");
        let body = payload(accepted.len());
        let a = post(&c, &url, &[], body.clone()).await.unwrap();
        match a.status {
            StatusCode::OK => accepted.push(body),
            StatusCode::SERVICE_UNAVAILABLE => break a,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(
        refused.json["error"],
        "storage over max_disk_bytes or under min_free_bytes"
    );
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);
    let mut refused_bodies = vec![payload(accepted.len())];
    // Still refused: retention has nothing it may delete.
    let again = post(&c, &url, &[], "refused-2").await.unwrap();
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    refused_bodies.push("refused-2".into());

    // The destination comes back; everything stored is delivered, retention
    // deletes it, and inbound is accepted again without a restart.
    open.store(true, Ordering::SeqCst);
    rx.wait_delivered(accepted.len(), Duration::from_secs(30))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let body = format!("after-{}", refused_bodies.len());
        let a = post(&c, &url, &[], body.clone()).await.unwrap();
        if a.status == StatusCode::OK {
            break body;
        }
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        refused_bodies.push(body);
        assert!(Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    accepted.push(resumed);

    let got = rx
        .wait_delivered(accepted.len(), Duration::from_secs(30))
        .await;
    let delivered: HashSet<_> = got.iter().map(|r| r.body.clone()).collect();
    for b in &accepted {
        assert!(delivered.contains(b.as_bytes()), "accepted webhook lost");
    }
    for b in &refused_bodies {
        assert!(!delivered.contains(b.as_bytes()), "refused webhook stored");
    }
}

/// The real binary under a fake systemd: a datagram socket as `NOTIFY_SOCKET`.
struct Notified {
    relay: RelayProcess,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notified {
    /// Starts the relay (one source, nothing else) with `env` on top of the
    /// notify socket, without waiting for it.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Notified {
        let config = RelayConfig::new().source(Source::new("s", "/s")).write(dir);
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut launch = RelayProcess::command(&config)
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            launch = launch.env(k, v);
        }
        Notified {
            relay: launch.spawn(),
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` datagrams carried `line`; every datagram is kept in `seen`.
    fn wait_count(&mut self, line: &str, n: usize, timeout: Duration) {
        let mut buf = [0u8; 4096];
        wait_until_blocking(&format!("{n} times {line}"), timeout, || {
            if let Ok(len) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
            self.count(line) >= n
        });
    }

    fn wait_for(&mut self, line: &str, timeout: Duration) {
        self.wait_count(line, 1, timeout);
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_watchdog_pings_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = Notified::start(tmp.path(), &[("WATCHDOG_USEC", "200000")]);
    n.wait_for("READY=1", Duration::from_secs(20));

    // READY=1 means the listeners are bound and the store is open.
    n.relay.wait_ready(Duration::from_secs(10)).await;
    let a = post(&client(), &n.relay.url("/s"), &[], "hello")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);

    // WATCHDOG_USEC = 200 ms: a ping every 100 ms.
    n.wait_count("WATCHDOG=1", 3, Duration::from_secs(10));

    n.relay.sigterm();
    n.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(n.relay.wait_exit(Duration::from_secs(30)), 0);
    // Before the checkpoint, more time to stop (datagrams outlive the sender).
    n.wait_for("EXTEND_TIMEOUT_USEC=120000000", Duration::from_secs(10));
    let at = |what: &str| n.seen.iter().position(|m| m.contains(what));
    assert!(at("READY=1") < at("STOPPING=1"));
    assert!(at("STOPPING=1") < at("EXTEND_TIMEOUT_USEC"));
}

/// sled's recovery snapshot files (`snap.<lsn>`) in a data dir.
fn snapshots(data: &Path) -> HashSet<String> {
    std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("snap."))
        .collect()
}

/// A clean stop checkpoints the store: sled writes a snapshot covering
/// everything so far, so the next start does not replay the log. Without
/// it, the only snapshot is the one written when this run opened the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_a_snapshot_covering_what_was_written() {
    let mut relay = TestRelay::start(&RelayConfig::new().source(Source::new("s", "/s"))).await;
    let data = relay.dir.join("data");
    post_ok(&relay.url("/s"), &[], (0..50).map(|i| format!("m{i}"))).await;
    let at_open = snapshots(&data);
    relay.stop().await.expect("clean stop");
    let after = snapshots(&data);
    assert!(
        after.iter().any(|n| !at_open.contains(n)),
        "no new snapshot after the stop: {at_open:?} then {after:?}"
    );
    assert_eq!(relay.store().last_seq(), 50);
}

#[test]
fn without_watchdog_usec_there_are_no_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = Notified::start(tmp.path(), &[]);
    n.wait_for("READY=1", Duration::from_secs(20));
    n.relay.sigterm();
    n.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(n.relay.wait_exit(Duration::from_secs(30)), 0);
    assert_eq!(n.count("WATCHDOG=1"), 0, "{:?}", n.seen);
}

/// Regression: after retention emptied the log, a cursor below the head with
/// nothing stored above it must wait, not spin (a spinning worker froze this
/// single-threaded test runtime, and with it the relay).
#[tokio::test]
async fn replay_into_an_emptied_log_waits_instead_of_spinning() {
    let rx = Receiver::ok().await;
    let relay =
        TestRelay::start(&RelayConfig::one_route(&rx.url("/")).storage("retention", "1s")).await;
    post_ok(&relay.url("/s"), &[], (0..3).map(|i| i.to_string())).await;
    rx.wait_delivered(3, Duration::from_secs(10)).await;
    wait_message_status(&relay, 3, StatusCode::NOT_FOUND).await;

    let replay = relay.api_post(
        "/api/v1/destinations/d/replay",
        Some(serde_json::json!({"from_seq": 1})),
    );
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), replay)
        .await
        .expect("admin answers");
    assert_eq!(status, StatusCode::OK);
    let health = tokio::time::timeout(Duration::from_secs(5), relay.admin_probe("/healthz"))
        .await
        .expect("the relay stays responsive");
    assert_eq!(health.status, StatusCode::OK);
    let a = tokio::time::timeout(
        Duration::from_secs(5),
        post(&client(), &relay.url("/s"), &[], "after"),
    )
    .await
    .expect("ingest stays responsive")
    .unwrap();
    assert_eq!(a.json["seq"], 4);
    let got = rx.wait_delivered(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].body.as_ref(), b"after");
}
