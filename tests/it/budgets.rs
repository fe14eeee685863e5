//! Retry budgets across restarts: `max_attempts`, `max_age` and the next
//! retry time are stored with each failed attempt, so a restart neither
//! resets a message's budget nor retries it before its time; an operator's
//! replay still gives a fresh budget. Graceful restarts of `TestRelay` on
//! the same data dir.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// One arrival at a receiver: seq, `x-hookrelay-attempt`, wall-clock ms.
type Arrival = (u64, u32, u64);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A receiver that records each arrival (at once, before answering) and
/// answers per `answer(seq, body, attempt)`: a status and an optional
/// `Retry-After` in seconds.
async fn recording(
    answer: impl Fn(u64, &str, u32) -> (StatusCode, Option<u64>) + Send + Sync + 'static,
) -> (Receiver, Arc<Mutex<Vec<Arrival>>>) {
    let log: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let l = log.clone();
    let rx = Receiver::scripted(Arc::new(move |r| {
        let (seq, attempt) = (r.seq(), r.attempt());
        l.lock().unwrap().push((seq, attempt, now_ms()));
        let (status, retry_after) = answer(seq, &r.text(), attempt);
        let headers = retry_after
            .map(|s| vec![("retry-after", s.to_string())])
            .unwrap_or_default();
        (status, headers, Duration::ZERO)
    }))
    .await;
    (rx, log)
}

/// The arrivals of `seq`, in order.
fn of(log: &Arc<Mutex<Vec<Arrival>>>, seq: u64) -> Vec<(u32, u64)> {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|(s, _, _)| *s == seq)
        .map(|(_, n, at)| (*n, *at))
        .collect()
}

fn attempt_numbers(arrivals: &[(u32, u64)]) -> Vec<u32> {
    arrivals.iter().map(|(n, _)| *n).collect()
}

/// Waits until the relay has recorded an attempt of `seq` answered `status`
/// as destination `d`'s last one (its record, and with it the retry run,
/// is stored before that shows).
async fn wait_last_attempt(relay: &TestRelay, seq: u64, status: u16) {
    relay
        .wait_admin("/api/v1/destinations/d", |_, v| {
            v["last_attempt"]["seq"] == seq && v["last_attempt"]["status"] == status
        })
        .await;
}

/// Waits until destination `d` has `n` dead letters; the list.
async fn wait_dead_letters(relay: &TestRelay, n: usize) -> Vec<serde_json::Value> {
    let v = relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v.as_array().is_some_and(|l| l.len() == n)
        })
        .await;
    v.as_array().cloned().unwrap_or_default()
}

fn config(url: &str, f: impl FnOnce(Dest) -> Dest) -> RelayConfig {
    RelayConfig::one_route_with(url, f)
}

/// Fast retries (10 to 20 ms) unless the destination asks for more with
/// `Retry-After`, at most `attempts`, within `max_age`.
fn fast(attempts: i64, max_age: &str) -> Retry {
    Retry::every("10ms", "20ms")
        .attempts(attempts)
        .set("max_age", max_age)
}

/// Allowed early arrival against a stored wall-clock time (the relay's
/// clock reading and the receiver's are taken on either side of a request).
const TOLERANCE_MS: u64 = 50;

#[tokio::test]
async fn max_attempts_count_the_attempts_made_before_a_restart() {
    // The first attempt is told to come back in a second; the others fail fast.
    let (rx, log) = recording(|_, _, attempt| match attempt {
        1 => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
        _ => (StatusCode::BAD_REQUEST, None),
    })
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(fast(3, "1h")))).await;
    post_ok(&relay.url("/s"), &[], ["x"]).await;
    wait_last_attempt(&relay, 1, 503).await;
    assert_eq!(rx.count(), 1, "restarted within the Retry-After");

    let mut relay = relay.restart().await;
    wait_dead_letters(&relay, 1).await;
    let arrivals = of(&log, 1);
    assert_eq!(
        attempt_numbers(&arrivals),
        [1, 2, 3],
        "one attempt before the restart and two after: three in all"
    );
    let waited = arrivals[1].1 - arrivals[0].1;
    assert!(
        waited + TOLERANCE_MS >= 1000,
        "the Retry-After held across the restart: {waited} ms"
    );
    relay.stop().await.unwrap();
    let store = relay.store();
    let dead = store.dead_letter("d", 1).expect("a dead letter");
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.contains("400"), "{}", dead.last_error);
    drop(store);

    // Nothing more after another restart: the message is finished.
    let relay = relay.restart().await;
    post_ok(&relay.url("/s"), &[], ["y"]).await;
    wait_until("y's first attempt", Duration::from_secs(10), || {
        !of(&log, 2).is_empty()
    })
    .await;
    assert_eq!(of(&log, 1).len(), 3);
}

