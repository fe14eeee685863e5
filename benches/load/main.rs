//! End-to-end load bench: the real relay (`hookrelay serve`) as its own
//! process on a temp data dir, an in-process sink, N webhooks over C keep-alive
//! connections; in the same run a bare hyper server, also its own process, is
//! driven the same way for comparison.
//!
//! cargo bench --bench load            # every scenario of BENCHMARKS.md (~12 min)
//! cargo bench --bench load -- [--requests N] [--connections C] [--body-bytes B]
//!     [--durability fsync|buffered] [--destinations D] [--rate R]
//!     [--baseline | --no-baseline] [--backlog [--data-dir DIR]] [--perf FILE]
//!     [--filter JQ] [--sync-reply]
//!
//! `--fleet`: the same load through one sled relay, then split over two
//! relays sharing a three-node JetStream cluster (`nats-server` 2.10+ on
//! `PATH`; the cluster of `tests/support/nats.rs`), each with its
//! ingest and delivery rates and latencies. `--unordered` gives the
//! destinations `max_in_flight = 16`.
//! `--sync-reply` (open loop, 100/s unless `--rate`): the source answers
//! with its destination's answer (`reply`); prints the ack latency of the
//! same requests sent straight to the app and through the relay, and what
//! the relay adds (a fallback, status 202 here, counts as failed).
//! `--filter JQ` puts that jq `filter` on every destination (routing's
//! cost; the bodies are not JSON, so `.body` is a string).
//! `--destinations 0` measures ingest alone. `--rate R` switches to an open
//! loop at R requests/s (for latency). `--backlog` pauses the destinations
//! while it ingests N, reports the relay's RSS with that backlog, times a
//! restart after `kill -9` and then a clean one, then resumes and times the
//! drain; `--data-dir DIR` keeps its config and data in DIR. Before the
//! drain it times a GET of each web console page (`/ui/`) with the whole
//! backlog stored.
//! `--baseline` (the default, except with `--backlog`) first runs the bare
//! hyper server with the same client, requests, body size and connections.
//! `--perf FILE` records the relay's measured windows with `perf record -a -g`
//! (`FILE.ingest` and `FILE.drain` with `--backlog`) and prints the relay's
//! pid for `perf report --pid`; perf shares the two cores.
//!
//! Prints ingest req/s, ack p50/p99, delivered/s, end-to-end p50/p99 (send
//! time is stamped in the body), then a cost table read from /proc (see
//! `cost.rs`): per webhook, the server process's CPU, context switches, bytes
//! written to and read from disk, its RSS, the data dir's size, and the
//! relay's figures as ratios to the bare server's; then the relay's CPU by
//! thread. A window runs from the first request to the last answer (the last
//! delivery when there are destinations) plus [`SETTLE`] for the relay.
//! `BENCH_RELAY_BIN` runs another build of the relay (with `serve
//! --ready-file`); `BENCH_RELAY_LOG` sets its `RUST_LOG` (default `info`).

mod client;
mod cost;
mod report;
mod servers;
// The fleet tests' cluster; the bench only starts it.
#[allow(dead_code)]
#[path = "../../tests/support/nats.rs"]
mod nats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;

use client::{drive, nanos, pct, print_ingest, start_sink, Drive};
use cost::{dir_bytes, Cost, Sampler};
use report::{cost_table, mb, thousands, thread_table, times, Measured};
use servers::{
    admin_get_timed, admin_post, spawn_bare, spawn_relay, Perf, Server, BARE_SERVER_ENV,
};

/// How long a relay window stays open after the last answer or delivery, so
/// that the periodic syncs (100 ms with `buffered`) and the cursor flush
/// (500 ms) fall inside it.
const SETTLE: Duration = Duration::from_millis(600);

