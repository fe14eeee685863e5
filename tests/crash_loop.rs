//! Crash loop: the real relay binary under concurrent load, killed with
//! `kill -9` at random moments for K cycles and restarted on the same data
//! dir, against real receivers that stay up throughout.
//!
//! Eight senders behave like providers: each sends its message n+1 only once
//! n was answered `200`, and sends an unanswered message again (same body,
//! same delivery id, which the source uses as its dedup key) after the
//! restart. Cycles end in turn with a kill under load, in a delivery backlog,
//! right after start, during sled recovery, during a graceful stop, or (now
//! and then) with a clean `SIGTERM`. At the end, per destination:
//!
//! - every acknowledged webhook arrived, with the seq and `webhook-id` it was
//!   acknowledged with, and every stored seq arrived;
//! - nothing arrived that was never sent, a seq never carried two bodies or
//!   ids, and a webhook never came under two seqs (not even one resent after
//!   a crash);
//! - strict destinations: the first deliveries came in log order without gaps
//!   (so each sender's messages first arrived in the order it sent them), and
//!   no request ever went past the first seq not yet delivered.
//!
//! Redeliveries after a kill are counted and allowed (at-least-once).
//!
//! - `CRASH_LOOP_CYCLES` (default 3): how many start/stop cycles;
//! - `CRASH_LOOP_SEED` (default random, always printed): the kill moments and
//!   which attempts the flaky receivers refuse.
//!
//! The long run: `CRASH_LOOP_CYCLES=100 cargo test --release --test crash_loop -- --nocapture`.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::load::{
    arrivals, check_destination, destinations, env_u64, finish_sending, missing, mix, relay,
    spawn_clients, Arrival, Ledger, Sender, Tally, ANSWER_DEADLINE,
};
use support::*;

/// Concurrent load clients, each in a closed loop.
const CLIENTS: usize = 8;
/// Attempts from this one on always succeed, so nothing is ever dead-lettered
/// (the default `max_attempts` is 20).
const FLAKY_ATTEMPTS: u32 = 10;

// ---------------------------------------------------------------- receivers

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Always 200 at once.
    Fast,
    /// 500 for about one attempt in eight (decided by seed, seq and attempt
    /// number), so retries are in flight when the relay dies.
    Flaky,
    /// 200, but after 5 ms while the test asks for a backlog.
    Slow,
}

/// A destination: its config and the receiver behind it, on a port it keeps
/// for the whole test, so the destination URLs stay valid across restarts.
struct Target {
    name: &'static str,
    strict: bool,
    behaviour: Behaviour,
    rx: Receiver,
}

impl Target {
    /// Everything the receiver answered so far.
    fn arrivals(&self) -> Vec<Arrival> {
        arrivals(&self.rx)
    }
}

fn refuses(seed: u64, dest: usize, seq: u64, attempt: u32) -> bool {
    attempt < FLAKY_ATTEMPTS
        && mix(seed ^ mix((dest as u64) << 56 ^ seq << 8 ^ u64::from(attempt))) % 8 == 0
}

/// A receiver behaving as `behaviour` for destination number `index`.
async fn receiver(
    index: usize,
    behaviour: Behaviour,
    seed: u64,
    slow: Arc<AtomicBool>,
) -> Receiver {
    Receiver::scripted(Arc::new(move |r| {
        let number = |name: &str| r.header(name).and_then(|v| v.parse().ok());
        let (seq, attempt) = (
            number("x-hookrelay-seq").unwrap_or(0),
            number("x-hookrelay-attempt").unwrap_or(0),
        );
        let refused = behaviour == Behaviour::Flaky && refuses(seed, index, seq, attempt as u32);
        let delay = if behaviour == Behaviour::Slow && slow.load(SeqCst) {
            Duration::from_millis(5)
        } else {
            Duration::ZERO
        };
        let status = if refused {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, vec![], delay)
    }))
    .await
}

// ------------------------------------------------------------- the relay

/// `kill -9` after a SIGTERM; `how` the cycle ended, or that the relay had
/// already exited.
fn kill_unless_exited(relay: &mut RelayProcess, how: &'static str) -> &'static str {
    let exited = relay.exited();
    relay.kill9();
    if exited {
        "SIGTERM (exited before the kill -9)"
    } else {
        how
    }
}

// ---------------------------------------------------------------- cycles

/// How a cycle ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `kill -9` while the senders are busy.
    KillUnderLoad,
    /// Senders stop with a slow destination far behind; `kill -9` while the
    /// relay works through the backlog.
    KillInBacklog,
    /// `kill -9` within moments of the relay's start (recovery, first resends).
    KillAtStart,
    /// `kill -9` before the relay is even listening (while sled recovers),
    /// at a random point of a typical start.
    KillDuringRecovery,
    /// `SIGTERM` under load, then `kill -9` during the graceful stop.
    KillWhileStopping,
    /// A clean `SIGTERM` stop under load (exit 0 expected).
    Terminate,
    /// `SIGTERM` under load, then `kill -9` once the stop's store checkpoint
    /// (a reopen of the store) has begun.
    KillWhileCheckpointing,
}

