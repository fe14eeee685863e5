//! Delivery policies against real receivers: dead letters, block, Retry-After,
//! rate limits, unordered concurrency and restarts, signing, HTTPS with a
//! private CA, redirects, and which headers pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::StatusCode;

use crate::support::*;

/// One source `s` and one destination `d` at `url`, changed by `f`.
fn config(url: &str, f: impl FnOnce(Dest) -> Dest) -> RelayConfig {
    RelayConfig::one_route_with(url, f)
}

/// Polls the admin view of destination `d` until `cond` holds.
async fn wait_dest(relay: &TestRelay, name: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    relay
        .wait_admin(&format!("/api/v1/destinations/{name}"), |_, v| cond(v))
        .await;
}

async fn post_all(relay: &TestRelay, bodies: &[&str]) {
    post_ok(&relay.url("/s"), &[], bodies.iter().map(|b| b.to_string())).await;
}

/// Retries every 10 to 20 ms, `attempts` times at most.
fn gives_up_after(attempts: i64) -> Retry {
    Retry::every("10ms", "20ms")
        .attempts(attempts)
        .set("max_age", "1h")
}

/// Requests per seq seen by a receiver, answered anything.
fn attempts_per_seq(rx: &Receiver) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for (r, _) in rx.all() {
        *m.entry(r.seq()).or_default() += 1;
    }
    m
}

fn bodies(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_while_later_ones_flow() {
    let rx = Receiver::refusing(StatusCode::BAD_REQUEST, |r| &r.body[..] == b"poison").await;
    let mut relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(gives_up_after(3)))).await;
    post_all(&relay, &["a", "poison", "b", "c"]).await;
    let got = rx.wait_delivered(3, Duration::from_secs(10)).await;
    assert_eq!(bodies(&got), ["a", "b", "c"]);
    assert_eq!(attempts_per_seq(&rx)[&2], 3, "max_attempts = 3");

    relay.stop().await.unwrap();
    {
        let store = relay.store();
        let dead = store.dead_letter("d", 2).expect("seq 2 is a dead letter");
        assert_eq!(dead.attempts, 3);
        assert!(dead.last_error.contains("400"), "{}", dead.last_error);
        assert_eq!(store.dead_letter_count("d"), 1);
        assert_eq!(store.cursor("d"), 4, "the cursor moved past it");
    }
    // Dead letters survive a restart, and the poison is not sent again.
    let relay = relay.restart().await;
    post_all(&relay, &["d"]).await;
    rx.wait_delivered(4, Duration::from_secs(10)).await;
    assert_eq!(attempts_per_seq(&rx)[&2], 3);
    let d = relay.admin_get("/api/v1/destinations/d").await;
    assert_eq!(d["dead_letters"], 1, "{d}");
}

#[tokio::test]
async fn block_holds_everything_behind_it_until_an_operator_resumes() {
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let rx = Receiver::refusing(StatusCode::BAD_REQUEST, move |r| {
        &r.body[..] == b"poison" && !f.load(Ordering::SeqCst)
    })
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.retry(gives_up_after(2)).set("on_exhausted", "block")
    }))
    .await;
    post_all(&relay, &["a", "poison", "b", "c"]).await;
    wait_until(
        "two attempts at the poison",
        Duration::from_secs(10),
        || attempts_per_seq(&rx).get(&2) == Some(&2),
    )
    .await;
    wait_dest(&relay, "d", |v| v["state"] == "blocked").await;

    // Blocked survives a restart: no attempt at anything, poison included.
    let relay = relay.restart().await;
    let st = relay.admin_get("/api/v1/destinations/d").await;
    assert_eq!(st["state"], "blocked", "{st}");
    assert_eq!(st["blocked_on"], 2, "{st}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 3, "nothing was attempted while blocked");
    assert_eq!(bodies(&rx.delivered()), ["a"]);

    // The operator fixes the receiver and resumes: the poison, then the rest, in order.
    fixed.store(true, Ordering::SeqCst);
    let c = client();
    let a = post(
        &c,
        &relay.admin_url("/api/v1/destinations/d/resume"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let got = rx.wait_delivered(4, Duration::from_secs(10)).await;
    assert_eq!(bodies(&got), ["a", "poison", "b", "c"]);
}

/// Arrival times per seq, recorded by a receiver script.
type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

fn arrivals_of(a: &Arrivals, seq: u64) -> Vec<Instant> {
    a.lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == seq)
        .map(|(_, t)| *t)
        .collect()
}

#[tokio::test]
async fn retry_after_is_honored_in_seconds_and_as_a_date() {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let rx = Receiver::scripted(Arc::new(move |r| {
        let seq = r.seq();
        let mut log = a.lock().unwrap();
        let first = !log.iter().any(|(s, _)| *s == seq);
        log.push((seq, Instant::now()));
        match (seq, first) {
            (1, true) => (
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "2".to_string())],
                Duration::ZERO,
            ),
            (2, true) => {
                let at = std::time::SystemTime::now() + Duration::from_secs(3);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    vec![("retry-after", httpdate::fmt_http_date(at))],
                    Duration::ZERO,
                )
            }
            _ => (StatusCode::OK, vec![], Duration::ZERO),
        }
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| d.retry(gives_up_after(10)))).await;
    post_all(&relay, &["one", "two"]).await;
    rx.wait_delivered(2, Duration::from_secs(20)).await;
    let one = arrivals_of(&arrivals, 1);
    let two = arrivals_of(&arrivals, 2);
    assert_eq!((one.len(), two.len()), (2, 2));
    let gap1 = one[1] - one[0];
    let gap2 = two[1] - two[0];
    eprintln!("Retry-After: 2 -> retried after {gap1:?}; HTTP date +3s -> after {gap2:?}");
    assert!(gap1 >= Duration::from_secs(2), "{gap1:?}");
    assert!(gap1 < Duration::from_secs(6), "{gap1:?}");
    // The date has whole seconds, so it asks for between 2 and 3 s.
    assert!(gap2 >= Duration::from_millis(1900), "{gap2:?}");
    assert!(gap2 < Duration::from_secs(7), "{gap2:?}");
}

