//! The fleet (`storage.backend = "nats"`) against the real engine: a
//! three-node JetStream cluster on loopback ports (`support/nats.rs`) and
//! several `hookrelay serve` processes sharing it, with closed-loop senders
//! as providers behave and real receivers (`support/load.rs`). Each test
//! checks, per destination: every acknowledged webhook arrived with the seq
//! and id it was acknowledged with, nothing arrived twice under two seqs,
//! and strict destinations got their first deliveries in log order with
//! nothing sent past the first message not yet delivered, fleet-wide.
//!
//! Skips, saying why, where no `nats-server` 2.10+ is installed (fails
//! under `CI`, whose `.ci/run` installs one).

#[path = "support/nats.rs"]
mod nats;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use support::load::{
    arrivals, check_destination, finish_sending, load_client, missing, mix, relay, Ledger, Sender,
    Tally, ANSWER_DEADLINE,
};
use support::*;

/// Concurrent senders; the first half post to one relay, the rest to another.
const CLIENTS: usize = 6;
/// How long the fleet may take to deliver everything once the senders stop.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// A receiver that refuses about one first attempt in eight (so retries
/// are in flight when something dies), and takes every later one.
async fn flaky(seed: u64) -> Receiver {
    Receiver::scripted(Arc::new(move |r| {
        let number = |name: &str| r.header(name).and_then(|v| v.parse::<u64>().ok());
        let seq = number("x-hookrelay-seq").unwrap_or(0);
        let attempt = number("x-hookrelay-attempt").unwrap_or(0);
        let refuse = attempt == 1 && mix(seed ^ seq) % 8 == 0;
        let status = if refuse {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (status, vec![], Duration::ZERO)
    }))
    .await
}

/// A strict and an unordered destination, each behind its own receiver.
struct Targets {
    strict: Receiver,
    spread: Receiver,
}

impl Targets {
    async fn new(seed: u64) -> Targets {
        Targets {
            strict: flaky(seed).await,
            spread: flaky(seed ^ 1).await,
        }
    }
}

/// A fleet relay's config, `name`'s own dir: `[storage] backend = "nats"`
/// on `cluster`'s servers, stream `stream` (plus `nats_keys`), and
/// whatever `routes` adds.
fn fleet_relay(
    dir: &Path,
    name: &str,
    cluster: &nats::Cluster,
    (stream, nats_keys): (&str, &[(&str, Toml)]),
    routes: impl FnOnce(RelayConfig) -> RelayConfig,
) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let urls: Vec<Toml> = cluster.urls().into_iter().map(Toml::Str).collect();
    let mut nats = vec![
        ("url", Toml::List(urls)),
        ("stream", Toml::Str(stream.into())),
    ];
    nats.extend(nats_keys.iter().cloned());
    // The stream reserves its `max_disk_bytes` on every replica's server
    // (JetStream's limit is 75% of the disk free at its start): the default
    // 10 GiB would make the tests depend on the machine's free disk.
    let config = RelayConfig::new()
        .storage("backend", "nats")
        .storage("nats", Toml::table(nats))
        .storage("max_disk_bytes", "256MiB");
    routes(config).write(&dir)
}

/// A receiver answering 500 until the flag is set, then 200.
async fn down_until_up() -> (Receiver, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let rx = Receiver::scripted(Arc::new(move |_| {
        let status = if flag.load(SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, vec![], Duration::ZERO)
    }))
    .await;
    (rx, up)
}

/// One relay's config dir (its own ready file) on the shared cluster: a
/// strict and an unordered destination fed by source `load`.
fn relay_config(
    dir: &Path,
    name: &str,
    cluster: &nats::Cluster,
    stream: &str,
    t: &Targets,
) -> PathBuf {
    // Short, so a message held by a killed relay is taken up by another
    // within the test's patience.
    let keys = [
        ("replicas", Toml::Int(3)),
        ("ack_wait", Toml::Str("3s".into())),
    ];
    fleet_relay(dir, name, cluster, (stream, &keys), |c| {
        c.source(Source::new("load", "/in").set("dedup_header", "x-delivery-id"))
            .destination(
                Dest::new("strict", &t.strict.url("/hook"))
                    .sources(["load"])
                    .set("ordering", "strict")
                    // Bounds how long a replay waits for deliveries to stop.
                    .set("timeout", "2s")
                    .retry(Retry::every("5ms", "20ms")),
            )
            .destination(
                Dest::new("spread", &t.spread.url("/hook"))
                    .sources(["load"])
                    .set("ordering", "unordered")
                    .set("max_in_flight", 4)
                    .retry(Retry::every("5ms", "20ms")),
            )
    })
}