#[derive(Debug, Clone)]
pub struct Args {
    pub requests: usize,
    pub connections: usize,
    pub body: usize,
    pub durability: String,
    pub destinations: usize,
    pub rate: Option<u64>,
    /// Measure the bare hyper server first; `None`: unless `--backlog`.
    baseline: Option<bool>,
    backlog: bool,
    /// `--fleet`: a single sled relay, then two relays on a three-node JetStream cluster.
    fleet: bool,
    /// `--unordered`: destinations with `max_in_flight = 16`.
    unordered: bool,
    data_dir: Option<PathBuf>,
    /// `perf record` the relay's windows into this file (`.ingest`/`.drain` with `--backlog`).
    perf: Option<PathBuf>,
    /// A jq `filter` on every destination (routing's cost).
    filter: Option<String>,
    /// The source waits for its destination's answer (`reply`).
    sync_reply: bool,
}

impl Args {
    fn baseline(&self) -> bool {
        self.baseline.unwrap_or(!self.backlog)
    }
}

fn args() -> Args {
    let mut a = Args {
        requests: 20_000,
        connections: 32,
        body: 1024,
        durability: "fsync".into(),
        destinations: 1,
        rate: None,
        baseline: None,
        backlog: false,
        fleet: false,
        unordered: false,
        data_dir: None,
        perf: None,
        filter: None,
        sync_reply: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |what: &str| {
            argv.next()
                .unwrap_or_else(|| panic!("{arg} needs a value: {arg} {what}"))
        };
        match arg.as_str() {
            "--requests" => a.requests = value("N").parse().expect("--requests N"),
            "--connections" => a.connections = value("C").parse().expect("--connections C"),
            "--body-bytes" => a.body = value("B").parse().expect("--body-bytes B"),
            "--durability" => a.durability = value("fsync|buffered"),
            "--destinations" => a.destinations = value("D").parse().expect("--destinations D"),
            "--rate" => a.rate = Some(value("R").parse().expect("--rate R")),
            "--data-dir" => a.data_dir = Some(value("DIR").into()),
            "--perf" => a.perf = Some(value("FILE").into()),
            "--filter" => a.filter = Some(value("JQ")),
            "--backlog" => a.backlog = true,
            "--sync-reply" => a.sync_reply = true,
            "--fleet" => a.fleet = true,
            "--unordered" => a.unordered = true,
            "--baseline" => a.baseline = Some(true),
            "--no-baseline" => a.baseline = Some(false),
            // Passed by `cargo bench`.
            "--bench" => {}
            other => panic!("unknown option {other}; see the top of benches/load/main.rs"),
        }
    }
    assert!(
        ["fsync", "buffered"].contains(&a.durability.as_str()),
        "--durability fsync|buffered, not {}",
        a.durability
    );
    assert!(
        (16..=1 << 20).contains(&a.body),
        "--body-bytes between 16 (the send-time stamp) and 1 MiB (the relay's limit here)"
    );
    a
}

fn config_text(a: &Args, sink: SocketAddr) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"1MiB\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"data\"\ndurability = \"{}\"\n\n[[source]]\nname = \"bench\"\npath = \"/hooks/bench\"\n",
        a.durability
    );
    if a.sync_reply {
        t.push_str("reply = { destination = \"d0\", timeout = \"2s\", status = 202 }\n");
    }
    for d in 0..a.destinations {
        t.push_str(&format!(
            "\n[[destination]]\nname = \"d{d}\"\nurl = \"http://{sink}/d{d}\"\nsources = [\"bench\"]\n"
        ));
        if a.sync_reply && d == 0 {
            t.push_str("ordering = \"unordered\"\n");
        }
        if a.unordered {
            t.push_str("ordering = \"unordered\"\nmax_in_flight = 16\n");
        }
        if let Some(f) = &a.filter {
            t.push_str(&format!("filter = '{f}'\n"));
        }
    }
    t
}

/// The sink for every delivery of the scenario, and the relay's config
/// (`dir/relay.toml`) pointing its destinations at it.
async fn sink_and_config(a: &Args, dir: &Path) -> (std::sync::Arc<client::Sink>, PathBuf) {
    let sink = start_sink(a.requests * a.destinations).await;
    let file = dir.join("relay.toml");
    std::fs::write(&file, config_text(a, sink.addr)).expect("write relay.toml");
    (sink, file)
}

/// The bare server's run when `a` asks for the baseline.
async fn baseline(a: &Args, dir: &Path) -> Option<Run> {
    if a.baseline() {
        Some(run_bare(a, dir).await)
    } else {
        None
    }
}

