//! Power loss: the crash loop's sibling where the disk, too, loses what was
//! not yet synced. The relay runs with its data dir on a FUSE file system of
//! this process (`support/powercut.rs`: per file, a durable image and the
//! writes made since the last `fsync`/`fdatasync`, which a cut throws away;
//! its docs give the whole model), under load from concurrent senders. Each
//! cycle "cuts the power": `kill -9` of the relay, then every unsynced write
//! is dropped (or, in torn cuts, a random part of them survives, as a disk
//! cache may have written back some), then the file system is mounted again
//! (an empty page cache, as after a reboot) and the relay restarted. The
//! cuts come in turn after a random number of acknowledgements, while the
//! relay waits for a sync (the disk holds it: a batch written, not yet
//! durable), and at a random moment of a start (recovery included).
//!
//! - `power_loss_loses_no_acknowledged_webhook`: with `durability = "fsync"`,
//!   after every cut every webhook answered `200` so far is stored under the
//!   seq it was acknowledged with, with its `webhook-id` and exact body; in
//!   the end each one reached the strict destination, in order, and every
//!   check of the crash loop holds. `POWER_LOSS_CYCLES` (default 3) and
//!   `POWER_LOSS_SEED` (default random, printed) as for the crash loop;
//!   `POWER_LOSS_STRICT_DIRS=1` makes a directory entry durable only with
//!   an fsync of its directory (the strictest reading of POSIX);
//!   the long run: `POWER_LOSS_CYCLES=100 cargo test --release --test power_loss -- --nocapture`.
//! - `buffered_durability_loses_acknowledged_webhooks`: proof that the check
//!   can fail. With `durability = "buffered"` the relay answers before the
//!   disk has the webhook; the disk holds every sync, the relay acknowledges
//!   webhooks anyway, the power goes, and the checker must report each of
//!   them lost (deterministically: no sync completes between the first of
//!   those answers and the cut).
//! - `fsync_durability_answers_nothing_the_disk_does_not_have`: the same cut
//!   with `durability = "fsync"`: nothing is answered while the syncs are
//!   held, and nothing acknowledged is lost.
//! - `the_disk_drops_exactly_what_was_not_synced`: the file system's own
//!   model, with plain file operations.
//!
//! Where FUSE cannot be used (no `/dev/fuse`, no permission to mount, not
//! root and no `fusermount3`), each test says why on stderr and passes
//! without running.

#[path = "support/mod.rs"]
mod support;

#[path = "support/powercut.rs"]
mod powercut;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use powercut::{CutReport, Disk, Keep, Mount};
use support::load::{
    arrivals, body_of, check_destination, destinations, env_u64, finish_sending, missing, mix,
    relay as serve, spawn_clients, Ledger, Sender, Tally, ANSWER_DEADLINE,
};
use support::*;

/// Concurrent senders in the main test.
const CLIENTS: usize = 4;

/// When a cycle's power cut comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Under load, after a random number of acknowledgements.
    BetweenSyncs,
    /// Under load, while the relay waits for a sync (held until the cut):
    /// the worst moment, a batch written and not yet durable.
    InSync,
    /// At a random moment of the relay's start (recovery included), before
    /// any load.
    AtStart,
}

/// How a cycle's power cut goes.
#[derive(Debug, Clone, Copy)]
struct CutMode {
    when: When,
    /// Keep a random part of the unsynced writes ([`Keep::Some`]) instead
    /// of none.
    torn: bool,
}

/// The cuts in turn; a CI run (3 cycles) has the first three.
const MODES: [CutMode; 6] = [
    CutMode {
        when: When::BetweenSyncs,
        torn: false,
    },
    CutMode {
        when: When::InSync,
        torn: true,
    },
    CutMode {
        when: When::InSync,
        torn: false,
    },
    CutMode {
        when: When::BetweenSyncs,
        torn: true,
    },
    CutMode {
        when: When::AtStart,
        torn: true,
    },
    CutMode {
        when: When::AtStart,
        torn: false,
    },
];

// ---------------------------------------------------------------- the disk

/// Says on stderr (past the test harness's capture, so that CI logs show
/// it) that `test` did not run, and why.
fn skip(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "power_loss: {test} SKIPPED: FUSE is not usable here: {why}"
    );
}

