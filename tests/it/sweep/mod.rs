//! Bad-input sweep (issue #6): more than 10,000 malformed requests over raw
//! TCP (bad methods, broken chunking, lying `Content-Length`, huge headers,
//! junk paths, NUL bytes, wrong versions, HTTP/2 garbage, bad signatures,
//! oversized bodies, slowloris) against the real binary, many connections at
//! once. Every answer must be a rejection, and every case with something to
//! answer must be answered (a panic in a handler shows only as a closed
//! connection); the relay's stderr must hold no panic. Afterwards the relay
//! still serves, stored and delivered nothing from the junk, holds no inbound
//! connection open, and its memory came back down.
//!
//! The cases are tables (`cases.rs`): fast templates run round-robin, and
//! slowloris kinds with their number of connections; `wire.rs` runs one
//! case over raw TCP and judges the answer, `tally.rs` counts, `procfs.rs`
//! reads the relay's memory, fds and sockets.

mod cases;
mod procfs;
mod tally;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use self::cases::{sign, Template, FAST, SLOW};
use self::procfs::{
    fds, inbound_connections, open_connections, proc_status_kib, rss_kib, try_status_kib,
};
use self::tally::Tally;
use self::wire::{exchange, judge};
use crate::support::*;

const OPEN: &str = "/hooks/open";
const SIGNED: &str = "/hooks/signed";
const SECRET: &str = "sweep-github-secret";
const ADMIN_TOKEN: &str = "sweep-admin-token";
/// `server.max_body_bytes` of the relay under test.
const MAX_BODY: usize = 64 * 1024;
/// `server.request_timeout`: the header and the body deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How much later than `REQUEST_TIMEOUT` a slowloris connection may be cut:
/// timer and scheduling delay on a loaded two-core machine.
const CUT_SLACK: Duration = Duration::from_secs(3);
/// Deadline for one fast case: the relay answers or closes well before.
const CASE_DEADLINE: Duration = Duration::from_secs(15);
const FAST_CASES: usize = 10_000;
const WARMUP_CASES: usize = 600;
const CONCURRENCY: usize = 48;
/// Allowed growth of the resident set over the warmed-up baseline once the
/// sweep is over. glibc keeps freed memory in its per-thread arenas instead
/// of returning it, and a second burst of stalled bodies is partly served
/// from other arenas: measured 5.4 to 6.0 MiB over the baseline after the
/// sweep (all of it free: a `malloc_trim(0)` in the relay through gdb took it
/// back to 2.4 MiB over the start). 16 MiB is ~2.7 times that, and still
/// fails for a leak of 1.6 KiB per junk request.
const RSS_MARGIN_KIB: u64 = 16 * 1024;

/// Slowloris connections in one round, from the table.
fn slow_cases() -> usize {
    SLOW.iter().map(|s| s.connections).sum()
}

