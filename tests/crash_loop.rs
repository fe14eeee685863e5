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

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Concurrent load clients, each in a closed loop.
const CLIENTS: usize = 8;
/// Attempts from this one on always succeed, so nothing is ever dead-lettered
/// (the default `max_attempts` is 20).
const FLAKY_ATTEMPTS: u32 = 10;
/// How long a relay may take to start (recovery included) on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long one inbound request may go unanswered by a live relay.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

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

/// One request as a receiver saw it, in arrival order.
#[derive(Debug, Clone)]
struct Arrival {
    seq: u64,
    id: String,
    body: Bytes,
    /// Answered 2xx.
    ok: bool,
}

/// A destination: its config and the receiver behind it.
struct Dest {
    name: &'static str,
    strict: bool,
    behaviour: Behaviour,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Arrival>>>,
}

/// splitmix64: a fixed pseudo-random function of its input.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn refuses(seed: u64, dest: usize, seq: u64, attempt: u32) -> bool {
    attempt < FLAKY_ATTEMPTS
        && mix(seed ^ mix((dest as u64) << 56 ^ seq << 8 ^ u64::from(attempt))) % 8 == 0
}

/// Starts a receiver on a port it keeps for the whole test, so the
/// destination URLs stay valid across relay restarts.
async fn receiver(
    index: usize,
    behaviour: Behaviour,
    seed: u64,
    slow: Arc<AtomicBool>,
    stop: CancellationToken,
) -> (SocketAddr, Arc<Mutex<Vec<Arrival>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                _ = stop.cancelled() => return,
            };
            let (l, slow, stop) = (l.clone(), slow.clone(), stop.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (l, slow) = (l.clone(), slow.clone());
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let seq: u64 = header("x-hookrelay-seq").parse().unwrap_or(0);
                        let attempt: u32 = header("x-hookrelay-attempt").parse().unwrap_or(0);
                        let id = header("webhook-id");
                        let Ok(body) = req.into_body().collect().await else {
                            // The relay died mid-request: it never saw an answer.
                            return Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())));
                        };
                        let ok =
                            !(behaviour == Behaviour::Flaky && refuses(seed, index, seq, attempt));
                        l.lock().unwrap().push(Arrival {
                            seq,
                            id,
                            body: body.to_bytes(),
                            ok,
                        });
                        if behaviour == Behaviour::Slow && slow.load(SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        if !ok {
                            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! { _ = conn => {}, _ = stop.cancelled() => {} }
            });
        }
    });
    (addr, log)
}

// ------------------------------------------------------------- the relay