#[tokio::test]
async fn after_a_restart_the_next_attempt_waits_for_the_stored_retry_time() {
    let (rx, log) = recording(|_, _, _| (StatusCode::INTERNAL_SERVER_ERROR, None)).await;
    // A fixed 3 s backoff spread by jitter: the retry is due 1.5 to 3 s later.
    let retry = Retry::every("3s", "3s")
        .set("schedule", "fixed")
        .attempts(100)
        .set("max_age", "1h");
    let mut relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(retry))).await;
    post_ok(&relay.url("/s"), &[], ["x"]).await;
    wait_last_attempt(&relay, 1, 500).await;
    relay.stop().await.unwrap();
    let first = of(&log, 1)[0].1;
    let retry_at = relay
        .store()
        .retry_at_ms("d", 1)
        .expect("the next retry time is stored");
    assert!(
        (first + 1500..first + 3000 + TOLERANCE_MS).contains(&retry_at),
        "stored {} ms after the attempt",
        retry_at.saturating_sub(first)
    );

    let relay = relay.restart().await;
    let restarted = now_ms();
    assert!(
        restarted < retry_at,
        "the restart took until after the retry time; the test proves nothing"
    );
    wait_until(
        "the retry after the restart",
        Duration::from_secs(10),
        || of(&log, 1).len() == 2,
    )
    .await;
    let (n, at) = of(&log, 1)[1];
    assert_eq!(n, 2);
    assert!(
        at + TOLERANCE_MS >= retry_at,
        "retried {} ms before the stored time (restarted {} ms before it)",
        retry_at - at,
        retry_at - restarted
    );
    // The receiver sees the attempt just before the relay records it.
    relay
        .wait_admin("/api/v1/destinations/d", |_, d| {
            (d["state"].as_str(), d["retrying"].as_bool()) == (Some("failing"), Some(true))
        })
        .await;
}

#[tokio::test]
async fn max_age_counts_from_the_first_attempt_across_restarts() {
    let (rx, log) = recording(|_, _, _| (StatusCode::SERVICE_UNAVAILABLE, Some(1))).await;
    let mut relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(fast(100, "2s")))).await;
    post_ok(&relay.url("/s"), &[], ["x"]).await;
    wait_last_attempt(&relay, 1, 503).await;
    relay.stop().await.unwrap();
    let first = of(&log, 1)[0].1;

    // Down past max_age (the retry was due after 1 s; the run ends at 2 s).
    wait_until("max_age to pass", Duration::from_secs(10), || {
        now_ms() > first + 2200
    })
    .await;
    let mut relay = relay.restart().await;
    let dead = wait_dead_letters(&relay, 1).await;
    assert_eq!(dead[0]["attempts"], 1, "{dead:?}");
    assert_eq!(rx.count(), 1, "no attempt after max_age");
    relay.stop().await.unwrap();
    assert_eq!(relay.store().cursor("d"), 1, "finished");
}

#[tokio::test]
async fn a_replay_gets_a_fresh_budget_after_restarts() {
    let (rx, log) = recording(|_, _, _| (StatusCode::BAD_REQUEST, None)).await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(fast(2, "1h")))).await;
    post_ok(&relay.url("/s"), &[], ["x"]).await;
    wait_dead_letters(&relay, 1).await;
    let relay = relay.restart().await;

    let (status, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v[0]["attempts"] == 4
        })
        .await;
    assert_eq!(
        attempt_numbers(&of(&log, 1)),
        [1, 2, 3, 4],
        "two attempts, then two more after the replay"
    );
}

#[tokio::test]
async fn replaying_the_message_being_retried_restarts_its_budget() {
    // Every attempt is told to come back in a second.
    let (rx, log) = recording(|_, _, _| (StatusCode::SERVICE_UNAVAILABLE, Some(1))).await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(fast(3, "1h")))).await;
    post_ok(&relay.url("/s"), &[], ["x"]).await;
    wait_last_attempt(&relay, 1, 503).await;
    // The cursor stays at 0: only the new retry epoch tells the worker.
    let (status, v) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let dead = wait_dead_letters(&relay, 1).await;
    assert_eq!(dead[0]["attempts"], 4, "one, then a fresh run of three");
    let arrivals = of(&log, 1);
    assert_eq!(attempt_numbers(&arrivals), [1, 2, 3, 4]);
    assert!(
        arrivals[1].1 - arrivals[0].1 < 900,
        "the fresh run starts at once, not at the old run's retry time"
    );
    assert_eq!(rx.count(), 4);
}

#[tokio::test]
async fn unordered_messages_keep_their_own_budgets_across_restarts() {
    // `a` and `b` fail (the first attempt with a Retry-After of 1 s), `c` passes.
    let (rx, log) = recording(|_, body, attempt| match (body, attempt) {
        ("c", _) => (StatusCode::OK, None),
        (_, 1) => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
        _ => (StatusCode::BAD_REQUEST, None),
    })
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("ordering", "unordered")
            .set("max_in_flight", 4)
            .retry(fast(3, "1h"))
    }))
    .await;
    post_ok(&relay.url("/s"), &[], ["a", "b", "c"]).await;
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    for seq in [1, 2] {
        relay
            .wait_admin(&format!("/api/v1/messages/{seq}"), |_, v| {
                v["destinations"]["d"]["attempts"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
            })
            .await;
    }
    assert_eq!((of(&log, 1).len(), of(&log, 2).len()), (1, 1));

    let relay = relay.restart().await;
    let dead = wait_dead_letters(&relay, 2).await;
    let attempts: Vec<_> = dead.iter().map(|d| (&d["seq"], &d["attempts"])).collect();
    assert_eq!(attempts, [(&json!(1), &json!(3)), (&json!(2), &json!(3))]);
    let per_seq: HashMap<u64, Vec<u32>> = (1..=3)
        .map(|seq| (seq, attempt_numbers(&of(&log, seq))))
        .collect();
    assert_eq!(per_seq[&1], [1, 2, 3]);
    assert_eq!(per_seq[&2], [1, 2, 3]);
    assert_eq!(per_seq[&3], [1], "the delivered one is not sent again");
    for seq in [1, 2] {
        let a = of(&log, seq);
        assert!(
            a[1].1 + TOLERANCE_MS >= a[0].1 + 1000,
            "seq {seq} waited out its Retry-After across the restart"
        );
    }
}