/// VmHWM of the bench process itself (load generator and sink), in MiB.
fn own_peak_rss_mib() -> f64 {
    cost::rss_mib(std::process::id()).1
}

/// What a server process spent on `units` (requests answered or deliveries
/// made) within `elapsed`.
struct Run {
    units: usize,
    elapsed: Duration,
    cost: Cost,
}

impl Run {
    fn of(drive: &Drive, cost: Cost) -> Run {
        Run {
            units: drive.acks.len(),
            elapsed: drive.elapsed,
            cost,
        }
    }

    fn rate(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64()
    }

    fn measured<'a>(&'a self, name: &'a str) -> Measured<'a> {
        Measured {
            name,
            units: self.units,
            rate: self.rate(),
            cost: &self.cost,
        }
    }
}

/// The baseline: the bare hyper server in its own process, loaded as the relay will be.
async fn run_bare(a: &Args, dir: &Path) -> Run {
    let mut bare = spawn_bare(dir);
    let sampler = Sampler::start(bare.pid());
    let mut d = drive(bare.ingest, "/", a).await;
    let cost = sampler.finish();
    bare.stop("-KILL");
    print_ingest("bare hyper", &mut d);
    Run::of(&d, cost)
}

/// The data dir's size, and a note comparing it with the bodies stored.
fn data_dir_size(data: &Path, stored: usize, body: usize) -> (String, String) {
    let (len, allocated) = dir_bytes(data);
    let bodies = (stored * body) as u64;
    let note = format!(
        "{} the {} of bodies stored ({} allocated)",
        times(len as f64 / bodies.max(1) as f64),
        mb(bodies),
        mb(allocated)
    );
    (mb(len), note)
}