/// `hookrelay serve` as a child process; its stderr is kept for diagnostics.
struct Relay {
    child: Child,
    /// Ingest and admin addresses, from the "listening" line.
    addrs: tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, SocketAddr)>,
    ingest: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Relay {
    /// Starts the binary without waiting for it.
    fn spawn(config: &Path) -> Relay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,hookrelay::delivery=warn")
            .env_remove("HOOKRELAY_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hookrelay");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, addrs) = tokio::sync::mpsc::unbounded_channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("hookrelay listening") {
                    let field = |name: &str| -> Option<SocketAddr> {
                        line.split(&format!("{name}="))
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse()
                            .ok()
                    };
                    if let (Some(i), Some(a)) = (field("ingest"), field("admin")) {
                        let _ = tx.send((i, a));
                    }
                }
                let mut keep = keep.lock().unwrap();
                if keep.len() == 200 {
                    keep.pop_front();
                }
                keep.push_back(line);
            }
        });
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        Relay {
            child,
            addrs,
            ingest: unknown,
            admin: unknown,
            stderr,
        }
    }

    /// Whether the relay's stderr (its last 200 lines) has a line containing `what`.
    fn logged(&self, what: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// Starts the binary and waits for its "listening" line (or its death).
    async fn start(config: &Path) -> Relay {
        let mut relay = Relay::spawn(config);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok((ingest, admin)) = relay.addrs.try_recv() {
                relay.ingest = ingest;
                relay.admin = admin;
                return relay;
            }
            if let Some(status) = relay.child.try_wait().unwrap() {
                // Let the reader thread catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "relay exited at start with {status}:\n{}",
                    tail(&relay.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "relay did not start within {START_DEADLINE:?}:\n{}",
                tail(&relay.stderr)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap the relay");
    }

    /// The relay's view of every destination.
    async fn destinations(&self) -> Vec<serde_json::Value> {
        let a = harness::get(&format!("http://{}/api/v1/destinations", self.admin)).await;
        assert_eq!(a.status, StatusCode::OK);
        a.json.as_array().expect("a list of destinations").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap();
    let skip = lines.len().saturating_sub(40);
    lines
        .iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- load

/// What the senders know: the answers to the messages acked.
#[derive(Default)]
struct Ledger {
    /// (client, n) → (seq, id) from the relay's `200`.
    acked: HashMap<(usize, u64), (u64, String)>,
    /// Sends that got no `200` (the relay died, or answered something else).
    unanswered: usize,
    /// Resends answered `"duplicate": true`: the unanswered send had been stored.
    stored_anyway: usize,
    /// Non-200 answers by status.
    refused: BTreeMap<u16, usize>,
}

/// One sender's place: the next new message, and the one to send again
/// first because its last send got no answer.
#[derive(Default)]
struct Sender {
    next: u64,
    pending: Option<u64>,
}

fn body_of(client: usize, n: u64) -> String {
    format!("{{\"client\":{client},\"n\":{n}}}")
}

fn parse_body(body: &[u8]) -> Option<(usize, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((v["client"].as_u64()? as usize, v["n"].as_u64()?))
}

/// One sender, as a provider behaves: message n+1 only once n was answered
/// `200`; a message without an answer is sent again (same body, same
/// delivery id) before anything new. Stops at `stop` or at the first send
/// without an answer (the relay is gone); with `once`, after one send.
async fn load_client(
    k: usize,
    url: String,
    sender: Arc<Mutex<Sender>>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    once: bool,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .retry_canceled_requests(false)
        .build_http();
    while !stop.load(SeqCst) {
        let (n, resend) = {
            let mut s = sender.lock().unwrap();
            match s.pending.take() {
                Some(n) => (n, true),
                None => {
                    s.next += 1;
                    (s.next - 1, false)
                }
            }
        };
        let req = Request::post(&url)
            .header("content-type", "application/json")
            .header("x-delivery-id", format!("c{k}-{n}"))
            .body(Full::new(Bytes::from(body_of(k, n))))
            .unwrap();
        let answer = tokio::time::timeout(ANSWER_DEADLINE, async {
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        })
        .await
        .unwrap_or_else(|_| {
            panic!("client {k}: no answer to message {n} within {ANSWER_DEADLINE:?}")
        });
        let mut ledger = ledger.lock().unwrap();
        match answer {
            Ok((StatusCode::OK, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
                let seq = v["seq"].as_u64().expect("seq in the answer");
                let id = v["id"].as_str().expect("id in the answer").to_string();
                if v["duplicate"] == true {
                    assert!(resend, "c{k}-{n}: a first send answered as a duplicate");
                    ledger.stored_anyway += 1;
                }
                ledger.acked.insert((k, n), (seq, id));
            }
            other => {
                sender.lock().unwrap().pending = Some(n);
                ledger.unanswered += 1;
                if let Ok((status, _)) = other {
                    *ledger.refused.entry(status.as_u16()).or_default() += 1;
                }
                return;
            }
        }
        if once {
            return;
        }
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

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, not {v:?}")),
    )
}

fn write_config(dir: &Path, dests: &[Dest]) -> std::path::PathBuf {
    let mut text = String::from(
        r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[storage]
data_dir = "data"
durability = "fsync"

[[source]]
name = "load"
path = "/in"
dedup_header = "x-delivery-id"
"#,
    );
    for d in dests {
        let ordering = if d.strict {
            "ordering = \"strict\""
        } else {
            "ordering = \"unordered\"\nmax_in_flight = 4"
        };
        text.push_str(&format!(
            "\n[[destination]]\nname = \"{}\"\nurl = \"http://{}/hook\"\nsources = [\"load\"]\n{ordering}\nretry = {{ initial = \"5ms\", max_interval = \"20ms\" }}\n",
            d.name, d.addr
        ));
    }
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_acknowledged_webhook_and_keeps_order() {
    let cycles = env_u64("CRASH_LOOP_CYCLES").unwrap_or(3) as usize;
    let seed = env_u64("CRASH_LOOP_SEED").unwrap_or_else(rand::random);
    println!("crash loop: cycles={cycles} seed={seed} (rerun with CRASH_LOOP_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().unwrap();
    let stop_receivers = CancellationToken::new();
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
        let (addr, log) = receiver(i, behaviour, seed, slow.clone(), stop_receivers.clone()).await;
        dests.push(Dest {
            name,
            strict,
            behaviour,
            addr,
            log,
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
            let mut relay = Relay::spawn(&config);
            let delay = rng.random_range(0..=last_start.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let how = match relay.addrs.try_recv() {
                Ok(_) => "kill -9 (already listening)",
                Err(_) => "kill -9 while starting",
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
        let mut relay = Relay::start(&config).await;
        last_start = cycle_start.elapsed();
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://{}/in", relay.ingest);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                tokio::spawn(load_client(
                    k,
                    url.clone(),
                    senders[k].clone(),
                    stop.clone(),
                    ledger.clone(),
                    false,
                ))
            })
            .collect();
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
            _ => relay
                .destinations()
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
                harness::sigterm(&relay.child);
                tokio::time::sleep(Duration::from_millis(extra)).await;
                let exited = relay.child.try_wait().unwrap().is_some();
                relay.kill9();
                if exited {
                    "SIGTERM (exited before the kill -9)"
                } else {
                    "SIGTERM, kill -9"
                }
            }
            Mode::Terminate => {
                harness::sigterm(&relay.child);
                let code = harness::wait_exit(&mut relay.child, Duration::from_secs(60));
                assert_eq!(code, 0, "SIGTERM exit code:\n{}", tail(&relay.stderr));
                // Let the reader thread catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(
                    relay.logged("store checkpointed"),
                    "a clean stop checkpoints the store:\n{}",
                    tail(&relay.stderr)
                );
                "SIGTERM"
            }
            Mode::KillWhileCheckpointing => {
                harness::sigterm(&relay.child);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !relay.logged("checkpointing the store")
                    && relay.child.try_wait().unwrap().is_none()
                {
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint within 60 s of SIGTERM:\n{}",
                        tail(&relay.stderr)
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_micros(extra)).await;
                let exited = relay.child.try_wait().unwrap().is_some();
                relay.kill9();
                if exited {
                    "SIGTERM (exited before the kill -9)"
                } else {
                    "SIGTERM, kill -9 in the checkpoint"
                }
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
    let relay = Relay::start(&config).await;
    let drain_started = Instant::now();
    let url = format!("http://{}/in", relay.ingest);
    for (k, sender) in senders.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        load_client(k, url.clone(), sender.clone(), stop, ledger.clone(), true).await;
        assert!(
            sender.lock().unwrap().pending.is_none(),
            "client {k}: a live relay answered"
        );
    }
    let sent: Vec<u64> = senders.iter().map(|s| s.lock().unwrap().next).collect();
    let (acked, unanswered, stored_anyway, refused) = {
        let l = ledger.lock().unwrap();
        (
            l.acked.clone(),
            l.unanswered,
            l.stored_anyway,
            l.refused.clone(),
        )
    };
    assert_eq!(
        acked.len() as u64,
        sent.iter().sum::<u64>(),
        "every message sent was acked in the end"
    );
    let deadline = Duration::from_secs(120 + 3 * cycles as u64);
    let head = loop {
        let list = relay.destinations().await;
        let head = list[0]["head"].as_u64().unwrap();
        let caught_up = list
            .iter()
            .all(|d| d["lag"] == 0 && d["in_flight"] == 0 && d["head"] == head);
        if caught_up && dests.iter().all(|d| missing(d, &acked).is_empty()) {
            for d in &list {
                assert_eq!(d["dead_letters"], 0, "nothing dead-lettered: {d}");
            }
            break head;
        }
        if drain_started.elapsed() > deadline {
            for d in &dests {
                let m = missing(d, &acked);
                eprintln!(
                    "{}: {} acked webhooks missing, e.g. {:?}",
                    d.name,
                    m.len(),
                    m.iter().take(5).collect::<Vec<_>>()
                );
            }
            panic!(
                "not caught up within {deadline:?} (seed {seed}): {list:#?}\n{}",
                tail(&relay.stderr)
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
    let mut relay = relay;
    harness::sigterm(&relay.child);
    assert_eq!(
        harness::wait_exit(&mut relay.child, Duration::from_secs(60)),
        0,
        "final SIGTERM:\n{}",
        tail(&relay.stderr)
    );
    stop_receivers.cancel();

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
        let r = check_destination(d, &acked, &sent, head, seed);
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

/// Acked webhooks that have not (yet) been answered 2xx by `d`'s receiver.
fn missing(d: &Dest, acked: &HashMap<(usize, u64), (u64, String)>) -> Vec<(usize, u64)> {
    let log = d.log.lock().unwrap();
    let got: std::collections::HashSet<&[u8]> = log
        .iter()
        .filter(|a| a.ok)
        .map(|a| a.body.as_ref())
        .collect();
    acked
        .keys()
        .filter(|(k, n)| !got.contains(body_of(*k, *n).as_bytes()))
        .copied()
        .collect()
}

struct DestReport {
    requests: usize,
    refused: usize,
    delivered: usize,
}

/// Checks everything `d`'s receiver saw against what was sent and acked and
/// against the final log head.
fn check_destination(
    d: &Dest,
    acked: &HashMap<(usize, u64), (u64, String)>,
    sent: &[u64],
    head: u64,
    seed: u64,
) -> DestReport {
    let log = d.log.lock().unwrap();
    let name = d.name;
    // seq → (body, id) as first seen, and body → seq: one message per seq, ever.
    let mut by_seq: HashMap<u64, (Bytes, String)> = HashMap::new();
    let mut seq_of: HashMap<Bytes, u64> = HashMap::new();
    // Strict: the seqs delivered so far are exactly 1..=prefix.
    let mut prefix = 0u64;
    let mut first: HashMap<u64, usize> = HashMap::new();
    // Per sender, the n of its last first delivery.
    let mut last_n: HashMap<usize, u64> = HashMap::new();
    let mut delivered = 0;
    for (i, a) in log.iter().enumerate() {
        let ctx = || format!("{name}, arrival #{i} (seq {}, seed {seed})", a.seq);
        // (b) nothing arrives that was never sent.
        let (k, n) = parse_body(&a.body)
            .unwrap_or_else(|| panic!("{}: a body nobody sent: {:?}", ctx(), a.body));
        assert!(
            k < CLIENTS && n < sent[k],
            "{}: c{k}-{n} was never sent",
            ctx()
        );
        assert!(
            a.seq >= 1 && a.seq <= head,
            "{}: seq outside 1..={head}",
            ctx()
        );
        let (body, id) = by_seq
            .entry(a.seq)
            .or_insert_with(|| (a.body.clone(), a.id.clone()));
        assert_eq!(body, &a.body, "{}: one seq, two bodies", ctx());
        assert_eq!(id, &a.id, "{}: one seq, two webhook-ids", ctx());
        let s = *seq_of.entry(a.body.clone()).or_insert(a.seq);
        assert_eq!(s, a.seq, "{}: one message under two seqs", ctx());
        if let Some((seq, id)) = acked.get(&(k, n)) {
            assert_eq!(
                (a.seq, &a.id),
                (*seq, id),
                "{}: not the acked seq and id",
                ctx()
            );
        }
        if d.strict {
            // Strict: nothing is sent past the first message not yet delivered.
            assert!(
                a.seq <= prefix + 1,
                "{}: sent while seq {} was not yet delivered",
                ctx(),
                prefix + 1
            );
        }
        if !a.ok {
            continue;
        }
        delivered += 1;
        if first.contains_key(&a.seq) {
            continue;
        }
        first.insert(a.seq, i);
        if d.strict {
            // (c) first deliveries in log order, without gaps...
            assert_eq!(
                a.seq,
                prefix + 1,
                "{}: first deliveries out of order",
                ctx()
            );
            prefix = a.seq;
            // ...so each sender's messages first arrive in the order it sent them.
            if let Some(prev) = last_n.insert(k, n) {
                assert!(
                    prev < n,
                    "{}: c{k}-{n} first delivered after c{k}-{prev}",
                    ctx()
                );
            }
        }
    }
    // (a) every stored message, acked ones included, was delivered.
    for seq in 1..=head {
        assert!(
            first.contains_key(&seq),
            "{name}: seq {seq} never delivered (seed {seed})"
        );
    }
    for ((k, n), (seq, _)) in acked {
        assert!(
            first.contains_key(seq),
            "{name}: acked c{k}-{n} (seq {seq}) never delivered (seed {seed})"
        );
    }
    DestReport {
        requests: log.len(),
        refused: log.iter().filter(|a| !a.ok).count(),
        delivered,
    }
}