/// Senders `k` in `range`, each posting to `url` until `stop`. With
/// `persist`, a sender whose send went unanswered (a 503 while JetStream
/// elects a leader) sends it again shortly, as a provider retries;
/// without, it stops there (its relay is gone).
fn spawn_senders(
    url: &str,
    range: std::ops::Range<usize>,
    (senders, persist): (&[Arc<Mutex<Sender>>], bool),
    stop: &Arc<AtomicBool>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    range
        .map(|k| {
            let (url, sender, stop, ledger) = (
                url.to_owned(),
                senders[k].clone(),
                stop.clone(),
                ledger.clone(),
            );
            tokio::spawn(async move {
                loop {
                    load_client(
                        k,
                        url.clone(),
                        sender.clone(),
                        stop.clone(),
                        ledger.clone(),
                        false,
                    )
                    .await;
                    if !persist || stop.load(SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

async fn acked_at_least(ledger: &Arc<Mutex<Ledger>>, n: usize, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        ledger.lock().unwrap().acked.len() >= n
    })
    .await;
}

/// POSTs an admin action until it is answered 200: a relay on a JetStream
/// that is still electing its leaders answers 503 for a moment.
async fn admin_post_ok(relay: &RelayProcess, path: &str) {
    let url = relay.admin_url(path);
    wait_for(path, Duration::from_secs(30), || async {
        let r = call(http::Method::POST, &url).await;
        match r.status {
            StatusCode::OK => Some(()),
            StatusCode::SERVICE_UNAVAILABLE => None,
            other => panic!("{path}: {other} {}", r.text()),
        }
    })
    .await;
}

/// Reads an event stream into `seen` until it holds `want`.
async fn read_until(sse: &mut tokio::net::TcpStream, seen: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let read = tokio::io::AsyncReadExt::read(sse, &mut buf);
        let n = tokio::time::timeout_at(deadline, read)
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within 10 s: {seen}"))
            .unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Sends each sender's unanswered webhook again until the fleet takes it
/// (it answers 503 while JetStream elects a new stream leader).
async fn resend_until_answered(
    url: &str,
    senders: &[Arc<Mutex<Sender>>],
    ledger: &Arc<Mutex<Ledger>>,
) {
    for (k, sender) in senders.iter().enumerate() {
        if sender.lock().unwrap().pending.is_none() {
            continue;
        }
        wait_for(
            "the fleet to take writes again",
            Duration::from_secs(30),
            || async {
                let stop = Arc::new(AtomicBool::new(false));
                load_client(
                    k,
                    url.to_owned(),
                    sender.clone(),
                    stop,
                    ledger.clone(),
                    true,
                )
                .await;
                sender.lock().unwrap().pending.is_none().then_some(())
            },
        )
        .await;
    }
}

async fn join(clients: Vec<tokio::task::JoinHandle<()>>) {
    for c in clients {
        tokio::time::timeout(ANSWER_DEADLINE * 2, c)
            .await
            .expect("senders stop once told or once their relay is gone")
            .expect("sender panicked");
    }
}

/// Waits until `relay` reports both destinations caught up with every
/// acked webhook arrived, then checks both receivers' logs.
async fn check_all_delivered(relay: &RelayProcess, t: &Targets, tally: &Tally, seed: u64) -> u64 {
    let started = Instant::now();
    let head = loop {
        // 503 while JetStream elects leaders after a node came back.
        let answer = get(&relay.admin_url("/api/v1/destinations")).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let list = answer
            .json
            .as_array()
            .expect("a list of destinations")
            .clone();
        let head = list[0]["head"].as_u64().unwrap();
        let caught_up = list.iter().all(|d| d["lag"] == 0 && d["head"] == head);
        let arrived = missing(&arrivals(&t.strict), &tally.acked).is_empty()
            && missing(&arrivals(&t.spread), &tally.acked).is_empty();
        if caught_up && arrived && head >= tally.acked.len() as u64 {
            for d in &list {
                assert_eq!(d["dead_letters"], 0, "nothing dead-lettered: {d}");
            }
            break head;
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "not caught up within {DRAIN_DEADLINE:?} (seed {seed}): {list:#?}\n{}",
            relay.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        head,
        tally.acked.len() as u64,
        "every webhook stored once, resends through another relay included"
    );
    let strict = check_destination(
        "strict",
        true,
        &arrivals(&t.strict),
        &tally.acked,
        &tally.sent,
        head,
        seed,
    );
    let spread = check_destination(
        "spread",
        false,
        &arrivals(&t.spread),
        &tally.acked,
        &tally.sent,
        head,
        seed,
    );
    println!(
        "head {head}; strict: {} requests, {} refused; spread: {} requests, {} refused; {} sends unanswered, {} stored anyway",
        strict.requests, strict.refused, spread.requests, spread.refused, tally.unanswered, tally.stored_anyway
    );
    head
}

/// Which relay acked each of the senders' webhooks, by the sender's half.
fn acked_by_half(acked: &HashMap<(usize, u64), (u64, String)>) -> (usize, usize) {
    let first = acked.keys().filter(|(k, _)| *k < CLIENTS / 2).count();
    (first, acked.len() - first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_under_load_loses_nothing_and_strict_order_holds_fleet_wide() {
    let Some(bin) = nats::server() else { return };
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let t = Targets::new(seed).await;
    let a_conf = relay_config(tmp.path(), "a", &cluster, "kill", &t);
    let b_conf = relay_config(tmp.path(), "b", &cluster, "kill", &t);
    let mut a = relay(&a_conf).start().await;
    let b = relay(&b_conf).start().await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let senders: Vec<Arc<Mutex<Sender>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let a_url = format!("http://{}/in", a.ingest);
    let b_url = format!("http://{}/in", b.ingest);
    let mut clients = spawn_senders(&a_url, 0..CLIENTS / 2, (&senders, false), &stop, &ledger);
    clients.extend(spawn_senders(
        &b_url,
        CLIENTS / 2..CLIENTS,
        (&senders, false),
        &stop,
        &ledger,
    ));
    acked_at_least(&ledger, 300, "300 webhooks acked by the fleet").await;
    a.kill9();
    let at_kill = ledger.lock().unwrap().acked.len();
    acked_at_least(&ledger, at_kill + 300, "300 more through the relay left").await;
    stop.store(true, SeqCst);
    join(clients).await;

    // What relay a left unanswered goes to b, as a provider's retry would.
    let tally = finish_sending(&b_url, &senders, &ledger).await;
    let (by_a, by_b) = acked_by_half(&tally.acked);
    assert!(
        by_a > 0 && by_b > 0,
        "both relays took webhooks: {by_a} / {by_b}"
    );
    check_all_delivered(&b, &t, &tally, seed).await;
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_and_restarted_under_load_loses_nothing() {
    let Some(bin) = nats::server() else { return };
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let t = Targets::new(seed).await;
    let a_conf = relay_config(tmp.path(), "a", &cluster, "node", &t);
    let b_conf = relay_config(tmp.path(), "b", &cluster, "node", &t);
    let a = relay(&a_conf).start().await;
    let b = relay(&b_conf).start().await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let senders: Vec<Arc<Mutex<Sender>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let a_url = format!("http://{}/in", a.ingest);
    let b_url = format!("http://{}/in", b.ingest);
    for node in [0usize, 1, 2] {
        resend_until_answered(&a_url, &senders, &ledger).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = spawn_senders(&a_url, 0..CLIENTS / 2, (&senders, true), &stop, &ledger);
        clients.extend(spawn_senders(
            &b_url,
            CLIENTS / 2..CLIENTS,
            (&senders, true),
            &stop,
            &ledger,
        ));
        let before = ledger.lock().unwrap().acked.len();
        acked_at_least(&ledger, before + 200, "webhooks acked before the node dies").await;
        cluster.kill(node);
        // Load through the loss (a stream leader may be among the dead),
        // then a quiet restart: the node catches up from its peers.
        let at_kill = ledger.lock().unwrap().acked.len();
        acked_at_least(&ledger, at_kill + 100, "webhooks acked with a node down").await;
        stop.store(true, SeqCst);
        join(clients).await;
        cluster.restart(node);
        println!(
            "node n{node} killed and restarted; {} acked",
            ledger.lock().unwrap().acked.len()
        );
    }
    resend_until_answered(&a_url, &senders, &ledger).await;
    let tally = finish_sending(&a_url, &senders, &ledger).await;
    check_all_delivered(&a, &t, &tally, seed).await;
    check_all_delivered(&b, &t, &tally, seed).await;
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_relay_sees_and_changes_the_same_state_and_a_new_relay_resumes_where_the_fleet_was() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let t = Targets::new(7).await;
    let a_conf = relay_config(tmp.path(), "a", &cluster, "state", &t);
    let b_conf = relay_config(tmp.path(), "b", &cluster, "state", &t);
    let c_conf = relay_config(tmp.path(), "c", &cluster, "state", &t);
    let mut a = relay(&a_conf).start().await;
    let mut b = relay(&b_conf).start().await;
    let post_n = |url: String, from: u64, to: u64| async move {
        let c = client();
        for n in from..to {
            let id = format!("c0-{n}");
            let body = format!("{{\"client\":0,\"n\":{n}}}");
            let r = post(&c, &url, &[("x-delivery-id", id.as_str())], body)
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
    };
    post_n(format!("http://{}/in", a.ingest), 0, 20).await;
    let strict_done = |want: usize| {
        let rx = &t.strict;
        move || arrivals(rx).iter().filter(|x| x.ok).count() >= want
    };
    wait_until(
        "the first 20 at the strict destination",
        Duration::from_secs(30),
        strict_done(20),
    )
    .await;

    // Paused through a, seen paused by b; what b then takes waits.
    let paused = call(
        http::Method::POST,
        &a.admin_url("/api/v1/destinations/strict/pause"),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text());
    let seen = get(&b.admin_url("/api/v1/destinations/strict")).await;
    assert_eq!(
        seen.json["state"], "paused",
        "b sees a's pause: {}",
        seen.json
    );
    post_n(format!("http://{}/in", b.ingest), 20, 30).await;
    let url = b.admin_url("/api/v1/destinations/strict");
    wait_for(
        "b's lag shows the 10 held back",
        Duration::from_secs(10),
        || async { (get(&url).await.json["lag"] == 10).then_some(()) },
    )
    .await;
    assert_eq!(
        arrivals(&t.strict).iter().filter(|x| x.ok).count(),
        20,
        "nothing delivered while paused"
    );

    // The whole fleet stops; a new relay finds the pause, and resumes.
    a.terminate();
    b.terminate();
    let c = relay(&c_conf).start().await;
    let st = get(&c.admin_url("/api/v1/destinations/strict")).await;
    assert_eq!(
        st.json["state"], "paused",
        "the pause outlives the relays: {}",
        st.json
    );
    assert_eq!(st.json["cursor"], 20, "{}", st.json);
    let resumed = call(
        http::Method::POST,
        &c.admin_url("/api/v1/destinations/strict/resume"),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text());
    wait_until(
        "all 30 at the strict destination",
        Duration::from_secs(30),
        strict_done(30),
    )
    .await;
    let firsts: Vec<u64> = {
        let mut seen = std::collections::HashSet::new();
        arrivals(&t.strict)
            .into_iter()
            .filter(|x| x.ok && seen.insert(x.seq))
            .map(|x| x.seq)
            .collect()
    };
    assert_eq!(
        firsts,
        (1..=30).collect::<Vec<_>>(),
        "in order, each once, none again from the start"
    );

    // A replay asked of any relay moves the fleet's cursor.
    let (status, body) = json_request(
        http::Method::POST,
        &c.admin_url("/api/v1/destinations/strict/replay"),
        Some(&serde_json::json!({ "from_seq": 25 })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(
        "seqs 25..=30 again",
        Duration::from_secs(30),
        strict_done(36),
    )
    .await;
    let again: Vec<u64> = arrivals(&t.strict)
        .into_iter()
        .filter(|x| x.ok)
        .skip(30)
        .map(|x| x.seq)
        .collect();
    assert_eq!(again, (25..=30).collect::<Vec<_>>(), "replayed in order");

    // A bounded replay: 27..=28 again, then on from where delivery was
    // (31 and what comes after, not 29..=30 again).
    let (status, body) = json_request(
        http::Method::POST,
        &c.admin_url("/api/v1/destinations/strict/replay"),
        Some(&serde_json::json!({ "from_seq": 27, "to_seq": 28 })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("27 and 28 again", Duration::from_secs(30), strict_done(38)).await;
    post_n(format!("http://{}/in", c.ingest), 30, 31).await;
    wait_until("the next new one", Duration::from_secs(30), strict_done(39)).await;
    let bounded: Vec<u64> = arrivals(&t.strict)
        .into_iter()
        .filter(|x| x.ok)
        .skip(36)
        .map(|x| x.seq)
        .collect();
    assert_eq!(bounded, [27, 28, 31], "the range, then past it");

    // Any relay lists the fleet's log.
    let list = get(&c.admin_url("/api/v1/messages?after_seq=25&limit=3")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let seqs: Vec<u64> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [26, 27, 28], "{}", list.json);
    // And streams it: events 29 to 31 after seq 28, then one posted later.
    let mut sse = tokio::net::TcpStream::connect(c.admin).await.unwrap();
    let request = "GET /api/v1/stream?after_seq=28 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut sse, request.as_bytes())
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut sse, &mut seen, "id: 31\n").await;
    post_n(format!("http://{}/in", c.ingest), 31, 32).await;
    read_until(&mut sse, &mut seen, "id: 32\n").await;
    assert!(
        !seen.contains("id: 28\n") && seen.contains("id: 29\nevent: message"),
        "{seen}"
    );
    // The console's message browser reads it too, newest first.
    let page = get(&c.admin_url("/ui/messages?before=31")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let html = page.text();
    let (newest, older) = (
        html.find("/ui/messages/30\""),
        html.find("/ui/messages/29\""),
    );
    assert!(
        newest.is_some() && newest < older,
        "newest first, below 31: {html}"
    );
    assert!(!html.contains("/ui/messages/31\""), "{html}");
    let none = get(&c.admin_url("/api/v1/messages?after_seq=32")).await;
    assert_eq!(none.json, serde_json::json!([]), "nothing after the head");
    c.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_made_on_one_relay_are_listed_and_redelivered_from_another() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let (rx, up) = down_until_up().await;
    let config = |name: &str| {
        fleet_relay(tmp.path(), name, &cluster, ("dead", &[]), |c| {
            c.source(Source::new("s", "/s")).destination(
                Dest::new("d", &rx.url("/hook"))
                    .sources(["s"])
                    .retry(Retry::every("5ms", "10ms").attempts(2)),
            )
        })
    };
    let a = relay(&config("a")).start().await;
    let b = relay(&config("b")).start().await;
    let http = client();
    for n in 0..3 {
        let url = format!("http://{}/s", a.ingest);
        let r = post(&http, &url, &[], format!("{{\"n\":{n}}}"))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
    let list_url = b.admin_url("/api/v1/destinations/d/dead-letters");
    let dead = wait_for(
        "three dead letters, seen from b",
        Duration::from_secs(30),
        || async {
            let list = get(&list_url).await.json;
            (list.as_array().map(Vec::len) == Some(3)).then_some(list)
        },
    )
    .await;
    assert_eq!(dead[0]["seq"], 1, "{dead}");
    assert_eq!(dead[0]["attempts"], 2, "{dead}");
    let seen = get(&a.admin_url("/api/v1/destinations/d")).await.json;
    assert_eq!(seen["dead_letters"], 3, "a counts them too: {seen}");
    let detail = get(&a.admin_url("/api/v1/messages/2")).await.json;
    assert_eq!(detail["destinations"]["d"]["status"], "dead", "{detail}");
    assert_eq!(
        detail["destinations"]["d"]["attempts"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{detail}"
    );

    up.store(true, SeqCst);
    let url = b.admin_url("/api/v1/destinations/d/dead-letters/redeliver");
    let r = call(http::Method::POST, &url).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.json["queued"], 3, "{}", r.text());
    let a_list = a.admin_url("/api/v1/destinations/d/dead-letters");
    wait_for(
        "no dead letters left, seen from a",
        Duration::from_secs(30),
        || async {
            let list = get(&a_list).await.json;
            (list.as_array().map(Vec::len) == Some(0)).then_some(())
        },
    )
    .await;
    let ok: Vec<u64> = arrivals(&rx)
        .into_iter()
        .filter(|x| x.ok)
        .map(|x| x.seq)
        .collect();
    assert_eq!(ok, [1, 2, 3], "each redelivered once, oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_run_goes_on_at_another_relay_and_operator_events_flow_through_the_fleet() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let down = Receiver::scripted(Arc::new(|_| {
        (StatusCode::SERVICE_UNAVAILABLE, vec![], Duration::ZERO)
    }))
    .await;
    let ops = Receiver::ok().await;
    let config = |name: &str| {
        let ack_wait = [("ack_wait", Toml::Str("2s".into()))];
        fleet_relay(tmp.path(), name, &cluster, ("budget", &ack_wait), |c| {
            c.source(Source::new("s", "/s"))
                .destination(
                    Dest::new("d", &down.url("/hook"))
                        .sources(["s"])
                        .retry(Retry::every("700ms", "700ms").attempts(4)),
                )
                .destination(Dest::new("ops", &ops.url("/ops")).sources(["hookrelay"]))
        })
    };
    let mut a = relay(&config("a")).start().await;
    let r = post(&client(), &format!("http://{}/s", a.ingest), &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    wait_until("two attempts at relay a", Duration::from_secs(20), || {
        down.count() >= 2
    })
    .await;
    a.kill9();
    // b takes the message up once a's hold lapses, and goes on with the
    // same run: two more attempts, not four.
    let b = relay(&config("b")).start().await;
    let list_url = b.admin_url("/api/v1/destinations/d/dead-letters");
    let dead = wait_for("the dead letter", Duration::from_secs(30), || async {
        let list = get(&list_url).await.json;
        (list.as_array().map(Vec::len) == Some(1)).then_some(list)
    })
    .await;
    let mut attempts: Vec<String> = down
        .all()
        .iter()
        .map(|(r, _)| r.header("x-hookrelay-attempt").unwrap_or("").to_owned())
        .collect();
    // An attempt in flight at the kill (unrecorded) is sent again once.
    let sent = attempts.len();
    attempts.dedup();
    assert_eq!(
        attempts,
        ["1", "2", "3", "4"],
        "one run of four across two relays"
    );
    assert!(sent <= 5, "{sent} requests for four attempts");
    assert_eq!(dead[0]["attempts"], 4, "{dead}");
    // Each relay's own operator events reach the subscribed destination.
    wait_until(
        "relay.started from both relays",
        Duration::from_secs(20),
        || {
            ops.all()
                .iter()
                .filter(|(r, _)| String::from_utf8_lossy(&r.body).contains("relay.started"))
                .count()
                >= 2
        },
    )
    .await;
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_what_every_destination_finished() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let (fast, slow) = (Receiver::ok().await, Receiver::ok().await);
    let config = fleet_relay(tmp.path(), "a", &cluster, ("aging", &[]), |c| {
        c.storage("retention", "1s")
            .source(Source::new("s", "/s"))
            .destination(Dest::new("fast", &fast.url("/f")).sources(["s"]))
            .destination(Dest::new("slow", &slow.url("/s")).sources(["s"]))
    });
    let a = relay(&config).start().await;
    admin_post_ok(&a, "/api/v1/destinations/slow/pause").await;
    let http = client();
    for n in 0..5 {
        let url = format!("http://{}/s", a.ingest);
        let r = post(&http, &url, &[], format!("{{\"n\":{n}}}"))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
    wait_until(
        "five at the fast destination",
        Duration::from_secs(10),
        || fast.count() >= 5,
    )
    .await;
    // Older than retention, but the paused destination still owes them.
    let listed = |a: &RelayProcess| {
        let url = a.admin_url("/api/v1/messages");
        async move { get(&url).await.json.as_array().map_or(0, Vec::len) }
    };
    // A negative: retention runs each second here (its period is at most
    // `retention`), so three seconds give it rounds enough to go wrong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(listed(&a).await, 5, "kept while a destination owes them");
    let resumed = call(
        http::Method::POST,
        &a.admin_url("/api/v1/destinations/slow/resume"),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text());
    wait_until(
        "five at the slow destination",
        Duration::from_secs(10),
        || slow.count() >= 5,
    )
    .await;
    wait_for(
        "the finished messages deleted",
        Duration::from_secs(10),
        || async { (listed(&a).await == 0).then_some(()) },
    )
    .await;
    let gone = get(&a.admin_url("/api/v1/messages/1")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text());
    assert!(
        a.logged("retention deleted messages every destination finished"),
        "{}",
        a.tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_answers_503_and_drops_nothing_stored() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let paused = Receiver::ok().await;
    let config = fleet_relay(tmp.path(), "a", &cluster, ("small", &[]), |c| {
        c.storage("max_disk_bytes", "64KiB")
            .source(Source::new("s", "/s"))
            .destination(Dest::new("d", &paused.url("/d")).sources(["s"]))
    });
    let a = relay(&config).start().await;
    admin_post_ok(&a, "/api/v1/destinations/d/pause").await;
    let (http, url) = (client(), format!("http://{}/s", a.ingest));
    let body = "x".repeat(1024);
    let mut stored = 0;
    let refused = loop {
        let r = post(&http, &url, &[], body.clone()).await.unwrap();
        if r.status != StatusCode::OK {
            break r;
        }
        stored += 1;
        assert!(stored < 200, "64 KiB never filled");
    };
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    let reason = refused.text();
    assert!(
        reason.contains("max_disk_bytes"),
        "the budget's reason: {reason}"
    );
    assert!(stored > 10, "{stored} stored before the stream was full");
    let r = call(
        http::Method::POST,
        &a.admin_url("/api/v1/destinations/d/resume"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    wait_until(
        "every stored webhook delivered",
        Duration::from_secs(20),
        || paused.count() >= stored,
    )
    .await;
    let seqs: Vec<u64> = arrivals(&paused).iter().map(|x| x.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored as u64).collect::<Vec<_>>(),
        "all of them, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relay_shows_the_fleets_health_and_one_reports_it() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let (app, up) = down_until_up().await;
    let ops = Receiver::ok().await;
    let config = |name: &str| {
        fleet_relay(tmp.path(), name, &cluster, ("health", &[]), |c| {
            c.source(Source::new("s", "/s"))
                .destination(
                    Dest::new("d", &app.url("/hook"))
                        .sources(["s"])
                        .retry(Retry::every("300ms", "300ms").attempts(10_000)),
                )
                .destination(Dest::new("ops", &ops.url("/ops")).sources(["hookrelay"]))
        })
    };
    let a = relay(&config("a")).start().await;
    let b = relay(&config("b")).start().await;
    let r = post(&client(), &format!("http://{}/s", a.ingest), &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // (After each relay's relay.started.)
    let seq = r.json["seq"].as_u64().expect("the stored seq");

    // Whichever relay makes the attempts, both tell the same story.
    let views = || async {
        let va = get(&a.admin_url("/api/v1/destinations/d")).await.json;
        let vb = get(&b.admin_url("/api/v1/destinations/d")).await.json;
        (va, vb)
    };
    let (va, vb) = wait_for(
        "d failing, seen alike from a and b",
        Duration::from_secs(30),
        || async {
            let (va, vb) = views().await;
            let same = va["failing_since"] == vb["failing_since"]
                && va["last_attempt"]["seq"] == vb["last_attempt"]["seq"];
            (va["state"] == "failing" && vb["state"] == "failing" && same).then_some((va, vb))
        },
    )
    .await;
    assert!(va["failing_since"].is_string(), "{va}");
    assert_eq!(vb["last_attempt"]["status"], 500, "{vb}");
    assert_eq!(vb["last_attempt"]["seq"], seq, "{vb}");
    assert_eq!(vb["in_flight"], 1, "the message is held somewhere: {vb}");
    assert_eq!(vb["retrying"], true, "{vb}");
    // Each console lists the attempts, wherever they were made.
    for relay in [&a, &b] {
        let page = get(&relay.admin_url("/ui/destinations/d")).await;
        let html = page.text();
        let at = html.find("id=\"attempts\"").expect("the attempts section");
        let section = &html[at..];
        assert!(!section.contains("None recorded."), "{section}");
        assert!(
            section.contains(&format!("/ui/messages/{seq}\"")),
            "{section}"
        );
        assert!(section.contains("500"), "{section}");
    }

    // Failing for a minute: one relay of the two reports it.
    let events = |kind: &'static str| {
        let ops = &ops;
        move || {
            ops.all()
                .iter()
                .filter(|(r, _)| String::from_utf8_lossy(&r.body).contains(kind))
                .count()
        }
    };
    let failing = events("\"destination.failing\"");
    wait_until(
        "destination.failing, after a minute",
        Duration::from_secs(90),
        || failing() >= 1,
    )
    .await;
    up.store(true, SeqCst);
    let recovered = events("\"destination.recovered\"");
    wait_until("destination.recovered", Duration::from_secs(30), || {
        recovered() >= 1
    })
    .await;
    // Both watchers looked at least once since (they look every 5 s).
    assert_eq!(failing(), 1, "reported once for the fleet");
    let (va, vb) = wait_for(
        "d active again, from both",
        Duration::from_secs(10),
        || async {
            let (va, vb) = views().await;
            (va["state"] == "active" && vb["state"] == "active").then_some((va, vb))
        },
    )
    .await;
    assert_eq!(va["last_success_at"], vb["last_success_at"]);
    assert!(vb["failing_since"].is_null(), "{vb}");
    assert_eq!(vb["last_attempt"]["status"], 200, "{vb}");
    assert_eq!(recovered(), 1, "reported once for the fleet");
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_reply_reaches_the_provider_whichever_relay_delivers() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The app answers each message with what it said; it refuses "fail".
    let app = Receiver::replying(
        listener,
        Arc::new(|r: &Received| {
            let status = if r.text().contains("fail") {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let headers = vec![("content-type", "text/plain".to_string())];
            (status, headers, Duration::ZERO)
        }),
        Arc::new(|r: &Received| format!("you said {}", r.text()).into()),
    );
    // Each relay's copy of `app` has its own path: the app sees which
    // relay delivered each message.
    let config = |name: &str| {
        let reply = Toml::table([
            ("destination", "app"),
            ("timeout", "10s"),
            ("content_type", "text/plain"),
            ("body", "fallback"),
        ]);
        fleet_relay(tmp.path(), name, &cluster, ("replies", &[]), |c| {
            c.source(Source::new("s", "/s").set("reply", reply))
                .destination(
                    Dest::new("app", &app.url(&format!("/{name}")))
                        .sources(["s"])
                        .set("ordering", "unordered")
                        .set("max_in_flight", 8)
                        .retry(Retry::every("50ms", "50ms").attempts(2)),
                )
        })
    };
    let a = relay(&config("a")).start().await;
    let b = relay(&config("b")).start().await;
    let http = client();
    for n in 0..24 {
        // Not every other one: JetStream may hand messages out to the
        // relays' pulls in turn, which would match one sender per relay.
        let to = if n % 3 == 0 { &b } else { &a };
        let said = format!("hello {n}");
        let r = post(&http, &format!("http://{}/s", to.ingest), &[], said.clone())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.text(), format!("you said {said}"), "message {n}");
        let kind = r.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(kind, Some("text/plain"), "message {n}");
    }
    // A failed first attempt answers with the fallback, wherever it ran.
    for to in [&a, &b] {
        let r = post(&http, &format!("http://{}/s", to.ingest), &[], "fail")
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "fallback");
    }
    // (How many crossed relays: JetStream hands a message to whichever
    // relay's pull waits first, not necessarily the one that took it in.)
    let crossed = app
        .all()
        .iter()
        .filter(|(r, _)| {
            let n: usize = r.text().trim_start_matches("hello ").parse().unwrap_or(0);
            let took = if n % 3 == 0 { "/b" } else { "/a" };
            r.text().starts_with("hello") && r.path != took
        })
        .count();
    assert!(
        crossed > 0,
        "some answers crossed from one relay to the other"
    );
    let answered: usize = app
        .all()
        .iter()
        .filter(|(r, _)| r.text().starts_with("hello"))
        .count();
    assert_eq!(answered, 24, "each message delivered once");
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replays_asked_of_two_relays_at_once_run_in_turn_and_leave_delivery_running() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    // "slow" holds its delivery long enough for both replays to wait on it.
    let app = Receiver::scripted(Arc::new(|r: &Received| {
        let wait = if r.text().contains("slow") {
            Duration::from_millis(1500)
        } else {
            Duration::ZERO
        };
        (StatusCode::OK, vec![], wait)
    }))
    .await;
    let config = |name: &str| {
        fleet_relay(tmp.path(), name, &cluster, ("moves", &[]), |c| {
            c.source(Source::new("s", "/s")).destination(
                Dest::new("d", &app.url("/hook"))
                    .sources(["s"])
                    .set("timeout", "3s"),
            )
        })
    };
    let a = relay(&config("a")).start().await;
    let b = relay(&config("b")).start().await;
    let http = client();
    let send = |to: &RelayProcess, body: &str| {
        let (http, url, body) = (
            http.clone(),
            format!("http://{}/s", to.ingest),
            body.to_owned(),
        );
        async move {
            let r = post(&http, &url, &[], body).await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
    };
    for n in 0..4 {
        send(&a, &format!("{{\"n\":{n}}}")).await;
    }
    wait_until("four delivered", Duration::from_secs(20), || {
        app.count() >= 4
    })
    .await;
    send(&b, "slow").await;
    wait_until("slow in flight", Duration::from_secs(20), || {
        app.count() >= 5
    })
    .await;
    let replay = |to: &RelayProcess, from: u64| {
        let url = to.admin_url("/api/v1/destinations/d/replay");
        async move {
            let body = serde_json::json!({ "from_seq": from });
            json_request(http::Method::POST, &url, Some(&body), None).await
        }
    };
    let (ra, rb) = tokio::join!(replay(&a, 2), replay(&b, 4));
    assert_eq!(ra.0, StatusCode::OK, "{}", ra.1);
    assert_eq!(rb.0, StatusCode::OK, "{}", rb.1);
    // Neither move left the destination paused.
    let view = get(&b.admin_url("/api/v1/destinations/d")).await.json;
    assert_eq!(view["state"], "active", "{view}");
    send(&a, "after").await;
    wait_until("the next new one", Duration::from_secs(20), || {
        app.all().iter().any(|(r, _)| r.text() == "after")
    })
    .await;
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destinations_consumer_is_handed_only_its_sources_and_a_rolling_change_loses_nothing() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let both = Receiver::ok().await;
    let only2 = Receiver::ok().await;
    // Relay a still has the old config (`both` fed by s1 only); b, started
    // last, the new one (s1 and s2).
    let config = |name: &str, sources: &[&str]| {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        fleet_relay(tmp.path(), name, &cluster, ("sources", &[]), |c| {
            c.source(Source::new("s1", "/s1"))
                .source(Source::new("s2", "/s2"))
                .destination(Dest::new("both", &both.url("/hook")).sources(sources))
                .destination(
                    Dest::new("only2", &only2.url("/hook"))
                        .sources(["s2"])
                        .set("ordering", "unordered"),
                )
        })
    };
    // A relay is ready before its worker has set the consumer's sources,
    // so each start waits for that (what is stored before goes by the
    // older list: as with sled, a source added to a destination counts
    // from its worker's start).
    let nats = async_nats::connect(cluster.urls()[0].as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let sources_set = |n: usize| {
        let js = js.clone();
        wait_for(
            "the consumer's sources",
            Duration::from_secs(20),
            move || {
                let js = js.clone();
                async move {
                    let stream = js.get_stream("sources").await.ok()?;
                    let info = stream.consumer_info("sources_both").await.ok()?;
                    (info.config.filter_subjects.len() == n).then_some(())
                }
            },
        )
    };
    let a = relay(&config("a", &["s1"])).start().await;
    sources_set(1).await;
    let b = relay(&config("b", &["s1", "s2"])).start().await;
    sources_set(2).await;
    let http = client();
    let send = |to: &RelayProcess, source: &str, n: usize| {
        let url = format!("http://{}/{source}", to.ingest);
        let http = http.clone();
        async move {
            let r = post(&http, &url, &[], format!("{{\"n\":{n}}}"))
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json["seq"].as_u64().expect("a seq")
        }
    };
    // Whichever relay pulls them, s2's messages reach `both`: a does not
    // drop them for its older list.
    let mut s2_seqs = Vec::new();
    for n in 0..6 {
        send(&a, "s1", n).await;
        s2_seqs.push(send(&a, "s2", n).await);
    }
    wait_until("all twelve at both", Duration::from_secs(20), || {
        both.count() >= 12
    })
    .await;
    wait_until("six at only2", Duration::from_secs(20), || {
        only2.count() >= 6
    })
    .await;

    // A destination's lag counts its own sources' messages only.
    admin_post_ok(&a, "/api/v1/destinations/both/pause").await;
    admin_post_ok(&a, "/api/v1/destinations/only2/pause").await;
    let last_s1 = {
        let mut last = 0;
        for n in 0..3 {
            last = send(&b, "s1", n).await;
        }
        last
    };
    let lag = |dest: &'static str| {
        let url = a.admin_url(&format!("/api/v1/destinations/{dest}"));
        async move { get(&url).await.json["lag"].as_u64() }
    };
    wait_for("both's lag of 3", Duration::from_secs(10), || async {
        (lag("both").await == Some(3)).then_some(())
    })
    .await;
    assert_eq!(lag("only2").await, Some(0), "only2 is owed none of s1's");
    admin_post_ok(&a, "/api/v1/destinations/both/resume").await;
    admin_post_ok(&a, "/api/v1/destinations/only2/resume").await;

    // A bounded replay ending on another source's message ends: only2
    // gets its range again, then what comes next, and nothing more.
    let (status, body) = json_request(
        http::Method::POST,
        &b.admin_url("/api/v1/destinations/only2/replay"),
        Some(&serde_json::json!({ "from_seq": s2_seqs[3], "to_seq": last_s1 })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("s2's last three again", Duration::from_secs(20), || {
        only2.count() >= 9
    })
    .await;
    let next = send(&b, "s2", 99).await;
    wait_until("the next s2 message", Duration::from_secs(20), || {
        only2.count() >= 10
    })
    .await;
    let seqs: Vec<u64> = arrivals(&only2).into_iter().map(|x| x.seq).collect();
    let mut want = s2_seqs.clone();
    want.extend_from_slice(&s2_seqs[3..]);
    want.push(next);
    assert_eq!(seqs, want, "the range again, then on");
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_destinations_dead_letters_are_redelivered_with_nothing_else_in_flight_anywhere() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let down = Arc::new(AtomicBool::new(true));
    // Which relay (its own path) sent the head, as it arrives.
    let head_from = Arc::new(Mutex::new(None::<String>));
    let (flag, seen) = (down.clone(), head_from.clone());
    // Every answer takes a while, so two requests at once would overlap
    // long enough to be seen.
    let app = Arc::new(
        Receiver::scripted(Arc::new(move |r: &Received| {
            if r.text().contains("head") {
                *seen.lock().unwrap() = Some(r.path.clone());
                return (StatusCode::OK, vec![], Duration::from_secs(3));
            }
            let status = if flag.load(SeqCst) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            (status, vec![], Duration::from_millis(200))
        }))
        .await,
    );
    let config = |name: &str| {
        fleet_relay(tmp.path(), name, &cluster, ("alone", &[]), |c| {
            c.source(Source::new("s", "/s")).destination(
                Dest::new("d", &app.url(&format!("/{name}")))
                    .sources(["s"])
                    .set("timeout", "5s")
                    .retry(Retry::every("50ms", "50ms").attempts(2)),
            )
        })
    };
    let a = relay(&config("a")).start().await;
    let b = relay(&config("b")).start().await;
    let http = client();
    for body in ["dead-1", "dead-2"] {
        let r = post(&http, &format!("http://{}/s", a.ingest), &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
    let list_url = a.admin_url("/api/v1/destinations/d/dead-letters");
    wait_for("two dead letters", Duration::from_secs(30), || async {
        let list = get(&list_url).await.json;
        (list.as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    down.store(false, SeqCst);
    let r = post(&http, &format!("http://{}/s", a.ingest), &[], "head")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let holder = wait_for("the head in flight", Duration::from_secs(10), || async {
        head_from.lock().unwrap().clone()
    })
    .await;
    // Asked of the relay that does not hold the head.
    let other = if holder == "/a" { &b } else { &a };
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done, app) = (most.clone(), done.clone(), app.clone());
        tokio::spawn(async move {
            while !done.load(SeqCst) {
                let now = app.arrivals().saturating_sub(app.count());
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let url = other.admin_url("/api/v1/destinations/d/dead-letters/redeliver");
    let r = call(http::Method::POST, &url).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    wait_for("no dead letters left", Duration::from_secs(30), || async {
        let list = get(&list_url).await.json;
        (list.as_array().map(Vec::len) == Some(0)).then_some(())
    })
    .await;
    wait_until("the head answered", Duration::from_secs(10), || {
        app.all().iter().any(|(r, _)| r.text() == "head")
    })
    .await;
    done.store(true, SeqCst);
    sampler.await.unwrap();
    assert_eq!(most.load(SeqCst), 1, "one request at a time, fleet-wide");
    // (Its health may say "failing" for a second: it is shared once a second.)
    let view = get(&a.admin_url("/api/v1/destinations/d")).await.json;
    assert_ne!(view["state"], "paused", "no pause is left: {view}");
    a.assert_no_panics("after the run");
    b.assert_no_panics("after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_tells_a_dead_letter_above_the_cursor_from_a_pending_message() {
    let Some(bin) = nats::server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 1);
    let app = Receiver::scripted(Arc::new(|r: &Received| {
        if r.text().contains("slow") {
            (StatusCode::OK, vec![], Duration::from_secs(8))
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, vec![], Duration::ZERO)
        }
    }))
    .await;
    let config = fleet_relay(tmp.path(), "a", &cluster, ("browse", &[]), |c| {
        c.source(Source::new("s", "/s")).destination(
            Dest::new("u", &app.url("/hook"))
                .sources(["s"])
                .set("ordering", "unordered")
                .set("max_in_flight", 4)
                .retry(Retry::every("10ms", "10ms").attempts(1)),
        )
    });
    let a = relay(&config).start().await;
    let http = client();
    let mut seqs = Vec::new();
    for body in ["slow", "bad"] {
        let r = post(&http, &format!("http://{}/s", a.ingest), &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        seqs.push(r.json["seq"].as_u64().unwrap());
    }
    let (slow, bad) = (seqs[0], seqs[1]);
    let list_url = a.admin_url("/api/v1/destinations/u/dead-letters");
    wait_for("the dead letter", Duration::from_secs(10), || async {
        let list = get(&list_url).await.json;
        (list.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    // `slow` is still in flight: the cursor is below both.
    let page = |status: &str| {
        let url = a.admin_url(&format!("/ui/messages?destination=u&status={status}"));
        async move { get(&url).await.text() }
    };
    let link = |seq: u64| format!("/ui/messages/{seq}\"");
    let dead = page("dead").await;
    assert!(dead.contains(&link(bad)), "{dead}");
    assert!(!dead.contains(&link(slow)), "{dead}");
    let pending = page("pending").await;
    assert!(pending.contains(&link(slow)), "{pending}");
    assert!(!pending.contains(&link(bad)), "{pending}");
    a.assert_no_panics("after the run");
}
