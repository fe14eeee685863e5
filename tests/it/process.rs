//! The real binary: crash safety under kill -9, SIGTERM, and `check`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// Source `s` fanned out to one destination per receiver, fsync durability.
fn write_config(dir: &Path, receivers: &[&Receiver]) -> PathBuf {
    let mut config = RelayConfig::new()
        .storage("durability", "fsync")
        .source(Source::new("s", "/s"));
    for (i, rx) in receivers.iter().enumerate() {
        config = config.destination(
            Dest::new(&format!("d{i}"), &rx.url("/"))
                .sources(["s"])
                .retry(Retry::every("20ms", "100ms")),
        );
    }
    config.write(dir)
}

/// Checks one destination's log after crashes: the first delivery of each seq
/// comes in order 1..=n without gaps, and a seq always carries the same body.
fn assert_ordered_without_gaps(got: &[Received]) -> Vec<bytes::Bytes> {
    let mut next = 1u64;
    let mut bodies: Vec<bytes::Bytes> = Vec::new();
    for r in got {
        let seq = r.seq();
        if seq == next {
            bodies.push(r.body.clone());
            next += 1;
        } else {
            assert!(seq < next, "seq {seq} delivered before {next}");
            assert_eq!(
                bodies[(seq - 1) as usize],
                r.body,
                "seq {seq} changed content"
            );
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_load_loses_no_acknowledged_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let (rx0, rx1) = (Receiver::ok().await, Receiver::ok().await);
    let config = write_config(tmp.path(), &[&rx0, &rx1]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));

    for round in 0..2 {
        let mut relay = RelayProcess::start(&config).await;
        let url = relay.url("/s");
        let mut clients = Vec::new();
        for k in 0..4 {
            let (url, acked) = (url.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                let c = client();
                for i in 0.. {
                    let body = format!("r{round}-c{k}-{i}");
                    match post(&c, &url, &[], body.clone()).await {
                        Ok(a) if a.status == StatusCode::OK => acked.lock().unwrap().push(body),
                        _ => return,
                    }
                }
            }));
        }
        let target = (round + 1) * 200;
        wait_until("acks under load", Duration::from_secs(30), || {
            acked.lock().unwrap().len() >= target
        })
        .await;
        relay.kill9();
        for c in clients {
            c.await.unwrap();
        }
    }

    let mut relay = RelayProcess::start(&config).await;
    let acked = acked.lock().unwrap().clone();
    for rx in [&rx0, &rx1] {
        wait_until(
            "every acked webhook delivered",
            Duration::from_secs(60),
            || {
                let got = rx.delivered();
                let seen: std::collections::HashSet<_> =
                    got.iter().map(|r| r.body.clone()).collect();
                acked.iter().all(|b| seen.contains(b.as_bytes()))
            },
        )
        .await;
        let bodies = assert_ordered_without_gaps(&rx.delivered());
        assert!(bodies.len() >= acked.len());
    }
    assert_eq!(relay.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_restart_resends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let config = write_config(tmp.path(), &[&rx]);
    let mut relay = RelayProcess::start(&config).await;
    post_ok(&relay.url("/s"), &[], (0..10).map(|i| i.to_string())).await;
    rx.wait_delivered(10, Duration::from_secs(10)).await;
    assert_eq!(relay.terminate(), 0);

    let mut relay = RelayProcess::start(&config).await;
    let answers = post_ok(&relay.url("/s"), &[], (10..15).map(|i| i.to_string())).await;
    let seqs: Vec<u64> = answers
        .iter()
        .map(|a| a.json["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (10 + 1..=15).collect::<Vec<_>>());
    rx.wait_delivered(15, Duration::from_secs(10)).await;
    assert_eq!(relay.terminate(), 0);
    assert_eq!(rx.count(), 15, "nothing delivered twice");
}

/// `hookrelay check` on `text`: exit code and stderr.
fn check(text: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_file(tmp.path(), "relay.toml", text);
    let (code, _, stderr) = run_cli(["check", "--config", path.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.toml");
    let (code, _, stderr) = run_cli(["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn check_exits_2_naming_file_line_and_key() {
    let base = "[[source]]\nname = \"s\"\npath = \"/s\"\n";
    let cases = [
        (format!("{base}[[destination]]\nname = \"d\"\nurl = \"http://x/\"\nsources = [\"s\"]\ntimeout = \"10x\"\n"), "timeout", 8),
        (format!("{base}[[destination]]\nname = \"d\"\nurl = \"ftp://x/\"\nsources = [\"s\"]\n"), "url", 6),
        (format!("{base}[[destination]]\nname = \"d\"\nurl = \"http://x/\"\nsources = [\"nope\"]\n"), "sources", 7),
        (format!("{base}bogus = 1\n"), "bogus", 4),
        (format!("{base}[[source]]\nname = \"s\"\npath = \"/t\"\n"), "name", 5),
    ];
    for (text, key, line) in cases {
        let (code, stderr) = check(&text);
        assert_eq!(code, 2, "{text}\n{stderr}");
        assert!(stderr.contains("relay.toml"), "names the file: {stderr}");
        assert!(stderr.contains(key), "names key {key}: {stderr}");
        assert!(
            stderr.contains(&format!(":{line}")),
            "names line {line}: {stderr}"
        );
    }
}

#[test]
fn check_on_a_missing_file_exits_2_naming_the_path() {
    let (code, _, stderr) = run_cli(["check", "--config", "/nonexistent/hookrelay.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/hookrelay.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_refusal_and_failed_attempt_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = Receiver::answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let secret = "super-secret-github-key";
    let config = RelayConfig::new()
        .source(Source::new("gh", "/gh").verify(Verify::new("github").secret(secret)))
        .source(Source::new("open", "/open"))
        .destination(
            Dest::new("down", &failing.url("/"))
                .sources(["open"])
                .retry(Retry::every("10ms", "10ms").attempts(3)),
        )
        .write(tmp.path());
    let mut relay = RelayProcess::command(&config)
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    let c = client();
    let a = post(
        &c,
        &relay.url("/gh"),
        &[("x-hub-signature-256", "sha256=00")],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    post(&c, &relay.url("/open"), &[], "payload-not-logged")
        .await
        .unwrap();
    wait_until(
        "three failed attempts logged",
        Duration::from_secs(20),
        || relay.logged_count("delivery attempt failed") >= 3,
    )
    .await;
    relay.terminate();

    let lines = relay.lines();
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let refused = parsed
        .iter()
        .find(|v| v["fields"]["message"] == "inbound request refused")
        .expect("a line for the rejected request");
    assert_eq!(refused["fields"]["source"], "gh");
    assert_eq!(refused["fields"]["status"], 401);
    assert!(refused["fields"]["reason"].is_string());
    let failed = parsed
        .iter()
        .find(|v| v["fields"]["message"] == "delivery attempt failed")
        .expect("a line per failed attempt");
    assert_eq!(failed["fields"]["destination"], "down");
    assert_eq!(failed["fields"]["seq"], 1);
    assert_eq!(failed["fields"]["status"], 503);
    assert!(failed["fields"]["reason"].as_str().unwrap().contains("503"));
    let all = lines.join("\n");
    assert!(!all.contains(secret), "the secret reached the logs");
    assert!(
        !all.contains("payload-not-logged"),
        "a body reached the logs at info"
    );
}

/// `serve --ready-file` removes a file left by a relay that is gone, before
/// it even binds, but never the file of a relay that still runs.
#[test]
fn a_stale_ready_file_is_removed_at_start_and_a_live_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Start-up fails at the bind, after the ready-file check.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = RelayConfig::new()
        .server("listen", taken.local_addr().unwrap().to_string())
        .source(Source::new("s", "/s"))
        .write(dir.path());
    let ready = dir.path().join("ready.json");
    let serve = || {
        let args = [
            "serve".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--ready-file".as_ref(),
            ready.as_os_str(),
        ];
        let (code, _, stderr) = run_cli(args);
        assert_eq!(code, 1, "the port is taken: {stderr}");
    };
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let file_of =
        |pid: u32| format!(r#"{{"pid":{pid},"ingest":"127.0.0.1:1","admin":"127.0.0.1:2"}}"#);
    write_file(dir.path(), "ready.json", file_of(gone.id()));
    serve();
    assert!(
        !ready.exists(),
        "the file of a relay that is gone was removed"
    );
    write_file(dir.path(), "ready.json", file_of(std::process::id()));
    serve();
    assert!(ready.exists(), "the file of a running process stays");
}

/// A second `serve` on a data dir a running relay holds waits for the lock
/// (a few seconds), then exits 1 naming the dir and the holder's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_the_same_data_dir_names_the_one_holding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let config = write_config(tmp.path(), &[&rx]);
    let mut first = RelayProcess::start(&config).await;
    let args = ["serve".into(), "--config".into(), config.clone()];
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_cli(args))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    let data_dir = std::fs::canonicalize(tmp.path().join("data")).unwrap();
    let expected = format!(
        "data dir {} is in use by another hookrelay (pid {}); stop it or use another data_dir",
        data_dir.display(),
        first.pid
    );
    assert!(
        stderr.contains(&expected),
        "want {expected:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("WouldBlock"), "{stderr}");
    // The first relay is untouched.
    post_ok(&first.url("/s"), &[], ["still here"]).await;
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    assert_eq!(first.terminate(), 0);
}