#[tokio::test]
async fn a_rate_limit_spreads_deliveries_evenly() {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let rx = Receiver::scripted(Arc::new(move |r| {
        a.lock().unwrap().push((r.seq(), Instant::now()));
        (StatusCode::OK, vec![], Duration::ZERO)
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| d.set("rate_limit", "10/s"))).await;
    let bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    post_all(&relay, &refs).await;
    rx.wait_delivered(30, Duration::from_secs(20)).await;
    let times: Vec<Instant> = arrivals.lock().unwrap().iter().map(|(_, t)| *t).collect();
    let span = times[29] - times[0];
    eprintln!("rate_limit 10/s: 30 deliveries spread over {span:?}");
    assert!(span >= Duration::from_millis(2500), "{span:?}");
    assert!(span < Duration::from_secs(8), "{span:?}");
    // Smooth: no second holds much more than ten.
    for (i, t) in times.iter().enumerate() {
        let in_next_second = times[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(
            in_next_second <= 12,
            "{in_next_second} deliveries within 1 s"
        );
    }
}

#[tokio::test]
async fn retries_take_rate_permits_too() {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let rx = Receiver::refusing(StatusCode::INTERNAL_SERVER_ERROR, move |r| {
        let seq = r.seq();
        let mut log = a.lock().unwrap();
        let first = !log.iter().any(|(s, _)| *s == seq);
        log.push((seq, Instant::now()));
        first
    })
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("rate_limit", "10/s")
            .retry(Retry::every("1ms", "2ms").attempts(10).set("max_age", "1h"))
    }))
    .await;
    post_all(&relay, &["a", "b", "c", "d", "e", "f", "g", "h"]).await;
    rx.wait_delivered(8, Duration::from_secs(20)).await;
    let times: Vec<Instant> = arrivals.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(times.len(), 16);
    let span = times[15] - times[0];
    eprintln!("rate_limit 10/s: 16 attempts (8 retries) spread over {span:?}");
    assert!(span >= Duration::from_millis(1400), "{span:?}");
}