async fn run(a: Args) {
    let mode = match a.rate {
        Some(r) => format!("open loop at {r}/s"),
        None => "closed loop".into(),
    };
    println!(
        "scenario: {} requests, {} connections, {} B bodies, durability {}, {} destination(s), {mode}, relay in its own process",
        a.requests, a.connections, a.body, a.durability, a.destinations
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let bare = baseline(&a, tmp.path()).await;

    let expected = a.requests * a.destinations;
    let (sink, file) = sink_and_config(&a, tmp.path()).await;
    let mut relay = spawn_relay(&file);
    let perf = a.perf.as_ref().map(|file| Perf::start(relay.pid(), file));
    let sampler = Sampler::start(relay.pid());
    let started = Instant::now();
    let mut r = drive(relay.ingest, "/hooks/bench", &a).await;
    let wait = if expected == 0 {
        Ok(())
    } else {
        tokio::time::timeout(Duration::from_secs(600), sink.done.notified()).await
    };
    let delivered = sink.delivered.load(Ordering::SeqCst);
    let all_delivered = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let cost = sampler.finish();
    if let Some(perf) = perf {
        perf.stop();
    }
    let data_dir = data_dir_size(&tmp.path().join("data"), r.acks.len(), a.body);
    relay.stop("-TERM");

    if wait.is_err() || delivered < expected {
        println!("WARNING: only {delivered} of {expected} deliveries arrived");
    }
    print_ingest("hookrelay", &mut r);
    let delivery_rate = delivered as f64 / all_delivered.as_secs_f64();
    if a.destinations > 0 {
        let mut e2e = std::mem::take(&mut *sink.e2e.lock().expect("e2e lock"));
        println!(
            "delivery   : {:>9.0} deliveries/s (all {} in {:.2?})   end-to-end p50 {:>8.2?} p99 {:>8.2?}",
            delivery_rate,
            delivered,
            all_delivered,
            pct(&mut e2e, 0.50),
            pct(&mut e2e, 0.99)
        );
    }
    if let Some(b) = &bare {
        println!(
            "ratio      : hookrelay ingest / bare hyper = {:.2}",
            r.rps() / b.rate()
        );
    }
    println!(
        "peak RSS   : {:.1} MiB relay process (VmHWM; {:.1} MiB at the end); bench process {:.1} MiB",
        cost.hwm_mib,
        cost.rss_mib,
        own_peak_rss_mib()
    );

    let relay_run = Run::of(&r, cost);
    let bare_m = bare.as_ref().map(|b| b.measured("bare"));
    let relay_m = relay_run.measured("hookrelay");
    let relay_column = 1 + bare.is_some() as usize;
    let mut table = cost_table(
        "webhook",
        bare_m.as_ref(),
        std::slice::from_ref(&relay_m),
        a.body,
    );
    if a.destinations > 0 {
        let vs_bare = bare
            .as_ref()
            .map(|b| format!("{} the bare rate", times(delivery_rate / b.rate())))
            .unwrap_or_default();
        table.figure_row(
            &format!("deliveries, all {} destinations", a.destinations),
            relay_column,
            format!("{}/s", thousands(delivery_rate)),
            vs_bare,
        );
    }
    let (size, note) = data_dir;
    table.figure_row("data dir after the run", relay_column, size, note);
    println!();
    table.print();
    println!();
    thread_table("relay threads, per webhook", &relay_m).print();
}

/// `--sync-reply`: the same open-loop load sent straight to the app (the
/// sink), then through the relay with the source's `reply` on that app.
async fn run_sync_reply(mut a: Args) {
    a.destinations = a.destinations.max(1);
    let rate = *a.rate.get_or_insert(100);
    println!(
        "scenario: sync replies, {} requests at {rate}/s over {} connections, {} B bodies, durability {}, relay in its own process",
        a.requests, a.connections, a.body, a.durability
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let direct_sink = start_sink(a.requests).await;
    let mut direct = drive(direct_sink.addr, "/d0", &a).await;
    print_ingest("app direct", &mut direct);

    let (sink, file) = sink_and_config(&a, tmp.path()).await;
    let mut relay = spawn_relay(&file);
    let mut r = drive(relay.ingest, "/hooks/bench", &a).await;
    relay.stop("-TERM");
    print_ingest("via relay", &mut r);
    let mut e2e = std::mem::take(&mut *sink.e2e.lock().expect("e2e lock"));
    println!(
        "at the app : send to arrival p50 {:>8.2?} p99 {:>8.2?} (through the relay)",
        pct(&mut e2e, 0.50),
        pct(&mut e2e, 0.99)
    );
    let mut added = |p: f64| {
        let (via, app) = (pct(&mut r.acks, p), pct(&mut direct.acks, p));
        via.saturating_sub(app)
    };
    println!(
        "added      : p50 {:>8.2?} p99 {:>8.2?} (the relay's ack latency minus the app's, same quantile)",
        added(0.50),
        added(0.99)
    );
}

/// What one arrangement of relays did with the load: ingest and delivery
/// rates, ack and end-to-end latency.
struct FleetRun {
    ingest: f64,
    ack: (Duration, Duration),
    delivered: usize,
    delivery: f64,
    e2e: (Duration, Duration),
}

/// Drives `a.requests` split evenly over `relays` (each with its share of
/// the connections), then waits for every delivery at `sink`.
async fn drive_relays(relays: &[SocketAddr], a: &Args, sink: &client::Sink) -> FleetRun {
    let expected = a.requests * a.destinations;
    let n = relays.len().max(1);
    let share = Args {
        requests: a.requests / n,
        connections: (a.connections / n).max(1),
        ..a.clone()
    };
    let started = Instant::now();
    let drives = relays
        .iter()
        .map(|addr| drive(*addr, "/hooks/bench", &share));
    let mut runs = futures_util::future::join_all(drives).await;
    let ingest_elapsed = runs.iter().map(|d| d.elapsed).max().unwrap_or_default();
    let mut acks: Vec<u64> = runs.iter_mut().flat_map(|d| d.acks.drain(..)).collect();
    let wait = tokio::time::timeout(Duration::from_secs(900), sink.done.notified()).await;
    let all = started.elapsed();
    let delivered = sink.delivered.load(Ordering::SeqCst);
    if wait.is_err() || delivered < expected {
        println!("WARNING: only {delivered} of {expected} deliveries arrived");
    }
    let mut e2e = std::mem::take(&mut *sink.e2e.lock().expect("e2e lock"));
    FleetRun {
        ingest: acks.len() as f64 / ingest_elapsed.as_secs_f64(),
        ack: (pct(&mut acks, 0.50), pct(&mut acks, 0.99)),
        delivered,
        delivery: delivered as f64 / all.as_secs_f64(),
        e2e: (pct(&mut e2e, 0.50), pct(&mut e2e, 0.99)),
    }
}

fn print_fleet(name: &str, r: &FleetRun) {
    println!(
        "{name:<22}: ingest {:>7.0}/s (ack p50 {:>8.2?} p99 {:>8.2?})   delivery {:>7.0}/s ({} made; end-to-end p50 {:>8.2?} p99 {:>8.2?})",
        r.ingest, r.ack.0, r.ack.1, r.delivery, r.delivered, r.e2e.0, r.e2e.1
    );
}

/// `--fleet`: one sled relay, then two relays on a three-node JetStream
/// cluster (`replicas = 3`, servers fsyncing every write), the same load.
async fn run_fleet(mut a: Args) {
    a.destinations = a.destinations.max(1);
    let ordering = if a.unordered {
        "unordered (max_in_flight 16)"
    } else {
        "strict"
    };
    println!(
        "scenario: fleet, {} requests, {} connections, {} B bodies, {} {ordering} destination(s)",
        a.requests, a.connections, a.body, a.destinations
    );
    let Some(bin) = nats::server() else {
        println!("fleet: skipped (see above)");
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");

    let (sink, file) = sink_and_config(&a, tmp.path()).await;
    let mut relay = spawn_relay(&file);
    let single = drive_relays(&[relay.ingest], &a, &sink).await;
    relay.stop("-TERM");
    print_fleet("one relay, sled", &single);

    let cluster = nats::Cluster::start(&bin, &tmp.path().join("nats"), 3);
    let sink = start_sink(a.requests * a.destinations).await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let storage = format!(
        "backend = \"nats\"\nnats = {{ url = [{}], stream = \"bench\", replicas = 3 }}\n",
        urls.join(", ")
    );
    let mut relays = Vec::new();
    for name in ["r1", "r2"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("relay dir");
        let text =
            config_text(&a, sink.addr).replace("[storage]\n", &format!("[storage]\n{storage}"));
        let file = dir.join("relay.toml");
        std::fs::write(&file, text).expect("write relay.toml");
        relays.push(spawn_relay(&file));
    }
    let addrs: Vec<SocketAddr> = relays.iter().map(|r| r.ingest).collect();
    let fleet = drive_relays(&addrs, &a, &sink).await;
    for mut r in relays {
        r.stop("-TERM");
    }
    print_fleet("two relays, JetStream", &fleet);
    println!(
        "ratio      : fleet / one relay = ingest {:.2}, delivery {:.2} (one 2-core machine runs all three NATS servers, both relays and the load)",
        fleet.ingest / single.ingest,
        fleet.delivery / single.delivery
    );
}

/// `--backlog`: the relay with its destinations paused; ingest N, read its RSS
/// with N messages waiting, restart it (after `kill -9`, then clean) and time
/// until it listens, then resume and time the drain.
async fn run_backlog(a: Args) {
    println!(
        "scenario: backlog of {} messages ({} B bodies, durability {}, {} connections), relay in its own process, {} destination(s) paused while ingesting",
        a.requests, a.body, a.durability, a.connections, a.destinations
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    // `--data-dir` keeps the relay's files afterwards, to restart or profile it by hand.
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("create the data dir's parent");
    // Old messages would be delivered too and spoil the counts.
    assert!(
        !dir.join("data").exists(),
        "{} already holds a data dir; give --data-dir an empty or new directory",
        dir.display()
    );
    let bare = baseline(&a, tmp.path()).await;
    let (sink, file) = sink_and_config(&a, &dir).await;

    let mut relay = spawn_relay(&file);
    let (rss0, _) = cost::rss_mib(relay.pid());
    for d in 0..a.destinations {
        let s = admin_post(relay.admin(), &format!("/api/v1/destinations/d{d}/pause")).await;
        assert_eq!(s, StatusCode::OK, "pause d{d}");
    }
    let perf = perf_file(&a, "ingest").map(|file| Perf::start(relay.pid(), &file));
    let sampler = Sampler::start(relay.pid());
    let mut r = drive(relay.ingest, "/hooks/bench", &a).await;
    tokio::time::sleep(SETTLE).await;
    let ingest = Run::of(&r, sampler.finish());
    if let Some(perf) = perf {
        perf.stop();
    }
    print_ingest("ingest", &mut r);
    let data_dir = data_dir_size(&dir.join("data"), r.acks.len(), a.body);
    println!(
        "relay RSS  : {rss0:.1} MiB at start, {:.1} MiB with the backlog stored (peak {:.1} MiB while ingesting); data dir {:.0} MiB",
        ingest.cost.rss_mib,
        ingest.cost.hwm_mib,
        dir_bytes(&dir.join("data")).0 as f64 / 1048576.0
    );

    // Worst case first: killed with the whole backlog written since it
    // started, so sled replays all of it; then a clean stop, which checkpoints.
    relay.stop("-KILL");
    let mut relay = spawn_relay(&file);
    println!(
        "crash      : after kill -9, listening again {:.2?} after spawn",
        relay.ready_after
    );
    let stop = relay.stop("-TERM");
    let relay = spawn_relay(&file);
    let (rss_restart, _) = cost::rss_mib(relay.pid());
    println!(
        "restart    : clean stop took {stop:.2?}; listening again {:.2?} after spawn (RSS {rss_restart:.1} MiB)",
        relay.ready_after
    );

    console_times(&relay, &a).await;
    let drain = drain(&relay, &a, &sink).await;
    println!(
        "drain      : {:>9.0} deliveries/s (all {} in {:.2?}); relay RSS {:.1} MiB after, peak {:.1} MiB since the restart",
        drain.rate(),
        drain.units,
        drain.elapsed,
        drain.cost.rss_mib,
        drain.cost.hwm_mib
    );
    let mut relay = relay;
    relay.stop("-TERM");

    let bare_m = bare.as_ref().map(|b| b.measured("bare"));
    let cols = [ingest.measured("ingest"), drain.measured("drain")];
    let mut table = cost_table("message", bare_m.as_ref(), &cols, a.body);
    let (size, note) = data_dir;
    table.figure_row(
        "data dir after ingest",
        1 + bare.is_some() as usize,
        size,
        note,
    );
    println!();
    println!("ingest: per webhook stored; drain: per delivery made");
    table.print();
    for (m, per) in cols.iter().zip(["webhook", "delivery"]) {
        println!();
        thread_table(&format!("relay threads, {} per {per}", m.name), m).print();
    }
}

/// Times of each console page (`/ui/`) of a relay holding the backlog
/// (destinations still paused): one warm-up GET, then the median and the
/// slowest of [`CONSOLE_TRIES`] more, each on a fresh connection.
async fn console_times(relay: &Server, a: &Args) {
    // Seqs of a fresh data dir run from 1 to the number of webhooks.
    let head = a.requests;
    let mut pages = vec![
        ("overview".to_owned(), "/ui/".to_owned()),
        ("message browser, newest page".into(), "/ui/messages".into()),
        (
            "browser, event type matching none (scan cap)".into(),
            "/ui/messages?event_type=none".into(),
        ),
        (
            "browser, body substring matching none (scan cap)".into(),
            "/ui/messages?body=not-in-any-body".into(),
        ),
        (
            "browser, oldest page (to_seq=50)".into(),
            "/ui/messages?to_seq=50".into(),
        ),
        (
            "browser, last hour by time".into(),
            format!(
                "/ui/messages?from_time={}",
                humantime::format_rfc3339_seconds(
                    std::time::SystemTime::now() - Duration::from_secs(3600)
                )
            ),
        ),
        ("message, newest".into(), format!("/ui/messages/{head}")),
        ("message, oldest".into(), "/ui/messages/1".into()),
    ];
    if a.destinations > 0 {
        pages.extend([
            (
                "destination d0".to_owned(),
                "/ui/destinations/d0".to_owned(),
            ),
            (
                "browser, d0 pending".into(),
                "/ui/messages?destination=d0&status=pending".into(),
            ),
            (
                "replay confirm, last 10k seqs (dry-run count)".into(),
                format!(
                    "/ui/destinations/d0/replay?from_seq={}",
                    head.saturating_sub(9_999).max(1)
                ),
            ),
            (
                "replay confirm, whole log (dry-run count)".into(),
                "/ui/destinations/d0/replay?from_seq=1".into(),
            ),
        ]);
    }
    println!("console    : GET of each page with the backlog stored, median / slowest of {CONSOLE_TRIES} (after one warm-up)");
    for (what, path) in pages {
        let (status, _, _) = admin_get_timed(relay.admin(), &path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        let mut times = Vec::with_capacity(CONSOLE_TRIES);
        let mut bytes = 0;
        for _ in 0..CONSOLE_TRIES {
            let (_, len, t) = admin_get_timed(relay.admin(), &path).await;
            times.push(t);
            bytes = len;
        }
        times.sort();
        println!(
            "  {what:<48} {:>8.1} / {:>8.1} ms  {:>7} B  {path}",
            times[CONSOLE_TRIES / 2].as_secs_f64() * 1e3,
            times[CONSOLE_TRIES - 1].as_secs_f64() * 1e3,
            bytes
        );
    }
}

/// Timed GETs of each console page.
const CONSOLE_TRIES: usize = 5;

/// Resumes every destination and waits until the sink has all deliveries; the
/// units are the deliveries, the cost the relay's meanwhile.
async fn drain(relay: &Server, a: &Args, sink: &client::Sink) -> Run {
    let expected = a.requests * a.destinations;
    let perf = perf_file(a, "drain").map(|file| Perf::start(relay.pid(), &file));
    let sampler = Sampler::start(relay.pid());
    let t = Instant::now();
    for d in 0..a.destinations {
        let s = admin_post(relay.admin(), &format!("/api/v1/destinations/d{d}/resume")).await;
        assert_eq!(s, StatusCode::OK, "resume d{d}");
    }
    let wait = tokio::time::timeout(Duration::from_secs(3600), sink.done.notified()).await;
    let elapsed = t.elapsed();
    let delivered = sink.delivered.load(Ordering::SeqCst);
    if wait.is_err() || delivered < expected {
        println!("WARNING: only {delivered} of {expected} deliveries arrived");
    }
    tokio::time::sleep(SETTLE).await;
    let cost = sampler.finish();
    if let Some(perf) = perf {
        perf.stop();
    }
    Run {
        units: delivered,
        elapsed,
        cost,
    }
}

/// `--perf FILE` with `.phase` appended.
fn perf_file(a: &Args, phase: &str) -> Option<PathBuf> {
    let mut file = a.perf.clone()?.into_os_string();
    file.push(format!(".{phase}"));
    Some(file.into())
}

/// What `cargo bench --bench load` runs without arguments: every scenario of
/// BENCHMARKS.md, each in a fresh process so that memory figures are its own.
const SUITE: &[&str] = &[
    "--requests 30000",
    "--requests 60000 --destinations 0",
    "--requests 30000 --durability buffered",
    "--requests 20000 --destinations 10",
    "--requests 20000 --destinations 10 --filter .source==\"bench\"",
    "--requests 5000 --body-bytes 65536",
    "--requests 5000 --body-bytes 65536 --destinations 0",
    "--requests 10000 --rate 1000",
    "--sync-reply --requests 3000 --connections 8",
    "--backlog --requests 1000000",
    "--backlog --requests 50000 --destinations 10",
    "--fleet --requests 20000",
    "--fleet --requests 20000 --unordered",
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
    if let Some(ready_file) = std::env::var_os(BARE_SERVER_ENV) {
        servers::serve_bare(Path::new(&ready_file));
        return;
    }
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
    nanos(); // the clock of the send-time stamps starts here
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench runtime");
    if a.backlog {
        rt.block_on(run_backlog(a));
    } else if a.sync_reply {
        rt.block_on(run_sync_reply(a));
    } else if a.fleet {
        rt.block_on(run_fleet(a));
    } else {
        rt.block_on(run(a));
    }
}
