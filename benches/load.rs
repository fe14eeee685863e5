//! End-to-end load bench: the real relay in-process on a temp data dir, an
//! in-process sink, N webhooks over C keep-alive connections; in the same run a
//! bare hyper server answering 200 is driven the same way for comparison.
//!
//! cargo bench --bench load            # every scenario of BENCHMARKS.md (~10 min)
//! cargo bench --bench load -- [--requests N] [--connections C] [--body-bytes B]
//!     [--durability fsync|buffered] [--destinations D] [--rate R] [--backlog [--data-dir DIR]]
//!
//! `--rate R` switches to an open loop at R requests/s (for latency).
//! `--backlog` runs the relay as a child process with its destinations paused:
//! it ingests N, reports the relay's RSS with that backlog, times a restart
//! after `kill -9` and then a clean one, then resumes and times the drain.
//! `--data-dir DIR` (with `--backlog`) keeps its config and data in DIR.
//! Prints ingest req/s, ack p50/p99, delivered/s, end-to-end p50/p99 (send time
//! is stamped in the body), peak RSS of the process, and the ratio to bare hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

static START: OnceLock<Instant> = OnceLock::new();

fn nanos() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug, Clone)]
struct Args {
    requests: usize,
    connections: usize,
    body: usize,
    durability: String,
    destinations: usize,
    rate: Option<u64>,
    backlog: bool,
    data_dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        requests: 20_000,
        connections: 32,
        body: 1024,
        durability: "fsync".into(),
        destinations: 1,
        rate: None,
        backlog: false,
        data_dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--requests" => a.requests = val.parse().expect("--requests N"),
            "--connections" => a.connections = val.parse().expect("--connections C"),
            "--body-bytes" => a.body = val.parse().expect("--body-bytes B"),
            "--durability" => a.durability = val,
            "--destinations" => a.destinations = val.parse().expect("--destinations D"),
            "--rate" => a.rate = Some(val.parse().expect("--rate R")),
            "--data-dir" => a.data_dir = Some(val.into()),
            "--backlog" => {
                a.backlog = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Counts deliveries and records end-to-end latency from the stamped send time.
struct Sink {
    addr: SocketAddr,
    delivered: AtomicUsize,
    e2e: Mutex<Vec<u64>>,
    done: Notify,
    expected: usize,
}

async fn start_sink(expected: usize) -> Arc<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = Arc::new(Sink {
        addr: listener.local_addr().unwrap(),
        delivered: AtomicUsize::new(0),
        e2e: Mutex::new(Vec::with_capacity(expected)),
        done: Notify::new(),
        expected,
    });
    let s = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let sent: u64 = std::str::from_utf8(&body[..16.min(body.len())])
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        s.e2e.lock().unwrap().push(nanos().saturating_sub(sent));
                        if s.delivered.fetch_add(1, Ordering::SeqCst) + 1 == s.expected {
                            s.done.notify_one();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    sink
}

/// A bare hyper server that reads the body and answers 200.
async fn start_bare() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                    *r.status_mut() = StatusCode::OK;
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Drive {
    elapsed: Duration,
    acks: Vec<u64>,
    failed: usize,
}

fn body(size: usize) -> Bytes {
    let mut b = format!("{:016}", nanos()).into_bytes();
    b.resize(size.max(16), b'x');
    Bytes::from(b)
}

/// Sends `a.requests` POSTs over `a.connections` keep-alive connections.
async fn drive(addr: SocketAddr, path: &str, a: &Args) -> Drive {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = a
        .rate
        .map(|r| Duration::from_nanos(1_000_000_000 / r.max(1)));
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (next, failed, a, path) = (next.clone(), failed.clone(), a.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= a.requests {
                    break;
                }
                if let Some(iv) = interval {
                    // Open loop: request i is due at i * interval, whatever came before.
                    let due = started + iv * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let req = Request::post(format!("http://{addr}{path}"))
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(body(a.body)))
                    .unwrap();
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status() == StatusCode::OK;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            acks.push(t.elapsed().as_nanos() as u64);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            acks
        }));
    }
    let mut acks = Vec::with_capacity(a.requests);
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    Drive {
        elapsed: started.elapsed(),
        acks,
        failed: failed.load(Ordering::Relaxed),
    }
}

/// One line: ingest rate, ack latency and failures of a drive.
fn print_ingest(label: &str, rps: f64, d: &mut Drive) {
    println!(
        "{label:<11}: {:>9.0} req/s   ack p50 {:>8.2?} p99 {:>8.2?}   ({} failed)",
        rps,
        pct(&mut d.acks, 0.50),
        pct(&mut d.acks, 0.99),
        d.failed
    );
}

