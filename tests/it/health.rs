//! Running unattended: destination health in the API and metrics, and the
//! relay's own operator events, delivered like webhooks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Health: `failing` with since-when while deliveries fail, `active` with a
/// last success once they work; lag counts only the destination's sources,
/// and the oldest pending message has an age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_health_shows_failing_recovery_lag_and_oldest_pending() {
    let open = Arc::new(AtomicBool::new(false));
    let rx = Receiver::gated(&open, StatusCode::SERVICE_UNAVAILABLE).await;
    let config = RelayConfig::new()
        .source(Source::new("s", "/s"))
        .source(Source::new("other", "/other"))
        .destination(
            Dest::new("app", &rx.url("/"))
                .sources(["s"])
                .retry(Retry::every("20ms", "50ms").attempts(1000)),
        );
    let relay = TestRelay::start(&config).await;
    post_ok(&relay.url("/s"), &[], ["a", "b"]).await;
    post_ok(&relay.url("/other"), &[], ["x", "y", "z"]).await;
    let v = relay
        .wait_admin("/api/v1/destinations/app", |_, v| v["state"] == "failing")
        .await;
    assert!(
        v["failing_since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(v["last_success_at"], Value::Null);
    assert_eq!(v["head"], 5);
    assert_eq!(v["lag"], 2, "only messages of its own source: {v}");
    assert!(v["oldest_pending_age_seconds"].as_u64().is_some(), "{v}");
    let metrics = relay.admin_probe("/metrics").await.text();
    for line in [
        r#"hookrelay_destination_state{destination="app",state="failing"} 1"#,
        r#"hookrelay_destination_state{destination="app",state="active"} 0"#,
        r#"hookrelay_destination_lag{destination="app"} 2"#,
        r#"hookrelay_destination_oldest_pending_seconds{destination="app"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    open.store(true, Ordering::SeqCst);
    rx.wait_delivered(2, WAIT).await;
    let v = relay
        .wait_admin("/api/v1/destinations/app", |_, v| v["cursor"] == 5)
        .await;
    assert_eq!(v["state"], "active");
    assert_eq!(v["failing_since"], Value::Null);
    assert!(v["last_success_at"].as_str().is_some(), "{v}");
    assert_eq!(
        (v["lag"].as_u64(), v["oldest_pending_age_seconds"].as_u64()),
        (Some(0), None)
    );
}

/// Operator events are stored under the source `hookrelay` and delivered
/// (here transformed) to destinations that list it; an event about a
/// destination never goes to that destination; repeats merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_events_reach_subscribers_but_never_the_destination_they_are_about() {
    let (ops, broken_ops, refusing) = (
        Receiver::ok().await,
        Receiver::answering(StatusCode::BAD_REQUEST).await,
        Receiver::answering(StatusCode::BAD_REQUEST).await,
    );
    let once = || Retry::every("10ms", "10ms").attempts(1);
    let slack = r#"{text: "\(.body.type) \(.body.destination // "-") \(.body.seq // "-")"}"#;
    let config = RelayConfig::new()
        .source(Source::new("s", "/s"))
        .destination(
            Dest::new("flaky", &refusing.url("/"))
                .sources(["s"])
                .retry(once()),
        )
        .destination(
            Dest::new("ops", &ops.url("/"))
                .sources(["hookrelay"])
                .set("transform", slack),
        )
        // Fails every event it gets: the dead letters it makes are about
        // itself, so they go to `ops` and never back to it (no loop).
        .destination(
            Dest::new("ops2", &broken_ops.url("/"))
                .sources(["hookrelay"])
                .retry(once()),
        );
    let relay = TestRelay::start(&config).await;
    post_ok(&relay.url("/s"), &[], ["1", "2", "3", "4", "5"]).await;
    relay
        .wait_admin("/api/v1/destinations/flaky/dead-letters", |_, v| {
            v.as_array().is_some_and(|a| a.len() == 5)
        })
        .await;

    let texts = |rx: &Receiver| -> Vec<String> {
        rx.delivered()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    wait_until("ops hears of flaky's dead letter and ops2's", WAIT, || {
        let t = texts(&ops);
        t.iter()
            .any(|t| t.starts_with("message.dead_lettered flaky"))
            && t.iter()
                .any(|t| t.starts_with("message.dead_lettered ops2"))
    })
    .await;
    let t = texts(&ops);
    assert!(t.iter().any(|t| t == "relay.started - -"), "{t:?}");
    assert_eq!(
        t.iter()
            .filter(|t| t.starts_with("message.dead_lettered flaky"))
            .count(),
        1,
        "five dead letters within a minute merge into one event: {t:?}"
    );
    // ops2 was offered events (and failed them), never one about itself.
    for r in broken_ops.all() {
        let body: Value = serde_json::from_slice(&r.0.body).unwrap();
        assert_ne!(body["destination"], "ops2", "{body}");
    }
    let stored = relay.admin_get("/api/v1/messages?source=hookrelay").await;
    let first = &stored[0];
    assert_eq!(first["event_type"], "relay.started");
    assert_eq!(first["content_type"], "application/json");
}

#[test]
fn no_source_may_take_the_reserved_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = RelayConfig::new()
        .source(Source::new("hookrelay", "/h"))
        .write(dir.path());
    let (code, _, err) = run_cli(["check", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("source[0].name: \"hookrelay\" is reserved"),
        "{err}"
    );
}