/// Two sources (one open, one verified), one destination, tight limits.
fn config(rx: &Receiver) -> RelayConfig {
    RelayConfig::new()
        .server("max_body_bytes", MAX_BODY)
        .server(
            "request_timeout",
            format!("{}ms", REQUEST_TIMEOUT.as_millis()),
        )
        .token(ADMIN_TOKEN)
        .source(Source::new("open", OPEN))
        .source(Source::new("signed", SIGNED).verify(Verify::new("github").secret(SECRET)))
        .destination(
            Dest::new("app", &rx.url("/in"))
                .sources(["open", "signed"])
                .retry(Retry::every("20ms", "100ms")),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_requests_store_nothing_and_leave_no_trace() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let mut relay = RelayProcess::start(&config(&rx).write(tmp.path())).await;
    assert_eq!(
        get(&relay.admin_url("/readyz")).await.status,
        StatusCode::OK
    );

    let base = warm_up(&relay).await;
    let sweep = sweep(&relay, base.rss).await;
    assert!(!relay.exited(), "the relay exited during the sweep");
    let after = settle(&relay, &base).await;
    report(&base, &sweep, &after);

    relay.assert_no_panics("during the sweep");
    assert_answered_by_template(&sweep.tally);
    let tally = &sweep.tally;
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases went wrong, first ones: {:#?}",
        tally.failure_count,
        tally.cases,
        tally.failures
    );
    assert_eq!(tally.cases, FAST_CASES + slow_cases());
    assert!(tally.cases >= 10_000);
    assert!(
        after.rss_back,
        "VmRSS stayed at {} KiB, over the baseline {} KiB + {RSS_MARGIN_KIB} KiB",
        after.rss, base.rss
    );

    assert_nothing_stored_and_every_refusal_counted(&relay, &rx, &[&base.warm, tally]).await;
    assert_still_serves(&relay, &rx).await;

    // And it still stops cleanly.
    assert_eq!(relay.terminate(), 0);
    relay.assert_no_panics("after the sweep");
    eprintln!("total test time {:.2?}", started.elapsed());
}

/// The relay after the warm-up, holding no connection.
struct Baseline {
    start_rss: u64,
    rss: u64,
    hwm: u64,
    fds: usize,
    sockets: usize,
    warm: Tally,
}

/// Every kind of junk a few times and one round of slowloris, so that the
/// allocator has grown its arenas to what the sweep needs (glibc keeps freed
/// memory for reuse rather than returning it). The baseline is taken when
/// the relay holds no connection at all.
async fn warm_up(relay: &RelayProcess) -> Baseline {
    let (pid, ingest) = (relay.pid, relay.ingest);
    let start_rss = rss_kib(pid);
    let (mut warm, (warm_slow, _)) =
        tokio::join!(run_fast(ingest, 0..WARMUP_CASES), run_slow(ingest));
    warm.merge(warm_slow);
    relay.assert_no_panics("during the warm-up");
    assert!(
        warm.failures.is_empty(),
        "warm-up failures: {:#?}",
        warm.failures
    );
    wait_until(
        "warm-up connections closed",
        Duration::from_secs(20),
        || open_connections(pid) == 0,
    )
    .await;
    let (fds, sockets) = fds(pid);
    Baseline {
        start_rss,
        rss: rss_kib(pid),
        hwm: proc_status_kib(pid, "VmHWM:"),
        fds,
        sockets: sockets.len(),
        warm,
    }
}

/// What the sweep found.
struct Sweep {
    tally: Tally,
    /// Per slowloris kind, how long each connection lasted.
    cuts: Vec<(String, Duration)>,
    peak_rss: u64,
    peak_conns: usize,
    hwm: u64,
    fast_time: Duration,
    sweep_time: Duration,
}

/// Fast junk on `CONCURRENCY` connections, slowloris alongside, the
/// resident set and the inbound connections sampled throughout.
async fn sweep(relay: &RelayProcess, base_rss: u64) -> Sweep {
    let (pid, ingest) = (relay.pid, relay.ingest);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new((base_rss, 0usize)));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                if !sampling.load(Ordering::Relaxed) {
                    break;
                }
                // Gone: the liveness check after the sweep says so.
                let Some(rss) = try_status_kib(pid, "VmRSS:") else {
                    break;
                };
                // The socket table lists every TIME_WAIT socket too: read it
                // less often.
                let conns = if n % 10 == 0 {
                    inbound_connections(pid, ingest)
                } else {
                    0
                };
                {
                    let mut p = peak.lock().unwrap();
                    p.0 = p.0.max(rss);
                    p.1 = p.1.max(conns);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let sweep_start = Instant::now();
    let slow = tokio::spawn(run_slow(ingest));
    let mut tally = run_fast(ingest, WARMUP_CASES..WARMUP_CASES + FAST_CASES).await;
    let fast_time = sweep_start.elapsed();
    let (slow_tally, cuts) = slow.await.unwrap();
    tally.merge(slow_tally);
    let sweep_time = sweep_start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let (peak_rss, peak_conns) = *peak.lock().unwrap();
    Sweep {
        tally,
        cuts,
        peak_rss,
        peak_conns,
        hwm: proc_status_kib(pid, "VmHWM:"),
        fast_time,
        sweep_time,
    }
}

/// The relay once the sweep is over.
struct After {
    fds: usize,
    sockets: usize,
    rss: u64,
    /// The resident set came back within the margin.
    rss_back: bool,
    time: Duration,
}

/// Waits until every inbound connection is closed and the fds are back to
/// the baseline, then for the memory to come back down.
async fn settle(relay: &RelayProcess, base: &Baseline) -> After {
    let (pid, ingest) = (relay.pid, relay.ingest);
    let settle = Instant::now();
    wait_until(
        "inbound connections closed",
        Duration::from_secs(20),
        || inbound_connections(pid, ingest) == 0,
    )
    .await;
    wait_until("fds back to the baseline", Duration::from_secs(20), || {
        open_connections(pid) == 0 && fds(pid).0 <= base.fds
    })
    .await;
    let (fds, sockets) = fds(pid);
    let mut rss = rss_kib(pid);
    let rss_back = poll_until(Duration::from_secs(20), || {
        rss = rss_kib(pid);
        rss <= base.rss + RSS_MARGIN_KIB
    })
    .await;
    After {
        fds,
        sockets: sockets.len(),
        rss,
        rss_back,
        time: settle.elapsed(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The summary on stderr.
fn report(base: &Baseline, sweep: &Sweep, after: &After) {
    let tally = &sweep.tally;
    eprintln!("\n=== bad-input sweep ===");
    eprintln!(
        "cases: {} ({FAST_CASES} fast from {} templates on {CONCURRENCY} connections at a time + {} slowloris), after a warm-up of {}",
        tally.cases,
        FAST.len(),
        slow_cases(),
        base.warm.cases
    );
    eprintln!(
        "time: fast sweep {:.2?} (slowest case {:.2?}), with slowloris {:.2?}, settling {:.2?}",
        sweep.fast_time, tally.slowest, sweep.sweep_time, after.time
    );
    eprintln!("answers by status:");
    for (s, n) in &tally.by_status {
        eprintln!("  {s:<28} {n:>6}");
    }
    eprintln!("answers by category:");
    for (c, labels) in &tally.by_category {
        let total: usize = labels.values().sum();
        let detail: Vec<String> = labels.iter().map(|(l, n)| format!("{l}: {n}")).collect();
        eprintln!("  {c:<22} {total:>6}  {}", detail.join(", "));
    }
    eprintln!("templates with a close without an answer, or a failure:");
    for (name, t) in &tally.by_template {
        if t.closed > 0 || t.failed > 0 {
            eprintln!(
                "  {name:<50} {:<8} answered {:>4}, closed {:>4}, failed {:>4}",
                format!("{:?}", t.silent),
                t.answered,
                t.closed,
                t.failed
            );
        }
    }
    let mut by_kind: BTreeMap<&str, (Duration, Duration)> = BTreeMap::new();
    for (kind, d) in &sweep.cuts {
        let e = by_kind
            .entry(kind.as_str())
            .or_insert((Duration::MAX, Duration::ZERO));
        e.0 = e.0.min(*d);
        e.1 = e.1.max(*d);
    }
    eprintln!(
        "slowloris cut after (request_timeout {REQUEST_TIMEOUT:?}, limit {:?}):",
        REQUEST_TIMEOUT + CUT_SLACK
    );
    for (k, (lo, hi)) in &by_kind {
        eprintln!("  {k:<50} {lo:>10.2?} .. {hi:.2?}");
    }
    eprintln!(
        "memory: VmRSS {:.1} MiB at start, baseline after warm-up {:.1} MiB (VmHWM {:.1} MiB then), sweep peak VmRSS {:.1} MiB, VmHWM {:.1} MiB, after {:.1} MiB (margin {:.0} MiB)",
        mib(base.start_rss),
        mib(base.rss),
        mib(base.hwm),
        mib(sweep.peak_rss),
        mib(sweep.hwm),
        mib(after.rss),
        mib(RSS_MARGIN_KIB)
    );
    eprintln!(
        "fds: baseline {} ({} sockets), after {} ({} sockets); peak inbound connections {}",
        base.fds, base.sockets, after.fds, after.sockets, sweep.peak_conns
    );
}

/// Every template ran, and each one with something to answer had all its
/// cases answered with an expected status: a relay that drops connections
/// instead of answering fails here, named by template.
fn assert_answered_by_template(tally: &Tally) {
    assert_eq!(
        tally.by_template.len(),
        FAST.len() + SLOW.len(),
        "every template ran, under a name of its own: {:?}",
        tally.by_template.keys().collect::<Vec<_>>()
    );
    let mut unanswered = Vec::new();
    for (name, t) in &tally.by_template {
        let total = t.answered + t.closed + t.failed;
        let enough = match t.silent {
            cases::Silent::Expected => true,
            cases::Silent::Never => total > 0 && t.answered == total,
        };
        if !enough {
            unanswered.push(format!(
                "{name}: answered {} of {total}, closed on without an answer {}, other failures {}",
                t.answered, t.closed, t.failed
            ));
        }
    }
    assert!(
        unanswered.is_empty(),
        "templates not answered as they must be: {unanswered:#?}"
    );
}

/// Nothing stored, nothing delivered, and every refusal the clients read
/// (in `tallies`) counted by the relay under a matching reason. Counted ones
/// can exceed those read: an answer can be lost when the relay resets a
/// connection with unread input.
async fn assert_nothing_stored_and_every_refusal_counted(
    relay: &RelayProcess,
    rx: &Receiver,
    tallies: &[&Tally],
) {
    assert_eq!(rx.arrivals(), 0, "the receiver got something from the junk");
    let messages = admin_json(relay, "/api/v1/messages?limit=1000").await;
    assert_eq!(messages, serde_json::json!([]), "stored from the junk");
    let dest = admin_json(relay, "/api/v1/destinations/app").await;
    assert_eq!(dest["head"], 0, "{dest}");
    for source in ["open", "signed"] {
        assert_eq!(received_metric(relay, source, "stored").await, 0);
        assert_eq!(received_metric(relay, source, "duplicate").await, 0);
    }
    let sources = admin_json(relay, "/api/v1/sources").await;
    let rejected = |reasons: &[&str]| -> usize {
        let mut n = 0;
        for s in sources.as_array().unwrap() {
            for r in reasons {
                n += s["rejected_by_reason"][r].as_u64().unwrap() as usize;
            }
        }
        n
    };
    for (status, reasons) in [
        (
            "HTTP 401",
            &["missing_header", "malformed_header", "bad_signature"][..],
        ),
        ("HTTP 405", &["method"]),
        ("HTTP 408", &["timeout"]),
        ("HTTP 413", &["too_large"]),
    ] {
        let counted = rejected(reasons);
        let seen: usize = tallies.iter().map(|t| t.status(status)).sum();
        eprintln!("{status}: counted by the relay {counted}, read by the clients {seen}");
        assert!(
            counted >= seen,
            "{status}: relay counted {counted}, clients read {seen}"
        );
    }
}

/// A valid webhook is accepted, stored as seq 1 and delivered byte for byte.
async fn assert_still_serves(relay: &RelayProcess, rx: &Receiver) {
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let sig = sign(&body);
    let a = post(
        &client(),
        &relay.url(SIGNED),
        &[
            ("content-type", "application/octet-stream"),
            ("x-hub-signature-256", &sig),
            ("x-github-event", "push"),
        ],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["seq"], 1, "{:?}", a.json);
    let got = rx.wait_delivered(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body.as_ref(), body.as_slice());
    assert_eq!(got[0].header("x-hookrelay-source"), Some("signed"));
    let messages = admin_json(relay, "/api/v1/messages?limit=1000").await;
    assert_eq!(messages.as_array().unwrap().len(), 1, "{messages}");
    assert_eq!(messages[0]["seq"], 1);
    assert_eq!(messages[0]["body_bytes"], body.len());
    assert_eq!(received_metric(relay, "signed", "stored").await, 1);
    assert_eq!(received_metric(relay, "open", "stored").await, 0);
    wait_until("the delivery is recorded", Duration::from_secs(20), || {
        rx.count() == 1
    })
    .await;
    assert_eq!(rx.arrivals(), 1);
}

// ---------------------------------------------------------------------------
// Running the tables.

/// Runs fast cases `range` on `CONCURRENCY` connections at a time: case `i`
/// is template `i % FAST.len()`, variant `i / FAST.len()`.
async fn run_fast(addr: SocketAddr, range: std::ops::Range<usize>) -> Tally {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (next, end) = (next.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            let fast: &[Template] = &FAST;
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return tally;
                }
                let template = &fast[i % fast.len()];
                let steps = template.case(i, i / fast.len());
                let ex = exchange(addr, &steps, CASE_DEADLINE).await;
                let result = judge(template, &ex);
                tally.slowest = tally.slowest.max(ex.elapsed);
                tally.record(format!("case {i}"), template, result);
            }
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.expect("sweep task"));
    }
    tally
}

/// Runs every slowloris kind's connections at once; each must be cut
/// (answered 408 or closed) within the request timeout plus slack.
async fn run_slow(addr: SocketAddr) -> (Tally, Vec<(String, Duration)>) {
    let mut tasks = Vec::new();
    for (k, slow) in SLOW.iter().enumerate() {
        let count = slow.connections;
        for n in 0..count {
            tasks.push(tokio::spawn(async move {
                let template = &SLOW[k].template;
                // Spread the starts over a second so that they overlap the sweep.
                tokio::time::sleep(Duration::from_millis((1000 * n / count) as u64)).await;
                let limit = REQUEST_TIMEOUT + CUT_SLACK;
                // Far past the limit, so that a connection that is never cut
                // shows up as such rather than as a client-side deadline.
                let steps = template.case(n, n);
                let ex = exchange(addr, &steps, limit + Duration::from_secs(20)).await;
                let mut result = judge(template, &ex);
                if result.is_ok() && ex.elapsed > limit {
                    result = Err(format!("cut only after {:?} (limit {limit:?})", ex.elapsed));
                }
                (k, result, ex.elapsed)
            }));
        }
    }
    let mut tally = Tally::default();
    let mut cuts = Vec::new();
    for t in tasks {
        let (k, result, elapsed) = t.await.expect("slowloris task");
        let template = &SLOW[k].template;
        tally.record(template.label(), template, result);
        cuts.push((template.name.clone(), elapsed));
    }
    (tally, cuts)
}

// ---------------------------------------------------------------------------
// The admin API.

async fn admin_json(relay: &RelayProcess, path: &str) -> serde_json::Value {
    let (status, json) =
        json_request(Method::GET, &relay.admin_url(path), None, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {json}");
    json
}

/// `hookrelay_received_total{source,outcome}` from `/metrics`.
async fn received_metric(relay: &RelayProcess, source: &str, outcome: &str) -> u64 {
    let a = get(&relay.admin_url("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    let prefix = format!("hookrelay_received_total{{source=\"{source}\",outcome=\"{outcome}\"}} ");
    a.text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} in /metrics"))
}