fn pct(v: &mut [u64], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Duration::from_nanos(v[i])
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn config_text(a: &Args, sink: SocketAddr) -> String {
    let mut t = format!(
        "[server]\nmax_body_bytes = \"1MiB\"\n[storage]\ndata_dir = \"data\"\ndurability = \"{}\"\n\n[[source]]\nname = \"bench\"\npath = \"/hooks/bench\"\n",
        a.durability
    );
    for d in 0..a.destinations {
        t.push_str(&format!(
            "\n[[destination]]\nname = \"d{d}\"\nurl = \"http://{sink}/d{d}\"\nsources = [\"bench\"]\n"
        ));
    }
    t
}

async fn run(a: Args) {
    START.get_or_init(Instant::now);
    let mode = match a.rate {
        Some(r) => format!("open loop at {r}/s"),
        None => "closed loop".into(),
    };
    println!(
        "scenario: {} requests, {} connections, {} B bodies, durability {}, {} destination(s), {mode}",
        a.requests, a.connections, a.body, a.durability, a.destinations
    );

    let bare = start_bare().await;
    let warm = Args {
        requests: 1000,
        ..a.clone()
    };
    drive(bare, "/", &warm).await;
    let mut b = drive(bare, "/", &a).await;
    let bare_rps = b.acks.len() as f64 / b.elapsed.as_secs_f64();
    println!(
        "bare hyper : {:>9.0} req/s   ack p50 {:>8.2?} p99 {:>8.2?}",
        bare_rps,
        pct(&mut b.acks, 0.50),
        pct(&mut b.acks, 0.99)
    );

    let tmp = tempfile::tempdir().unwrap();
    let expected = a.requests * a.destinations;
    let sink = start_sink(expected).await;
    let file = tmp.path().join("relay.toml");
    std::fs::write(&file, config_text(&a, sink.addr)).unwrap();
    let config = hookrelay::config::Config::load(&file).unwrap();
    let ingest = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ingest.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(hookrelay::run(
        config,
        hookrelay::Listeners { ingest, admin },
        shutdown.clone(),
    ));

    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter("debug").init();
    }
    let started = Instant::now();
    let mut r = drive(addr, "/hooks/bench", &a).await;
    let ingest_rps = r.acks.len() as f64 / r.elapsed.as_secs_f64();
    let wait = if expected == 0 {
        Ok(())
    } else {
        tokio::time::timeout(Duration::from_secs(600), sink.done.notified()).await
    };
    let delivered = sink.delivered.load(Ordering::SeqCst);
    let all_delivered = started.elapsed();
    if wait.is_err() || delivered < expected {
        println!("WARNING: only {delivered} of {expected} deliveries arrived");
    }
    let mut e2e = std::mem::take(&mut *sink.e2e.lock().unwrap());
    print_ingest("hookrelay", ingest_rps, &mut r);
    println!(
        "delivery   : {:>9.0} deliveries/s (all {} in {:.2?})   end-to-end p50 {:>8.2?} p99 {:>8.2?}",
        delivered as f64 / all_delivered.as_secs_f64(),
        delivered,
        all_delivered,
        pct(&mut e2e, 0.50),
        pct(&mut e2e, 0.99)
    );
    println!(
        "ratio      : hookrelay ingest / bare hyper = {:.2}",
        ingest_rps / bare_rps
    );
    println!(
        "peak RSS   : {:.1} MiB (whole bench process: relay, sink and load generator)",
        peak_rss_mib()
    );
    shutdown.cancel();
    let _ = relay.await;
}

/// A relay running as its own process, so its memory is its own.
struct Child {
    proc: std::process::Child,
    ingest: SocketAddr,
    admin: SocketAddr,
    /// From spawn until the relay wrote its ready file.
    ready_after: Duration,
}

fn spawn_relay(config: &std::path::Path) -> Child {
    let started = Instant::now();
    // BENCH_RELAY_BIN runs another build of the relay (one with
    // `serve --ready-file`), for before/after comparisons.
    let bin = std::env::var_os("BENCH_RELAY_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_hookrelay").into(),
        std::path::PathBuf::from,
    );
    // A relay killed with -9 leaves its ready file behind.
    let ready_file = config.with_file_name("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let mut proc = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .arg("--ready-file")
        .arg(&ready_file)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hookrelay");
    let deadline = started + Duration::from_secs(120);
    let ready = loop {
        if let Some(ready) = std::fs::read_to_string(&ready_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["pid"] == proc.id())
        {
            break ready;
        }
        if let Ok(Some(status)) = proc.try_wait() {
            panic!("relay exited at start with {status}");
        }
        assert!(Instant::now() < deadline, "relay did not become ready");
        std::thread::sleep(Duration::from_millis(1));
    };
    let addr = |k: &str| -> SocketAddr {
        ready[k]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {k} address in {ready}"))
    };
    Child {
        ingest: addr("ingest"),
        admin: addr("admin"),
        proc,
        ready_after: started.elapsed(),
    }
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn rss_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn admin_post(addr: SocketAddr, path: &str) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap().status()
}

impl Drop for Child {
    /// A bench that panics must not leave its relay running.
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

fn stop_relay(child: &mut Child, signal: &str) -> Duration {
    let t = Instant::now();
    let pid = child.proc.id().to_string();
    let _ = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
    let _ = child.proc.wait();
    t.elapsed()
}

fn dir_mib(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_mib(&e.path()) * 1048576.0,
                    Ok(m) => m.len() as f64,
                    Err(_) => 0.0,
                })
                .sum::<f64>()
        })
        .unwrap_or(0.0)
        / 1048576.0
}