/// A fresh disk mounted at `dir/mnt`, or `None` (after saying why) where
/// FUSE is not usable.
fn fuse_disk(test: &str, dir: &Path) -> Option<(Disk, Mount, PathBuf)> {
    mount_disk(test, dir, Disk::new())
}

/// [`fuse_disk`] for a given disk.
fn mount_disk(test: &str, dir: &Path, disk: Disk) -> Option<(Disk, Mount, PathBuf)> {
    let at = dir.join("mnt");
    std::fs::create_dir_all(&at).expect("create the mount point");
    match disk.mount(&at) {
        Ok(m) => Some((disk, m, at)),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// The power goes while the relay runs: it stops at once (`kill -9`), the
/// disk loses what `keep` says, syncs it had in flight fail (so that its
/// threads can die), and the file system goes away with its page cache.
fn cut_power(relay: &mut RelayProcess, disk: &Disk, mount: Mount, keep: Keep) -> CutReport {
    let _ = relay.child.kill();
    let report = disk.cut_power(keep);
    relay.kill9();
    mount.unmount();
    report
}

/// The relay's config: data on the mount, one source deduplicating by
/// `x-delivery-id`, and one strict destination `app` at `rx`.
fn write_config(dir: &Path, data: &Path, durability: &str, rx: &Receiver) -> PathBuf {
    RelayConfig::new()
        .storage("durability", durability)
        .storage("data_dir", data)
        .source(Source::new("load", "/in").set("dedup_header", "x-delivery-id"))
        .destination(
            Dest::new("app", &rx.url("/hook"))
                .sources(["load"])
                .set("ordering", "strict")
                .retry(Retry::every("5ms", "20ms")),
        )
        .write(dir)
}

// ---------------------------------------------------------------- the check

/// An acknowledged webhook the store does not hold as acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lost {
    client: usize,
    n: u64,
    seq: u64,
    /// What the store holds under that seq instead: nothing, or another
    /// message (id, body), its seq reused after the loss.
    found: Option<(String, String)>,
}

/// What a store holds under each seq asked about: (id, body), or nothing.
type Stored = HashMap<u64, Option<(String, Vec<u8>)>>;

/// The acknowledged webhooks in `acked` that `stored` does not hold under
/// the seq they were acknowledged with, with that `webhook-id` and the body
/// `body(client, n)` they were sent with.
fn lost(
    acked: &HashMap<(usize, u64), (u64, String)>,
    stored: &Stored,
    body: impl Fn(usize, u64) -> String,
) -> Vec<Lost> {
    let mut lost: Vec<Lost> = acked
        .iter()
        .filter_map(|(&(client, n), (seq, id))| {
            let found = stored
                .get(seq)
                .unwrap_or_else(|| panic!("seq {seq} was not read"));
            let intact = found
                .as_ref()
                .is_some_and(|(i, b)| i == id && b == body(client, n).as_bytes());
            (!intact).then(|| Lost {
                client,
                n,
                seq: *seq,
                found: found
                    .as_ref()
                    .map(|(i, b)| (i.clone(), String::from_utf8_lossy(b).into_owned())),
            })
        })
        .collect();
    lost.sort_by_key(|l| l.seq);
    lost
}

/// What the running relay holds under each of `seqs` (admin API).
async fn stored_via_admin(relay: &RelayProcess, seqs: impl IntoIterator<Item = u64>) -> Stored {
    let mut stored = Stored::new();
    for seq in seqs {
        let a = get(&relay.admin_url(&format!("/api/v1/messages/{seq}"))).await;
        let found = match a.status {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(a.json["body_base64"].as_str().expect("body_base64"))
                    .expect("base64 body");
                let id = a.json["id"].as_str().expect("id").to_string();
                Some((id, body))
            }
            other => panic!("GET message {seq}: {other} {}", a.text()),
        };
        stored.insert(seq, found);
    }
    stored
}

/// What a stopped relay's store holds under each of `seqs`.
fn stored_on_disk(data: &Path, seqs: impl IntoIterator<Item = u64>) -> Stored {
    let store = StoreView::open(data);
    seqs.into_iter().map(|s| (s, store.message(s))).collect()
}