/// The modes in turn; the first cycles (all a CI run does) are kills under
/// load, in a backlog and during the checkpoint of a clean stop.
const ROTATION: [Mode; 12] = [
    Mode::KillUnderLoad,
    Mode::KillInBacklog,
    Mode::KillWhileCheckpointing,
    Mode::KillAtStart,
    Mode::KillUnderLoad,
    Mode::KillWhileStopping,
    Mode::KillInBacklog,
    Mode::KillDuringRecovery,
    Mode::KillUnderLoad,
    Mode::Terminate,
    Mode::KillAtStart,
    Mode::KillDuringRecovery,
];

fn write_config(dir: &Path, dests: &[Target]) -> std::path::PathBuf {
    let mut config = RelayConfig::new()
        .storage("durability", "fsync")
        .source(Source::new("load", "/in").set("dedup_header", "x-delivery-id"));
    for d in dests {
        let mut dest = Dest::new(d.name, &d.rx.url("/hook"))
            .sources(["load"])
            .retry(Retry::every("5ms", "20ms"));
        dest = if d.strict {
            dest.set("ordering", "strict")
        } else {
            dest.set("ordering", "unordered").set("max_in_flight", 4)
        };
        config = config.destination(dest);
    }
    config.write(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_acknowledged_webhook_and_keeps_order() {
    let cycles = env_u64("CRASH_LOOP_CYCLES").unwrap_or(3) as usize;
    let seed = env_u64("CRASH_LOOP_SEED").unwrap_or_else(rand::random);
    println!("crash loop: cycles={cycles} seed={seed} (rerun with CRASH_LOOP_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(false));
    let mut dests = Vec::new();
    for (i, (name, strict, behaviour)) in [
        ("fast", true, Behaviour::Fast),
        ("flaky", true, Behaviour::Flaky),
        ("slow", true, Behaviour::Slow),
        ("spread", false, Behaviour::Flaky),
    ]
    .into_iter()
    .enumerate()
    {
        let rx = receiver(i, behaviour, seed, slow.clone()).await;
        dests.push(Target {
            name,
            strict,
            behaviour,
            rx,
        });
    }
    let config = write_config(tmp.path(), &dests);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let senders: Vec<Arc<Mutex<Sender>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut modes: BTreeMap<&'static str, usize> = BTreeMap::new();
    // How long the last start took, for kills during a start.
    let mut last_start = Duration::from_millis(50);

    for cycle in 0..cycles {
        let mode = ROTATION[cycle % ROTATION.len()];
        let cycle_start = Instant::now();
        if mode == Mode::KillDuringRecovery {
            let mut relay = relay(&config).spawn();
            let delay = rng.random_range(0..=last_start.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let how = if relay.is_ready() {
                "kill -9 (already listening)"
            } else {
                "kill -9 while starting"
            };
            relay.kill9();
            *modes.entry(how).or_default() += 1;
            println!(
                "cycle {cycle:>3}: {mode:?} after {delay} ms of a {} ms start: {how}",
                last_start.as_millis()
            );
            continue;
        }
        let acked_before = ledger.lock().unwrap().acked.len();
        let mut relay = relay(&config).start().await;
        last_start = cycle_start.elapsed();
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://{}/in", relay.ingest);
        let clients = spawn_clients(&url, &senders, &stop, &ledger);
        let (delay, extra) = match mode {
            Mode::KillAtStart => (rng.random_range(0..=30), 0),
            Mode::KillInBacklog => (rng.random_range(200..=600), rng.random_range(0..=300)),
            Mode::KillWhileStopping => (rng.random_range(50..=500), rng.random_range(0..=20)),
            // Microseconds after the checkpoint's first log line.
            Mode::KillWhileCheckpointing => {
                (rng.random_range(50..=500), rng.random_range(0..=3000))
            }
            _ => (rng.random_range(50..=500), 0),
        };
        if mode == Mode::KillInBacklog {
            slow.store(true, SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if mode == Mode::KillInBacklog {
            stop.store(true, SeqCst);
            for c in &clients {
                while !c.is_finished() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(extra)).await;
        }
        // How far behind each destination is at the moment of the kill.
        let lags: Vec<u64> = match mode {
            Mode::KillAtStart => vec![],
            _ => destinations(&relay)
                .await
                .iter()
                .map(|d| d["lag"].as_u64().unwrap())
                .collect(),
        };
        let how = match mode {
            Mode::KillUnderLoad | Mode::KillAtStart | Mode::KillDuringRecovery => {
                relay.kill9();
                "kill -9"
            }
            Mode::KillInBacklog => {
                relay.kill9();
                slow.store(false, SeqCst);
                "kill -9"
            }
            Mode::KillWhileStopping => {
                relay.sigterm();
                tokio::time::sleep(Duration::from_millis(extra)).await;
                kill_unless_exited(&mut relay, "SIGTERM, kill -9")
            }
            Mode::Terminate => {
                relay.sigterm();
                let code = relay.wait_exit(Duration::from_secs(60));
                assert_eq!(code, 0, "SIGTERM exit code:\n{}", relay.tail(40));
                assert!(
                    relay.logged("store checkpointed"),
                    "a clean stop checkpoints the store:\n{}",
                    relay.tail(40)
                );
                "SIGTERM"
            }
            Mode::KillWhileCheckpointing => {
                relay.sigterm();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !relay.logged("checkpointing the store") && !relay.exited() {
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint within 60 s of SIGTERM:\n{}",
                        relay.tail(40)
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_micros(extra)).await;
                kill_unless_exited(&mut relay, "SIGTERM, kill -9 in the checkpoint")
            }
        };
        *modes.entry(how).or_default() += 1;
        stop.store(true, SeqCst);
        for c in clients {
            tokio::time::timeout(ANSWER_DEADLINE * 2, c)
                .await
                .expect("load clients stop once the relay is gone")
                .expect("load client panicked");
        }
        let acked_now = ledger.lock().unwrap().acked.len();
        let extra_unit = if mode == Mode::KillWhileCheckpointing {
            "µs"
        } else {
            "ms"
        };
        println!(
            "cycle {cycle:>3}: {mode:?} after {delay} ms + {extra} {extra_unit}: {how} with lags {lags:?}; acked {} (total {acked_now}); {:.2}s",
            acked_now - acked_before,
            cycle_start.elapsed().as_secs_f64()
        );
    }

    // The last start: what the last kill left unanswered is sent once more,
    // so every message ever sent is acknowledged, and then everything must
    // arrive everywhere.
    let mut relay = relay(&config).start().await;
    let drain_started = Instant::now();
    let url = format!("http://{}/in", relay.ingest);
    let Tally {
        sent,
        acked,
        unanswered,
        stored_anyway,
        refused,
    } = finish_sending(&url, &senders, &ledger).await;
    let deadline = Duration::from_secs(120 + 3 * cycles as u64);
    let head = loop {
        let list = destinations(&relay).await;
        let head = list[0]["head"].as_u64().unwrap();
        let caught_up = list
            .iter()
            .all(|d| d["lag"] == 0 && d["in_flight"] == 0 && d["head"] == head);
        if caught_up
            && dests
                .iter()
                .all(|d| missing(&d.arrivals(), &acked).is_empty())
        {
            for d in &list {
                assert_eq!(d["dead_letters"], 0, "nothing dead-lettered: {d}");
            }
            break head;
        }
        if drain_started.elapsed() > deadline {
            for d in &dests {
                let m = missing(&d.arrivals(), &acked);
                eprintln!(
                    "{}: {} acked webhooks missing, e.g. {:?}",
                    d.name,
                    m.len(),
                    m.iter().take(5).collect::<Vec<_>>()
                );
            }
            panic!(
                "not caught up within {deadline:?} (seed {seed}): {list:#?}\n{}",
                relay.tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain = drain_started.elapsed();
    assert_eq!(
        head,
        acked.len() as u64,
        "every webhook stored exactly once, resends after a crash included"
    );
    relay.sigterm();
    assert_eq!(
        relay.wait_exit(Duration::from_secs(60)),
        0,
        "final SIGTERM:\n{}",
        relay.tail(40)
    );

    // What the senders were told is consistent: each ack its own seq, and a
    // sender's later message a later seq.
    let mut by_seq: HashMap<u64, (usize, u64)> = HashMap::new();
    for (&(k, n), (seq, _)) in &acked {
        if let Some(other) = by_seq.insert(*seq, (k, n)) {
            panic!("seq {seq} acknowledged for both {other:?} and {:?}: an acked webhook was lost and its seq reused (seed {seed})", (k, n));
        }
        assert!(*seq <= head, "acked seq {seq} above the head {head}");
    }
    for k in 0..CLIENTS {
        let mut seqs: Vec<(u64, u64)> = acked
            .iter()
            .filter(|((c, _), _)| *c == k)
            .map(|((_, n), (s, _))| (*n, *s))
            .collect();
        seqs.sort();
        for w in seqs.windows(2) {
            assert!(w[0].1 < w[1].1, "client {k}: acks out of order {w:?}");
        }
    }

    let mut report = Vec::new();
    for d in &dests {
        let r = check_destination(d.name, d.strict, &d.arrivals(), &acked, &sent, head, seed);
        report.push(format!(
            "{:>6} ({}, {:?}): {} requests, {} refused by the receiver, {} delivered, {} distinct, {} duplicates",
            d.name,
            if d.strict { "strict" } else { "unordered" },
            d.behaviour,
            r.requests,
            r.refused,
            r.delivered,
            head,
            r.delivered - head as usize,
        ));
    }
    println!("crash loop summary (seed {seed}):");
    println!("  cycles: {cycles} ({modes:?})");
    println!(
        "  webhooks: {} sent and in the end acknowledged; {unanswered} sends without an answer (resent; {stored_anyway} of them had been stored, answered as duplicates), non-200 answers {refused:?}",
        acked.len(),
    );
    println!("  log head: {head}");
    for line in report {
        println!("  {line}");
    }
    println!(
        "  time: {:.1}s in all, final drain {:.1}s",
        started.elapsed().as_secs_f64(),
        drain.as_secs_f64()
    );
}
