//! Operating the relay: retention, the disk budget, and systemd notifications
//! from the real binary.

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use http::StatusCode;

use hookrelay::model::{DestinationName, Seq};
use hookrelay::store::Store;

use crate::harness::*;

/// A receiver answering 503 until `open` is set, then 200.
async fn gated(open: &Arc<AtomicBool>) -> Receiver {
    let open = open.clone();
    Receiver::scripted(Arc::new(move |_| {
        let status = if open.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, vec![], Duration::ZERO)
    }))
    .await
}

/// Retries fast and never gives up within a test.
const PATIENT: &str = r#"retry = { initial = "20ms", max_interval = "100ms", max_attempts = 1000000, max_age = "1h" }"#;

/// Waits until the admin API answers `status` for message `seq`.
async fn wait_message_status(relay: &TestRelay, seq: u64, status: StatusCode) {
    let url = format!("http://{}/api/v1/messages/{seq}", relay.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if get(&url).await.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for message {seq} to answer {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_messages_keeps_unfinished_ones_and_seqs_survive_an_empty_log() {
    let up = Receiver::ok().await;
    let open = Arc::new(AtomicBool::new(false));
    let down = gated(&open).await;
    let body = format!(
        r#"
[[source]]
name = "a"
path = "/a"

[[source]]
name = "b"
path = "/b"

[[destination]]
name = "up"
url = "{}"
sources = ["a"]

[[destination]]
name = "down"
url = "{}"
sources = ["b"]
{PATIENT}
"#,
        up.url("/"),
        down.url("/")
    );
    let mut relay = TestRelay::spawn_with_storage(&body, "retention = \"1s\"").await;
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

    let data = relay.dir.join("data");
    {
        let store = Store::open(&data).unwrap();
        for seq in 1..=3 {
            assert!(
                store.log().message(Seq(seq)).unwrap().is_none(),
                "seq {seq}"
            );
        }
        let down_name: DestinationName = "down".parse().unwrap();
        assert!(
            store
                .attempts()
                .list(&down_name, Seq(2))
                .unwrap()
                .is_empty(),
            "attempts of a deleted message are deleted too"
        );
        assert_eq!(
            store.log().last_seq().unwrap(),
            Seq(3),
            "the floor keeps the seq"
        );
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
    let rx = gated(&open).await;
    let body = format!(
        "[[source]]\nname = \"s\"\npath = \"/s\"\n\n[[destination]]\nname = \"d\"\nurl = \"{}\"\nsources = [\"s\"]\n{PATIENT}\n",
        rx.url("/")
    );
    // A fresh database is a few hundred bytes; 64 KiB fill up in a few dozen webhooks.
    let relay =
        TestRelay::spawn_with_storage(&body, "retention = \"1s\"\nmax_disk_bytes = \"64KiB\"")
            .await;
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
    assert_eq!(refused.json["error"], "storage over max_disk_bytes");
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
    child: Child,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notified {
    /// Waits until `n` datagrams carried `line`; every datagram is kept in `seen`.
    fn wait_count(&mut self, line: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if self.count(line) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not {n} times {line} within {timeout:?}; got {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
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

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_notified(dir: &Path, env: &[(&str, &str)]) -> (Notified, mpsc::Receiver<String>) {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"data\"\n\n[[source]]\nname = \"s\"\npath = \"/s\"\n",
    )
    .unwrap();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (child, rx) = spawn_binary(&config, |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
    });
    let n = Notified {
        child,
        socket,
        seen: Vec::new(),
    };
    (n, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_watchdog_pings_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut relay, addr) = start_notified(tmp.path(), &[("WATCHDOG_USEC", "200000")]);
    relay.wait_for("READY=1", Duration::from_secs(20));

    // READY=1 means the listeners are bound and the store is open.
    let addr = addr
        .recv_timeout(Duration::from_secs(10))
        .expect("relay logs its address");
    let a = post(&client(), &format!("http://{addr}/s"), &[], "hello")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);

    // WATCHDOG_USEC = 200 ms: a ping every 100 ms.
    relay.wait_count("WATCHDOG=1", 3, Duration::from_secs(10));

    sigterm(&relay.child);
    relay.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(wait_exit(&mut relay.child, Duration::from_secs(30)), 0);
    // Before the checkpoint, more time to stop (datagrams outlive the sender).
    relay.wait_for("EXTEND_TIMEOUT_USEC=120000000", Duration::from_secs(10));
    let at = |what: &str| relay.seen.iter().position(|m| m.contains(what));
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
    let mut relay = TestRelay::spawn("[[source]]\nname = \"s\"\npath = \"/s\"\n").await;
    let data = relay.dir.join("data");
    let c = client();
    for i in 0..50 {
        let a = post(&c, &relay.url("/s"), &[], format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    let at_open = snapshots(&data);
    relay.stop().await.expect("clean stop");
    let after = snapshots(&data);
    assert!(
        after.iter().any(|n| !at_open.contains(n)),
        "no new snapshot after the stop: {at_open:?} then {after:?}"
    );
    let store = Store::open(&data).unwrap();
    assert_eq!(store.log().last_seq().unwrap(), Seq(50));
}

#[test]
fn without_watchdog_usec_there_are_no_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut relay, _addr) = start_notified(tmp.path(), &[]);
    relay.wait_for("READY=1", Duration::from_secs(20));
    sigterm(&relay.child);
    relay.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(wait_exit(&mut relay.child, Duration::from_secs(30)), 0);
    assert_eq!(relay.count("WATCHDOG=1"), 0, "{:?}", relay.seen);
}

/// Regression: after retention emptied the log, a cursor below the head with
/// nothing stored above it must wait, not spin (a spinning worker froze this
/// single-threaded test runtime, and with it the relay).
#[tokio::test]
async fn replay_into_an_emptied_log_waits_instead_of_spinning() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::spawn_with_storage(
        &format!(
            "[[source]]\nname = \"s\"\npath = \"/s\"\n[[destination]]\nname = \"d\"\nurl = \"{}\"\nsources = [\"s\"]\n",
            rx.url("/")
        ),
        "retention = \"1s\"",
    )
    .await;
    let c = client();
    for i in 0..3 {
        post(&c, &relay.url("/s"), &[], format!("{i}"))
            .await
            .unwrap();
    }
    rx.wait_delivered(3, Duration::from_secs(10)).await;
    wait_message_status(&relay, 3, StatusCode::NOT_FOUND).await;

    let req = http::Request::post(format!(
        "http://{}/api/v1/destinations/d/replay",
        relay.admin
    ))
    .body(http_body_util::Full::new(bytes::Bytes::from(
        r#"{"from_seq": 1}"#,
    )))
    .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.request(req))
        .await
        .expect("admin answers")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        get(&format!("http://{}/healthz", relay.admin)),
    )
    .await
    .expect("the relay stays responsive");
    assert_eq!(health.status, StatusCode::OK);
    let a = tokio::time::timeout(
        Duration::from_secs(5),
        post(&c, &relay.url("/s"), &[], "after"),
    )
    .await
    .expect("ingest stays responsive")
    .unwrap();
    assert_eq!(a.json["seq"], 4);
    let got = rx.wait_delivered(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].body.as_ref(), b"after");
}