// ---------------------------------------------------------------- the loop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_loses_no_acknowledged_webhook() {
    const TEST: &str = "power_loss_loses_no_acknowledged_webhook";
    let tmp = tempfile::tempdir().unwrap();
    // A directory entry durable only once its directory is fsynced.
    let strict_dirs = env_u64("POWER_LOSS_STRICT_DIRS").unwrap_or(0) == 1;
    let disk = if strict_dirs {
        Disk::with_strict_dirs()
    } else {
        Disk::new()
    };
    let Some((disk, first_mount, mnt)) = mount_disk(TEST, tmp.path(), disk) else {
        return;
    };
    if strict_dirs {
        // As an operator would make it: `mkdir`, then `sync`.
        std::fs::create_dir(mnt.join("data")).expect("create the data dir");
        disk.sync_everything();
    }
    let cycles = env_u64("POWER_LOSS_CYCLES").unwrap_or(3) as usize;
    let seed = env_u64("POWER_LOSS_SEED").unwrap_or_else(rand::random);
    println!(
        "power loss: cycles={cycles} seed={seed} (rerun with POWER_LOSS_SEED={seed}){}",
        if strict_dirs {
            ", strict directories"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let rx = Receiver::ok().await;
    let data = mnt.join("data");
    let config = write_config(tmp.path(), &data, "fsync", &rx);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let senders: Vec<Arc<Mutex<Sender>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut mount = Some(first_mount);
    // Acks of the cycle just cut, checked after the restart.
    let mut at_risk: Vec<(usize, u64)> = Vec::new();
    let mut checked = 0usize;
    // How long each start took, recovery included (ms).
    let mut starts: Vec<u128> = Vec::new();
    let (mut pending_bytes, mut pages, mut pages_kept) = (0u64, 0usize, 0usize);

    for cycle in 0..cycles {
        let cycle_start = Instant::now();
        let mode = MODES[cycle % MODES.len()];
        let keep = if mode.torn {
            Keep::Some {
                seed: mix(seed ^ cycle as u64),
            }
        } else {
            Keep::Nothing
        };
        let m = mount
            .take()
            .unwrap_or_else(|| disk.mount(&mnt).expect("mount the disk again"));
        if mode.when == When::AtStart {
            let mut relay = serve(&config).spawn();
            let last = starts.last().copied().unwrap_or(50) as u64;
            let delay = rng.random_range(0..=last);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let ready = relay.is_ready();
            let report = cut_power(&mut relay, &disk, m, keep);
            pending_bytes += report.pending_bytes;
            pages += report.pages;
            pages_kept += report.pages_kept;
            println!(
                "cycle {cycle:>3}: cut {delay} ms into a {last} ms start ({}), {}: {} unsynced changes ({} bytes) in {} files, {}/{} pages kept, namespace reverted: {}",
                if ready { "already ready" } else { "while starting" },
                if mode.torn { "torn" } else { "all unsynced lost" },
                report.pending_changes,
                report.pending_bytes,
                report.files,
                report.pages_kept,
                report.pages,
                report.namespace_reverted,
            );
            continue;
        }
        let mut relay = serve(&config).start().await;
        let recovered = cycle_start.elapsed();
        starts.push(recovered.as_millis());
        // Ready means the store is open: sled's settings must be on disk by
        // then, or a torn `conf` can keep the relay from ever starting again.
        let unsynced = disk.unsynced_files();
        assert!(
            unsynced.iter().all(|f| f == "data/db"),
            "cycle {cycle}: files not synced when the relay is ready: {unsynced:?}"
        );

        // What the last cut left: every webhook it could have taken (those
        // acknowledged in that cycle) and a sample of older ones.
        if cycle > 0 {
            let acked = ledger.lock().unwrap().acked.clone();
            let mut check: HashMap<(usize, u64), (u64, String)> = at_risk
                .iter()
                .map(|key| (*key, acked[key].clone()))
                .collect();
            let older: Vec<_> = acked.keys().filter(|k| !check.contains_key(k)).collect();
            for _ in 0..older.len().min(50) {
                let key = *older[rng.random_range(0..older.len())];
                check.insert(key, acked[&key].clone());
            }
            let stored = stored_via_admin(&relay, check.values().map(|(s, _)| *s)).await;
            let lost = lost(&check, &stored, body_of);
            assert!(
                lost.is_empty(),
                "cycle {cycle}: {} of {} acknowledged webhooks checked are not stored as acknowledged after the power cut (seed {seed}), e.g. {:#?}\n{}",
                lost.len(),
                check.len(),
                &lost[..lost.len().min(5)],
                relay.tail(40)
            );
            checked += check.len();
        }

        let acked_before: HashSet<(usize, u64)> =
            ledger.lock().unwrap().acked.keys().copied().collect();
        let stop = Arc::new(AtomicBool::new(false));
        let url = relay.url("/in");
        let clients = spawn_clients(&url, &senders, &stop, &ledger);
        // The moment of the cut: after a random number of acknowledgements.
        let target = acked_before.len() + rng.random_range(20..=400);
        wait_until(
            &format!("cycle {cycle}: {target} webhooks acknowledged"),
            Duration::from_secs(120),
            || ledger.lock().unwrap().acked.len() >= target,
        )
        .await;
        let in_sync = mode.when == When::InSync;
        let lag = destinations(&relay).await[0]["lag"].as_u64().unwrap_or(0);
        // In a sync, the worst moment: a batch written, its sync not yet done.
        let hold = in_sync.then(|| disk.hold_syncs());
        if in_sync {
            wait_until(
                &format!("cycle {cycle}: the relay waiting for a sync"),
                Duration::from_secs(30),
                || disk.stats().held > 0,
            )
            .await;
        }
        let report = cut_power(&mut relay, &disk, m, keep);
        drop(hold);
        pending_bytes += report.pending_bytes;
        pages += report.pages;
        pages_kept += report.pages_kept;
        stop.store(true, SeqCst);
        for c in clients {
            tokio::time::timeout(ANSWER_DEADLINE * 2, c)
                .await
                .expect("senders stop once the relay is gone")
                .expect("sender panicked");
        }
        // What this cycle acknowledged, for the check after the restart.
        at_risk = (ledger.lock().unwrap().acked.keys())
            .filter(|k| !acked_before.contains(k))
            .copied()
            .collect();
        let new = at_risk.len();
        println!(
            "cycle {cycle:>3}: start {:>4} ms; cut after {new} acks (lag {lag}), {}, {}: {} syncs held, {} unsynced changes ({} bytes) in {} files, {}/{} pages kept, namespace reverted: {}; {:.2}s",
            recovered.as_millis(),
            if in_sync { "in a sync" } else { "between syncs" },
            if mode.torn { "torn" } else { "all unsynced lost" },
            report.held_syncs_failed,
            report.pending_changes,
            report.pending_bytes,
            report.files,
            report.pages_kept,
            report.pages,
            report.namespace_reverted,
            cycle_start.elapsed().as_secs_f64()
        );
    }

    // The last start: every message left unanswered by the last cut is sent
    // once more, then everything must be stored and delivered.
    let m = mount
        .take()
        .unwrap_or_else(|| disk.mount(&mnt).expect("mount the disk again"));
    let mut relay = serve(&config).start().await;
    let drain_started = Instant::now();
    let url = relay.url("/in");
    let Tally {
        sent,
        acked,
        unanswered,
        stored_anyway,
        refused,
    } = finish_sending(&url, &senders, &ledger).await;
    let deadline = Duration::from_secs(120 + 3 * cycles as u64);
    let head = loop {
        let d = destinations(&relay).await.remove(0);
        if d["lag"] == 0 && d["in_flight"] == 0 && missing(&arrivals(&rx), &acked).is_empty() {
            assert_eq!(d["dead_letters"], 0, "nothing dead-lettered: {d}");
            break d["head"].as_u64().expect("head");
        }
        if drain_started.elapsed() > deadline {
            let m = missing(&arrivals(&rx), &acked);
            panic!(
                "not caught up within {deadline:?} (seed {seed}): {} acked webhooks not delivered, e.g. {:?}; {d}\n{}",
                m.len(),
                &m[..m.len().min(5)],
                relay.tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain = drain_started.elapsed();
    assert_eq!(relay.terminate(), 0, "final SIGTERM:\n{}", relay.tail(40));

    // Every acknowledged webhook, read from the store on the disk.
    let stored = stored_on_disk(&data, acked.values().map(|(s, _)| *s));
    let lost = lost(&acked, &stored, body_of);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhooks are not stored as acknowledged (seed {seed}), e.g. {:#?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        head,
        acked.len() as u64,
        "every webhook stored exactly once, resends after a power cut included"
    );
    let r = check_destination("app", true, &arrivals(&rx), &acked, &sent, head, seed);
    drop(m);

    println!("power loss summary (seed {seed}):");
    println!(
        "  cycles: {cycles} power cuts ({} in a sync, {} during a start, {} torn); {pending_bytes} unsynced bytes at the cuts; of the pages they touched in torn cuts, {pages_kept} of {pages} kept some",
        (0..cycles)
            .filter(|c| MODES[c % MODES.len()].when == When::InSync)
            .count(),
        (0..cycles)
            .filter(|c| MODES[c % MODES.len()].when == When::AtStart)
            .count(),
        (0..cycles).filter(|c| MODES[c % MODES.len()].torn).count(),
    );
    println!(
        "  webhooks: {} acknowledged, lost 0 ({checked} checks after the cuts, all {} at the end); {unanswered} sends without an answer (resent; {stored_anyway} of them had been stored), non-200 answers {refused:?}",
        acked.len(),
        acked.len()
    );
    println!(
        "  app (strict): {} requests, {} delivered, {head} distinct, {} duplicates",
        r.requests,
        r.delivered,
        r.delivered - head as usize
    );
    let stats = disk.stats();
    println!(
        "  disk: {:.1} MiB written, {} syncs; relay starts {} to {} ms",
        stats.bytes_written as f64 / (1 << 20) as f64,
        stats.syncs,
        starts.iter().min().unwrap_or(&0),
        starts.iter().max().unwrap_or(&0),
    );
    println!(
        "  time: {:.1}s in all, final drain {:.1}s",
        started.elapsed().as_secs_f64(),
        drain.as_secs_f64()
    );
}

// ---------------------------------------------------------------- can it fail?

/// What [`cut_with_syncs_held`] saw.
struct HeldCut {
    /// Acknowledged before the syncs were held (and a clean restart since).
    before: HashMap<(usize, u64), (u64, String)>,
    /// Acknowledged while every sync was held.
    during: HashMap<(usize, u64), (u64, String)>,
    /// Sent while every sync was held.
    sent_during: usize,
    /// Of `during`, how many the relay had written to its file (unsynced)
    /// at the cut.
    written_unsynced: usize,
    /// What the checker reports lost after the cut, of `before` and `during`.
    lost: Vec<Lost>,
    report: CutReport,
}

const BEFORE: u64 = 10;
const DURING: u64 = 20;

/// Message `n` of [`cut_with_syncs_held`]: 64 KiB, so that the relay's
/// store usually writes some of them to its file while no sync completes
/// (its write buffers fill), and a kill -9 alone would keep those.
fn held_body(n: u64) -> String {
    format!("{}\"pad\":\"{}\"}}", held_marker(n), "x".repeat(64 * 1024))
}

/// The start of [`held_body`], which stays in one piece on disk.
fn held_marker(n: u64) -> String {
    format!("{{\"client\":0,\"n\":{n},")
}

/// Stores [`BEFORE`] webhooks and stops the relay cleanly (so they are on
/// disk whatever the durability), starts it again, holds every sync of the
/// disk, sends [`DURING`] more (each waiting for its answer at most
/// `answer`), cuts the power while the syncs are still held, restarts, and
/// asks the checker what was lost.
async fn cut_with_syncs_held(test: &str, durability: &str, answer: Duration) -> Option<HeldCut> {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mount, mnt) = fuse_disk(test, tmp.path())?;
    let rx = Receiver::ok().await;
    let data = mnt.join("data");
    let config = write_config(tmp.path(), &data, durability, &rx);
    let ack = |a: &Answer| -> (u64, String) {
        (
            a.json["seq"].as_u64().expect("seq"),
            a.json["id"].as_str().expect("id").to_string(),
        )
    };
    let post_one = |url: String, n: u64| async move {
        let key = format!("c0-{n}");
        let headers = [
            ("content-type", "application/json"),
            ("x-delivery-id", key.as_str()),
        ];
        post(&client(), &url, &headers, held_body(n)).await
    };

    let mut relay = serve(&config).start().await;
    let mut before = HashMap::new();
    for n in 0..BEFORE {
        let a = post_one(relay.url("/in"), n).await.expect("relay answers");
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        before.insert((0, n), ack(&a));
    }
    assert_eq!(relay.terminate(), 0, "clean stop:\n{}", relay.tail(40));
    let mut relay = serve(&config).start().await;

    let hold = disk.hold_syncs();
    let mut during = HashMap::new();
    let mut sent_during = 0;
    for n in BEFORE..BEFORE + DURING {
        sent_during += 1;
        match tokio::time::timeout(answer, post_one(relay.url("/in"), n)).await {
            Ok(Ok(a)) if a.status == StatusCode::OK => {
                during.insert((0, n), ack(&a));
            }
            Ok(Ok(a)) => panic!("answered {}: {}", a.status, a.text()),
            Ok(Err(e)) => panic!("no answer: {e}"),
            // Waiting for the disk: stop sending.
            Err(_) => break,
        }
    }
    // Acknowledged webhooks the store has written to its file (in a
    // computer's page cache, a kill -9 alone would keep them), and that no
    // sync has made durable. With buffered durability the store's write
    // buffers usually fill and go to the file within moments, but sled may
    // also keep them in memory behind the held syncs: give it a moment, and
    // report how many made it, without depending on it.
    let written = || {
        (during.keys())
            .filter(|(_, n)| disk.unsynced_contains("data/db", held_marker(*n).as_bytes()))
            .count()
    };
    if !during.is_empty() {
        poll_until(Duration::from_secs(2), || written() > 0).await;
    }
    let written_unsynced = written();
    let report = cut_power(&mut relay, &disk, mount, Keep::Nothing);
    drop(hold);

    let mount = disk.mount(&mnt).expect("mount the disk again");
    let relay = serve(&config).start().await;
    let all: HashMap<_, _> = before
        .iter()
        .chain(&during)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let stored = stored_via_admin(&relay, all.values().map(|(s, _)| *s)).await;
    let lost = lost(&all, &stored, |_, n| held_body(n));
    drop(relay);
    drop(mount);
    Some(HeldCut {
        before,
        during,
        sent_during,
        written_unsynced,
        lost,
        report,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_durability_loses_acknowledged_webhooks() {
    let Some(cut) = cut_with_syncs_held(
        "buffered_durability_loses_acknowledged_webhooks",
        "buffered",
        ANSWER_DEADLINE,
    )
    .await
    else {
        return;
    };
    // Buffered answers without the disk: all of them, syncs held or not...
    assert_eq!(
        cut.during.len() as u64,
        DURING,
        "buffered durability answers every webhook while the disk holds its syncs"
    );
    println!(
        "buffered: {} webhooks acknowledged while the disk held its syncs, {} of them written to the file (unsynced) at the cut; lost: {} ({} acknowledged before them kept)",
        cut.during.len(),
        cut.written_unsynced,
        cut.lost.len(),
        cut.before.len()
    );
    // ...and the power cut takes every one of them, which the checker sees,
    // while what a clean stop had put on disk is still there.
    let lost: BTreeMap<(usize, u64), u64> =
        cut.lost.iter().map(|l| ((l.client, l.n), l.seq)).collect();
    let expected: BTreeMap<(usize, u64), u64> =
        cut.during.iter().map(|(k, (s, _))| (*k, *s)).collect();
    assert_eq!(
        lost, expected,
        "the checker reports exactly the webhooks acknowledged while the syncs were held as lost ({} acknowledged before them survive): {:#?}",
        cut.before.len(),
        cut.lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_durability_answers_nothing_the_disk_does_not_have() {
    // How long a webhook goes unanswered before the test takes it as
    // waiting for the held sync (a relay that answered would do so in
    // milliseconds).
    let waiting = Duration::from_millis(500);
    let Some(cut) = cut_with_syncs_held(
        "fsync_durability_answers_nothing_the_disk_does_not_have",
        "fsync",
        waiting,
    )
    .await
    else {
        return;
    };
    assert!(
        cut.during.is_empty(),
        "fsync durability answered {} webhooks while the disk held every sync: {:?}",
        cut.during.len(),
        cut.during
    );
    assert_eq!(cut.sent_during, 1, "the first send waits for the disk");
    assert!(
        cut.report.held_syncs_failed >= 1,
        "the relay was waiting for a sync when the power went: {:?}",
        cut.report
    );
    assert!(
        cut.lost.is_empty(),
        "nothing acknowledged is lost: {:#?}",
        cut.lost
    );
}

// ---------------------------------------------------------------- the disk itself

#[test]
fn the_disk_drops_exactly_what_was_not_synced() {
    use std::fs::{self, File, OpenOptions};
    use std::os::unix::fs::FileExt;

    let tmp = tempfile::tempdir().unwrap();
    let Some((disk, mount, mnt)) =
        fuse_disk("the_disk_drops_exactly_what_was_not_synced", tmp.path())
    else {
        return;
    };
    let at = |name: &str| mnt.join(name);
    fs::create_dir(at("dir")).unwrap();
    let f = File::create(at("dir/synced")).unwrap();
    f.write_all_at(b"hello, disk", 0).unwrap();
    f.sync_data().unwrap();
    // Written after the sync: an overwrite, an append, a truncation elsewhere.
    f.write_all_at(b"HELLO", 0).unwrap();
    f.write_all_at(b" and more", 11).unwrap();
    assert_eq!(fs::read(at("dir/synced")).unwrap(), b"HELLO, disk and more");
    // A file created, written and synced, then renamed without a sync.
    let g = File::create(at("dir/old-name")).unwrap();
    g.write_all_at(&[7u8; 10_000], 0).unwrap();
    g.sync_all().unwrap();
    fs::rename(at("dir/old-name"), at("dir/new-name")).unwrap();
    // A file created and written, never synced.
    fs::write(at("dir/unsynced"), b"gone").unwrap();
    let h = OpenOptions::new()
        .write(true)
        .open(at("dir/new-name"))
        .unwrap();
    h.set_len(100).unwrap();
    assert_eq!(disk.stats().held, 0);
    drop((f, g, h));

    let report = disk.cut_power(Keep::Nothing);
    assert!(report.namespace_reverted, "{report:?}");
    assert!(
        fs::read(at("dir/synced")).is_err(),
        "no I/O once the power is off"
    );
    mount.unmount();
    let mount = disk.mount(&mnt).expect("mount again");
    assert_eq!(fs::read(at("dir/synced")).unwrap(), b"hello, disk");
    assert_eq!(fs::read(at("dir/old-name")).unwrap(), vec![7u8; 10_000]);
    assert!(!at("dir/new-name").exists(), "the rename was never synced");
    assert!(!at("dir/unsynced").exists(), "the create was never synced");
    let mut names: Vec<String> = fs::read_dir(at("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["old-name", "synced"]);

    // A sync of anything commits the namespace; fsync of a file its data.
    fs::rename(at("dir/old-name"), at("dir/renamed")).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(at("dir/synced"))
        .unwrap();
    f.write_all_at(b"J", 0).unwrap();
    // A held sync waits until it is released.
    let hold = disk.hold_syncs();
    let syncing = std::thread::spawn(move || f.sync_all().map(|()| f));
    wait_until_blocking("the sync to be held", Duration::from_secs(10), || {
        disk.stats().held == 1
    });
    assert!(!syncing.is_finished(), "a held sync waits");
    hold.release();
    let f = syncing.join().unwrap().expect("the released sync succeeds");
    f.write_all_at(b"Y", 0).unwrap();
    drop(f);
    // A torn cut keeps a part of the unsynced writes, piece by piece.
    let k = File::create(at("dir/pieces")).unwrap();
    k.sync_all().unwrap();
    k.write_all_at(&[1u8; 64 * 4096], 0).unwrap();
    drop(k);
    let report = disk.cut_power(Keep::Some { seed: 7 });
    assert!(
        report.pages_kept > 0 && report.pages_kept < report.pages,
        "64 pages: some kept, some lost: {report:?}"
    );
    mount.unmount();
    let _mount = disk.mount(&mnt).expect("mount again");
    assert!(at("dir/renamed").exists() && !at("dir/old-name").exists());
    let synced = fs::read(at("dir/synced")).unwrap();
    assert!(
        synced == b"Jello, disk" || synced == b"Yello, disk",
        "{:?}",
        String::from_utf8_lossy(&synced)
    );
    // Ones where a write survived, zeros where it did not (below a size that did).
    let pieces = fs::read(at("dir/pieces")).unwrap();
    assert!(pieces.len() <= 64 * 4096);
    assert!(
        pieces.iter().all(|&b| b <= 1),
        "nothing but what was written"
    );
}
