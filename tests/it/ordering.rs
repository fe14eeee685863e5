//! Delivery: routing, fan-out, strict order under failure, isolation.

use std::time::{Duration, Instant};

use http::StatusCode;
use rand::Rng;
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test]
async fn fans_out_to_every_destination_and_routes_by_source() {
    let (a, b) = (Receiver::ok().await, Receiver::ok().await);
    let config = RelayConfig::new()
        .source(Source::new("one", "/one"))
        .source(Source::new("two", "/two"))
        .destination(Dest::new("both", &a.url("/a")).sources(["one", "two"]))
        .destination(Dest::new("only-two", &b.url("/b")).sources(["two"]));
    let relay = TestRelay::start(&config).await;
    let c = client();
    for i in 0..10 {
        let path = if i % 2 == 0 { "/one" } else { "/two" };
        let r = post(&c, &relay.url(path), &[], format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
    let all = a.wait_delivered(10, Duration::from_secs(10)).await;
    let bodies: Vec<_> = all.iter().map(|r| r.body.clone()).collect();
    let expected: Vec<_> = (0..10)
        .map(|i| bytes::Bytes::from(format!("m{i}")))
        .collect();
    assert_eq!(bodies, expected);

    let twos = b.wait_delivered(5, Duration::from_secs(10)).await;
    assert!(twos
        .iter()
        .all(|r| r.header("x-hookrelay-source") == Some("two")));
    let seqs: Vec<u64> = twos.iter().map(Received::seq).collect();
    assert_eq!(seqs, vec![2, 4, 6, 8, 10]);
    // Same message, same webhook-id at every destination.
    assert_eq!(all[1].header("webhook-id"), twos[0].header("webhook-id"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.count(), 5, "a destination never sees other sources");
}

/// Small bodies, bodies over the 4 KiB read inline, and one over a frame
/// (stored in parts), between messages of a source the destinations do not
/// take: read inline or on the blocking pool, every routed body arrives
/// whole, and the strict destination gets them in order.
#[tokio::test]
async fn small_and_multi_chunk_bodies_arrive_whole_and_in_order() {
    let (strict, unordered) = (Receiver::ok().await, Receiver::ok().await);
    let config = RelayConfig::new()
        .source(Source::new("in", "/in"))
        .source(Source::new("other", "/other"))
        .destination(Dest::new("strict", &strict.url("/")).sources(["in"]))
        .destination(
            Dest::new("unordered", &unordered.url("/"))
                .sources(["in"])
                .set("ordering", "unordered")
                .set("max_in_flight", 4),
        );
    let relay = TestRelay::start(&config).await;
    let c = client();
    let body = |i: usize| {
        let len = match i {
            20 => 300_000,
            i if i % 3 == 0 => 10_000 + i,
            i => 100 + i,
        };
        format!("{i:04}").repeat(len / 4).into_bytes()
    };
    let mut sent = Vec::new();
    for i in 0..40 {
        if i % 4 == 1 {
            post_ok(&relay.url("/other"), &[], ["not routed"]).await;
        }
        let r = post(&c, &relay.url("/in"), &[], body(i)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        sent.push(bytes::Bytes::from(body(i)));
    }
    let got = strict.wait_delivered(40, Duration::from_secs(20)).await;
    let bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, sent, "the strict destination, in order");
    let got = unordered.wait_delivered(40, Duration::from_secs(20)).await;
    let mut bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(bodies, want, "the unordered destination, each once");
}

#[tokio::test]
async fn strict_destination_never_sees_n_plus_one_before_n_succeeds() {
    const N: usize = 60;
    let rx = Receiver::refusing(StatusCode::INTERNAL_SERVER_ERROR, |_| {
        rand::rng().random_bool(0.4)
    })
    .await;
    let relay = TestRelay::start(&RelayConfig::one_route_with(&rx.url("/"), |d| {
        d.retry(Retry::patient("10ms", "50ms"))
    }))
    .await;
    post_ok(&relay.url("/s"), &[], (0..N).map(|i| i.to_string())).await;
    rx.wait_delivered(N, Duration::from_secs(60)).await;

    let mut done = 0u64;
    let mut failures = 0;
    for (r, status) in rx.all() {
        let seq = r.seq();
        assert_eq!(
            seq,
            done + 1,
            "attempted seq {seq} while {} was unfinished",
            done + 1
        );
        if status.is_success() {
            done = seq;
        } else {
            failures += 1;
        }
    }
    assert_eq!(done, N as u64);
    assert!(failures > 0, "the receiver was meant to fail some attempts");
    let attempts: Vec<u32> = rx
        .all()
        .iter()
        .map(|(r, _)| r.header("x-hookrelay-attempt").unwrap().parse().unwrap())
        .collect();
    assert!(
        attempts.iter().any(|&a| a > 1),
        "retries carry a growing attempt number"
    );
}

#[tokio::test]
async fn destination_down_for_seconds_then_up_gets_everything_in_order() {
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = placeholder.local_addr().unwrap();
    drop(placeholder);
    let mut relay = TestRelay::start(&RelayConfig::one_route_with(
        &format!("http://{addr}/"),
        |d| {
            d.set("timeout", "500ms")
                .retry(Retry::patient("50ms", "200ms"))
        },
    ))
    .await;
    // Ingest does not wait for the destination.
    post_ok(&relay.url("/s"), &[], (0..20).map(|i| i.to_string())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let rx = Receiver::on(listener, answer(StatusCode::OK));
    let got = rx.wait_delivered(20, Duration::from_secs(20)).await;
    let seqs: Vec<u64> = got.iter().map(Received::seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(rx.count(), 20, "each message delivered once");
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_destination_delays_neither_ingest_nor_other_destinations() {
    let slow = Receiver::slow(Duration::from_secs(1)).await;
    let fast = Receiver::ok().await;
    let config = RelayConfig::new()
        .source(Source::new("s", "/s"))
        .destination(Dest::new("slow", &slow.url("/")).sources(["s"]))
        .destination(Dest::new("fast", &fast.url("/")).sources(["s"]));
    let relay = TestRelay::start(&config).await;
    let started = Instant::now();
    post_ok(&relay.url("/s"), &[], (0..20).map(|i| i.to_string())).await;
    let ingest_time = started.elapsed();
    fast.wait_delivered(20, Duration::from_secs(5)).await;
    let fast_time = started.elapsed();
    // The slow one needs ~20 s for all; by the time fast is done it has at most a few.
    assert!(
        slow.count() <= 5,
        "slow destination got {} already",
        slow.count()
    );
    assert!(
        ingest_time < Duration::from_secs(5) && fast_time < Duration::from_secs(5),
        "ingest {ingest_time:?}, fast destination {fast_time:?}"
    );
}

#[tokio::test]
async fn graceful_restart_loses_nothing_and_resends_nothing() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&RelayConfig::one_route(&rx.url("/"))).await;
    post_ok(&relay.url("/s"), &[], (0..10).map(|i| i.to_string())).await;
    rx.wait_delivered(10, Duration::from_secs(10)).await;
    let relay = relay.restart().await;
    let answers = post_ok(&relay.url("/s"), &[], (10..15).map(|i| i.to_string())).await;
    let seqs: Vec<u64> = answers
        .iter()
        .map(|a| a.json["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (10 + 1..=15).collect::<Vec<_>>(),
        "seqs continue after restart"
    );
    let got = rx.wait_delivered(15, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 15, "nothing re-sent after a graceful restart");
    let seqs: Vec<u64> = got.iter().map(Received::seq).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_is_bounded_even_when_a_destination_hangs() {
    let hang = Receiver::slow(Duration::from_secs(3600)).await;
    let mut relay = TestRelay::start(&RelayConfig::one_route_with(&hang.url("/"), |d| {
        d.set("timeout", "1h")
    }))
    .await;
    let c = client();
    post(&c, &relay.url("/s"), &[], "x").await.unwrap();
    wait_until("attempt in flight", Duration::from_secs(10), || {
        hang.arrivals() == 1
    })
    .await;
    let started = Instant::now();
    relay.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
