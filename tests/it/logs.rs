//! The relay's JSON log lines for webhooks: one per accepted webhook and one
//! per delivery, on the `hookrelay::webhooks` target; numbers as JSON
//! numbers and absent values as absent fields, never `"None"` or `Some(..)`.

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);
const TARGET: &str = "hookrelay::webhooks";
/// Fields that, wherever a line has them, must be JSON numbers.
const NUMERIC: &[&str] = &[
    "seq",
    "status",
    "attempt",
    "attempts",
    "latency_ms",
    "bytes",
    "last_seq",
    "first_seq",
    "cursor",
    "took_ms",
];

/// A URL where nothing listens: the port was just bound and let go.
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/", l.local_addr().unwrap())
}

/// Every stderr line, parsed; panics naming a line that is not JSON.
fn parsed(relay: &RelayProcess) -> Vec<Value> {
    relay
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Source `s` (deduplicated by `x-request-id`) to `ok` (200), `down` (500)
/// and `gone` (connection refused), each failing one given up after two
/// attempts.
fn config(dir: &std::path::Path, ok: &Receiver, down: &Receiver) -> std::path::PathBuf {
    let retry = || Retry::every("10ms", "10ms").attempts(2);
    RelayConfig::new()
        .source(Source::new("s", "/s").set("dedup_header", "x-request-id"))
        .destination(Dest::new("ok", &ok.url("/")).sources(["s"]))
        .destination(
            Dest::new("down", &down.url("/"))
                .sources(["s"])
                .retry(retry()),
        )
        .destination(
            Dest::new("gone", &refused_url())
                .sources(["s"])
                .retry(retry()),
        )
        .write(dir)
}

/// The relay on [`config`] with JSON logs at `rust_log`, and its receivers
/// (one answering 200, one 500).
async fn start(dir: &Path, rust_log: &str) -> (Receiver, Receiver, RelayProcess) {
    let ok = Receiver::ok().await;
    let down = Receiver::answering(StatusCode::INTERNAL_SERVER_ERROR).await;
    let relay = RelayProcess::command(&config(dir, &ok, &down))
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", rust_log)
        .start()
        .await;
    (ok, down, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_an_accepted_and_a_delivered_line_with_numbers_and_no_none() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _down, mut relay) = start(tmp.path(), "info").await;
    let c = client();
    let key = [("x-request-id", "r-1")];
    let a = post(&c, &relay.url("/s"), &key, "ten-bytes!")
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    ok.wait_delivered(1, WAIT).await;
    // The sender's retry: same key, another body; stored once.
    let dup = post(&c, &relay.url("/s"), &key, "retry").await.unwrap();
    assert_eq!(dup.json["duplicate"], true, "{}", dup.text());
    wait_until("the duplicate's accepted line", WAIT, || {
        relay.logged_count("webhook accepted") >= 2
    })
    .await;
    wait_until("the delivered line", WAIT, || {
        relay.logged("webhook delivered")
    })
    .await;
    wait_until(
        "two failed attempts at each failing destination",
        WAIT,
        || relay.logged_count("message dead-lettered") >= 2,
    )
    .await;
    assert_eq!(relay.terminate(), 0);

    let all = relay.lines().join("\n");
    assert!(!all.contains("None"), "a None reached the logs:\n{all}");
    assert!(
        !all.contains("Some("),
        "a Some(..) reached the logs:\n{all}"
    );
    assert!(!all.contains("ten-bytes!"), "a body reached the logs");
    let lines = parsed(&relay);
    for v in &lines {
        for k in NUMERIC {
            let f = &v["fields"][k];
            assert!(f.is_null() || f.is_u64(), "{k} is not a number in {v}");
        }
    }

    let accepted = with_message(&lines, "webhook accepted");
    assert_eq!(
        accepted.len(),
        2,
        "one accepted line per POST: {accepted:?}"
    );
    let acc = accepted[0];
    assert_eq!(acc["target"], TARGET);
    assert_eq!(acc["level"], "INFO");
    assert_eq!(acc["fields"]["source"], "s");
    assert_eq!(acc["fields"]["seq"], 1);
    assert_eq!(
        acc["fields"]["id"], a.json["id"],
        "the id answered to the sender"
    );
    assert!(acc["fields"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(acc["fields"]["bytes"], 10);
    assert!(acc["fields"].get("duplicate").is_none(), "{acc}");
    assert!(
        acc["fields"].get("event_type").is_none(),
        "no always-empty event type: {acc}"
    );

    let again = accepted[1];
    assert_eq!(again["target"], TARGET);
    assert_eq!(again["fields"]["duplicate"], true);
    assert_eq!(again["fields"]["seq"], 1, "the first message's seq");
    assert_eq!(again["fields"]["id"], acc["fields"]["id"]);
    assert_eq!(again["fields"]["bytes"], 5);

    let delivered = with_message(&lines, "webhook delivered");
    assert_eq!(delivered.len(), 1, "one delivered line: {delivered:?}");
    let del = delivered[0];
    assert_eq!(del["target"], TARGET);
    assert_eq!(del["level"], "INFO");
    assert_eq!(del["fields"]["destination"], "ok");
    assert_eq!(del["fields"]["seq"], 1);
    assert_eq!(del["fields"]["status"], 200);
    assert!(del["fields"]["latency_ms"].is_u64(), "{del}");
    assert_eq!(del["fields"]["attempt"], 1);

    let failed = with_message(&lines, "delivery attempt failed");
    let at = |dest: &str| -> Vec<&Value> {
        failed
            .iter()
            .copied()
            .filter(|v| v["fields"]["destination"] == dest)
            .collect()
    };
    let (down_lines, gone_lines) = (at("down"), at("gone"));
    assert_eq!(down_lines.len(), 2, "{failed:?}");
    assert_eq!(gone_lines.len(), 2, "{failed:?}");
    for (i, v) in down_lines.iter().enumerate() {
        assert_eq!(v["fields"]["seq"], 1);
        assert_eq!(v["fields"]["status"], 500);
        assert_eq!(v["fields"]["attempt"], i as u64 + 1);
        assert!(v["fields"]["latency_ms"].is_u64(), "{v}");
        assert!(v["fields"]["reason"].is_string());
    }
    for v in gone_lines {
        assert_eq!(v["fields"]["seq"], 1);
        assert!(
            v["fields"].get("status").is_none(),
            "no status without an answer: {v}"
        );
        assert!(v["fields"]["attempt"].is_u64(), "{v}");
        assert!(v["fields"]["latency_ms"].is_u64(), "{v}");
    }
    let dead = with_message(&lines, "message dead-lettered");
    assert!(dead
        .iter()
        .all(|v| v["fields"]["seq"] == 1 && v["fields"]["attempts"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_target_at_warn_quiets_exactly_the_accepted_and_delivered_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _down, mut relay) = start(tmp.path(), "info,hookrelay::webhooks=warn").await;
    post_ok(&relay.url("/s"), &[], ["quiet"]).await;
    ok.wait_delivered(1, WAIT).await;
    wait_until("failures are still logged", WAIT, || {
        relay.logged_count("message dead-lettered") >= 2
    })
    .await;
    // SIGTERM lets the attempt that reached `ok` finish; stderr is complete after.
    assert_eq!(relay.terminate(), 0);

    let lines = parsed(&relay);
    assert!(!with_message(&lines, "hookrelay listening").is_empty());
    assert!(with_message(&lines, "webhook accepted").is_empty());
    assert!(with_message(&lines, "webhook delivered").is_empty());
    assert!(lines.iter().all(|v| v["target"] != TARGET));
    assert_eq!(with_message(&lines, "delivery attempt failed").len(), 4);
}