/// `--backlog`: the relay as a child process with its destinations paused;
/// ingest N, read its RSS with N messages waiting, restart it (after `kill -9`,
/// then clean) and time until it listens, then resume and time the drain.
async fn run_backlog(a: Args) {
    START.get_or_init(Instant::now);
    println!(
        "scenario: backlog of {} messages ({} B bodies, durability {}, {} connections), relay in its own process, {} destination(s) paused while ingesting",
        a.requests, a.body, a.durability, a.connections, a.destinations
    );
    let tmp = tempfile::tempdir().unwrap();
    // `--data-dir` keeps the relay's files afterwards, to restart or profile it by hand.
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    // Old messages would be delivered too and spoil the counts.
    assert!(
        !dir.join("data").exists(),
        "{} already holds a data dir; give --data-dir an empty or new directory",
        dir.display()
    );
    let expected = a.requests * a.destinations;
    let sink = start_sink(expected).await;
    let file = dir.join("relay.toml");
    let text = config_text(&a, sink.addr).replace(
        "[storage]\n",
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[storage]\n",
    );
    std::fs::write(&file, text).unwrap();

    let mut relay = spawn_relay(&file);
    let (rss0, _) = rss_of(relay.proc.id());
    for d in 0..a.destinations {
        let s = admin_post(relay.admin, &format!("/api/v1/destinations/d{d}/pause")).await;
        assert_eq!(s, StatusCode::OK, "pause d{d}");
    }
    let mut r = drive(relay.ingest, "/hooks/bench", &a).await;
    let ingest_rps = r.acks.len() as f64 / r.elapsed.as_secs_f64();
    let (rss, hwm) = rss_of(relay.proc.id());
    print_ingest("ingest", ingest_rps, &mut r);
    println!(
        "relay RSS  : {rss0:.1} MiB at start, {rss:.1} MiB with the backlog stored (peak {hwm:.1} MiB while ingesting); data dir {:.0} MiB",
        dir_mib(&dir.join("data"))
    );

    // Worst case first: killed with the whole backlog written since it
    // started, so sled replays all of it; then a clean stop, which checkpoints.
    stop_relay(&mut relay, "-KILL");
    let mut relay = spawn_relay(&file);
    println!(
        "crash      : after kill -9, listening again {:.2?} after spawn",
        relay.ready_after
    );
    let stop = stop_relay(&mut relay, "-TERM");
    let mut relay = spawn_relay(&file);
    let (rss_restart, _) = rss_of(relay.proc.id());
    println!(
        "restart    : clean stop took {stop:.2?}; listening again {:.2?} after spawn (RSS {rss_restart:.1} MiB)",
        relay.ready_after
    );

    let t = Instant::now();
    for d in 0..a.destinations {
        let s = admin_post(relay.admin, &format!("/api/v1/destinations/d{d}/resume")).await;
        assert_eq!(s, StatusCode::OK, "resume d{d}");
    }
    let wait = tokio::time::timeout(Duration::from_secs(3600), sink.done.notified()).await;
    let drained = t.elapsed();
    let delivered = sink.delivered.load(Ordering::SeqCst);
    if wait.is_err() || delivered < expected {
        println!("WARNING: only {delivered} of {expected} deliveries arrived");
    }
    let (rss_after, hwm_after) = rss_of(relay.proc.id());
    println!(
        "drain      : {:>9.0} deliveries/s (all {delivered} in {drained:.2?}); relay RSS {rss_after:.1} MiB after, peak {hwm_after:.1} MiB since the restart",
        delivered as f64 / drained.as_secs_f64()
    );
    stop_relay(&mut relay, "-TERM");
}

/// What `cargo bench --bench load` runs without arguments: every scenario of
/// BENCHMARKS.md, each in a fresh process so that memory figures are its own.
const SUITE: &[&str] = &[
    "--requests 30000",
    "--requests 30000 --destinations 0",
    "--requests 30000 --durability buffered",
    "--requests 20000 --destinations 10",
    "--requests 5000 --body-bytes 65536",
    "--requests 10000 --rate 1000",
    "--backlog --requests 1000000",
    "--backlog --requests 50000 --destinations 10",
];

/// Runs each scenario in a fresh process of this bench, so memory figures are its own.
fn run_each(scenarios: &[&str]) {
    let exe = std::env::current_exe().expect("own path");
    for scenario in scenarios {
        println!();
        let status = std::process::Command::new(&exe)
            .args(scenario.split_whitespace())
            .status()
            .expect("run scenario");
        assert!(status.success(), "scenario `{scenario}` failed");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a scenario's arguments.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        // Built as a test (`cargo test --benches`): a quick smoke run only.
        run_each(&["--requests 200", "--backlog --requests 200"]);
        return;
    }
    if argv.iter().all(|a| a == "--bench") {
        run_each(SUITE);
        return;
    }
    let a = args();
    if a.backlog {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_backlog(a));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}