#[tokio::test]
async fn unordered_delivers_up_to_max_in_flight_at_once() {
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, p) = (current.clone(), peak.clone());
    let rx = Receiver::scripted(Arc::new(move |_| {
        let now = c.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        let c = c.clone();
        // Leaves the count 200 ms before the answer goes out, so a delivery
        // started right after an answer is never counted twice, even when
        // this task runs late on a loaded machine.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.fetch_sub(1, Ordering::SeqCst);
        });
        (StatusCode::OK, vec![], Duration::from_millis(500))
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("ordering", "unordered").set("max_in_flight", 8)
    }))
    .await;
    let started = Instant::now();
    let mut posts = Vec::new();
    for i in 0..16 {
        let url = relay.url("/s");
        posts.push(tokio::spawn(async move {
            post(&client(), &url, &[], format!("m{i}"))
                .await
                .unwrap()
                .status
        }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    let got = rx.wait_delivered(16, Duration::from_secs(20)).await;
    let took = started.elapsed();
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("unordered, max_in_flight 8: 16 x 500 ms took {took:?}, peak {peak} in flight");
    assert!(peak <= 8, "{peak} deliveries in flight at once");
    assert!(peak >= 4, "only {peak} deliveries in flight at once");
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(4000), "{took:?}");
    let mut seqs: Vec<u64> = got.iter().map(Received::seq).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
}

#[tokio::test]
async fn unordered_restart_resends_only_unfinished_messages() {
    let stuck = Arc::new(AtomicBool::new(true));
    let s = stuck.clone();
    let rx = Receiver::scripted(Arc::new(move |r| {
        let status = if r.seq() == 2 && s.load(Ordering::SeqCst) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, vec![], Duration::from_millis(20))
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("ordering", "unordered")
            .set("max_in_flight", 4)
            .retry(Retry::patient("50ms", "100ms"))
    }))
    .await;
    let names: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    post_all(&relay, &refs).await;
    // Everything but seq 2 gets through while 2 keeps failing.
    rx.wait_delivered(9, Duration::from_secs(20)).await;
    let before = rx.count();

    let relay = relay.restart().await;
    stuck.store(false, Ordering::SeqCst);
    post_all(&relay, &["m11"]).await;
    rx.wait_delivered(11, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Seq 2 may fail once more before the receiver is fixed; nothing finished comes again.
    let mut after: Vec<u64> = rx.all()[before..].iter().map(|(r, _)| r.seq()).collect();
    after.sort();
    after.dedup();
    assert_eq!(
        after,
        [2, 11],
        "only the unfinished and the new one after the restart"
    );
    let mut delivered: Vec<u64> = rx.delivered().iter().map(Received::seq).collect();
    delivered.sort();
    assert_eq!(delivered, (1..=11).collect::<Vec<_>>(), "each exactly once");
}

#[tokio::test]
async fn deliveries_are_signed_afresh_for_every_attempt() {
    let key: [u8; 32] = rand::random();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let rx = Receiver::scripted(Arc::new(move |_| {
        if s.fetch_add(1, Ordering::SeqCst) == 0 {
            let ra = vec![("retry-after", "1".to_string())];
            (StatusCode::SERVICE_UNAVAILABLE, ra, Duration::ZERO)
        } else {
            (StatusCode::OK, vec![], Duration::ZERO)
        }
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("signing", Toml::table([("secret", &secret)]))
            .retry(Retry::every("10ms", "20ms"))
    }))
    .await;
    let c = client();
    post(
        &c,
        &relay.url("/s"),
        &[("content-type", "application/json")],
        r#"{"n":1}"#,
    )
    .await
    .unwrap();
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    let all = rx.all();
    assert_eq!(all.len(), 2);
    let (first, second) = (&all[0].0, &all[1].0);
    let t1 = first.verify_standard(&key);
    let t2 = second.verify_standard(&key);
    assert!(
        t2 > t1,
        "a retry carries a fresh timestamp ({t1} then {t2})"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t2) < 30, "timestamp is the attempt's time");
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    assert_eq!(second.header("x-hookrelay-attempt"), Some("2"));
    assert_eq!(second.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn https_destination_trusts_its_ca_file_and_others_refuse_the_certificate() {
    let pki = TestPki::new();
    let rx = Receiver::tls(pki.leaf("receiver").server_config(), answer(StatusCode::OK)).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = write_file(tmp.path(), "test-ca.pem", &pki.ca_pem);
    let url = format!("https://{}/hook", rx.addr);
    let config = RelayConfig::new()
        .source(Source::new("s", "/s"))
        .destination(
            Dest::new("internal", &url)
                .sources(["s"])
                .set("ca_file", ca_file.as_path()),
        )
        .destination(
            Dest::new("untrusted", &url)
                .sources(["s"])
                .retry(Retry::default().attempts(1)),
        );
    let mut relay = TestRelay::start(&config).await;
    post_all(&relay, &["secret payload"]).await;
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    wait_dest(&relay, "untrusted", |v| v["dead_letters"] == 1).await;
    relay.stop().await.unwrap();
    assert_eq!(bodies(&rx.delivered()), ["secret payload"]);
    let store = relay.store();
    let dead = store.dead_letter("untrusted", 1).expect("dead letter");
    assert!(
        dead.last_error.to_lowercase().contains("certificate"),
        "{}",
        dead.last_error
    );
    assert_eq!(store.cursor("internal"), 1);
}

#[tokio::test]
async fn an_unusable_ca_file_stops_startup_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(tmp.path(), "ca.pem", "not a certificate");
    let cfg = config("https://127.0.0.1:9/", |d| d.set("ca_file", "ca.pem"));
    let err = TestRelay::start_error(tmp.path(), &cfg).await;
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let rx = Receiver::scripted(Arc::new(|r| {
        if r.path == "/moved" {
            (StatusCode::OK, vec![], Duration::ZERO)
        } else {
            let to = vec![("location", "/moved".to_string())];
            (StatusCode::FOUND, to, Duration::ZERO)
        }
    }))
    .await;
    let mut relay =
        TestRelay::start(&config(&rx.url("/hook"), |d| d.retry(gives_up_after(2)))).await;
    post_all(&relay, &["x"]).await;
    wait_dest(&relay, "d", |v| v["dead_letters"] == 1).await;
    relay.stop().await.unwrap();
    let paths: Vec<String> = rx.all().iter().map(|(r, _)| r.path.clone()).collect();
    assert_eq!(paths, ["/hook", "/hook"], "the Location was never followed");
    let dead = relay.store().dead_letter("d", 1).expect("dead letter");
    assert!(dead.last_error.contains("302"), "{}", dead.last_error);
}

#[tokio::test]
async fn only_listed_end_to_end_headers_pass() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("forward_headers", ["x-listed", "x-conn-named"])
            .set("headers", Toml::table([("X-Env", "prod")]))
    }))
    .await;
    let c = client();
    let a = post(
        &c,
        &relay.url("/s"),
        &[
            ("content-type", "text/plain"),
            ("x-github-event", "push"),
            ("x-listed", "yes"),
            ("x-unlisted", "no"),
            ("connection", "keep-alive, X-Conn-Named"),
            ("x-conn-named", "hop only"),
            ("keep-alive", "timeout=5"),
            ("webhook-id", "msg_forged"),
            ("webhook-signature", "v1,forged"),
        ],
        "body",
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let relay_id = a.json["id"].as_str().unwrap().to_string();
    let got = rx.wait_delivered(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(
        r.header("x-github-event"),
        Some("push"),
        "a provider default"
    );
    assert_eq!(r.header("x-listed"), Some("yes"));
    assert_eq!(r.header("x-env"), Some("prod"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("webhook-id"), Some(relay_id.as_str()));
    for absent in [
        "x-unlisted",
        "x-conn-named",
        "keep-alive",
        "webhook-signature",
    ] {
        assert!(
            r.header(absent).is_none(),
            "{absent} passed: {:?}",
            r.headers
        );
    }
    if let Some(conn) = r.header("connection") {
        assert!(!conn.to_lowercase().contains("x-conn-named"), "{conn}");
    }
    assert_eq!(&r.body[..], b"body");
}

#[tokio::test]
async fn unordered_shutdown_is_bounded_and_joins_every_delivery() {
    let hang = Receiver::slow(Duration::from_secs(3600)).await;
    let mut relay = TestRelay::start(&config(&hang.url("/"), |d| {
        d.set("ordering", "unordered")
            .set("max_in_flight", 4)
            .set("timeout", "1h")
    }))
    .await;
    post_all(&relay, &["a", "b", "c", "d", "e"]).await;
    wait_until("four attempts in flight", Duration::from_secs(10), || {
        hang.arrivals() == 4
    })
    .await;
    let st = relay.admin_get("/api/v1/destinations/d").await;
    assert_eq!(st["in_flight"], 4, "{st}");
    let started = Instant::now();
    relay.stop().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(hang.arrivals(), 4, "never more than max_in_flight");
    // Every task is gone: the store is free to open, and nothing moved the cursor.
    assert_eq!(relay.store().cursor("d"), 0);
}

#[tokio::test]
async fn unordered_redelivery_of_a_dead_letter_sends_only_that_message() {
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let rx = Receiver::scripted(Arc::new(move |r| {
        if &r.body[..] == b"stuck" {
            // Unfinished, in a long backoff, below finished ones.
            let ra = vec![("retry-after", "30".to_string())];
            return (StatusCode::SERVICE_UNAVAILABLE, ra, Duration::ZERO);
        }
        let status = if &r.body[..] == b"poison" && !f.load(Ordering::SeqCst) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (status, vec![], Duration::ZERO)
    }))
    .await;
    let relay = TestRelay::start(&config(&rx.url("/"), |d| {
        d.set("ordering", "unordered")
            .set("max_in_flight", 3)
            .retry(gives_up_after(2))
    }))
    .await;
    post_all(&relay, &["stuck", "poison", "b", "c", "d"]).await;
    rx.wait_delivered(3, Duration::from_secs(10)).await;
    wait_dest(&relay, "d", |v| v["dead_letters"] == 1).await;
    let before = rx.count();
    fixed.store(true, Ordering::SeqCst);
    let url = relay.admin_url("/api/v1/destinations/d/dead-letters/2/redeliver");
    let a = post(&client(), &url, &[], "").await.unwrap();
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    rx.wait_delivered(4, Duration::from_secs(10)).await;
    wait_dest(&relay, "d", |v| v["dead_letters"] == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<u64> = rx.all()[before..].iter().map(|(r, _)| r.seq()).collect();
    assert_eq!(
        after,
        [2],
        "nothing else is sent again, nor is the backoff of 1 cut short"
    );
}
