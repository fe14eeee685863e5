//! Retention and the disk budget: the background housekeeping that keeps the
//! data dir bounded.
//!
//! - **Retention** deletes log entries older than `storage.retention` once every
//!   configured destination's cursor is at or past them (a destination no longer
//!   in the config holds nothing back; a dead letter's cursor has moved on, so its
//!   message goes at retention age like the rest). Because seqs and receive times
//!   grow together, what goes is always a prefix of the log. With the messages go
//!   their `attempts` and `dead` rows (for every destination, configured or not),
//!   and expired `dedup` entries. It runs once at start, then every
//!   [`retention_interval`], in sled batches of at most [`BATCH_KEYS`] keys on
//!   the blocking pool, yielding between batches. sled applies any batch under
//!   a lock that every other write waits for, so batches stay small: 512
//!   removals of 4 KiB chunks hold it about 5 ms (4096 held it 35-45 ms).
//! - **Disk budget**: every [`BUDGET_EVERY`] a task compares sled's
//!   `size_on_disk()` with `storage.max_disk_bytes` and sets the flag ingest
//!   checks per request (one atomic load). See [`over_budget`] for how space freed
//!   by retention lifts a refusal even though sled's file does not shrink at once.
//!
//! Owns deleting from `log`, `attempts`, `dead` and `dedup`, and raising
//! `meta/seq_floor`. Must not touch cursors or destination state (delivery and
//! the admin API own them) and never writes log entries.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{codec, Store, StoreError};
use crate::model::{DestinationName, Seq};
use crate::time::now_ms;

/// How often retention runs (after once at start), for retentions of two minutes and more.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Retention never runs more often than this, however short `storage.retention` is.
pub const RETENTION_EVERY_MIN: Duration = Duration::from_millis(100);
/// How often the disk budget is measured.
pub const BUDGET_EVERY: Duration = Duration::from_secs(1);
/// Most keys removed in one sled batch, so at most this many messages; a batch
/// ends on a message boundary, so one message larger than this many chunks
/// still goes in one batch of its own.
pub const BATCH_KEYS: usize = 512;
/// Most dedup entries examined per step (a read; expired ones are removed one by one).
pub const DEDUP_SCAN: usize = 4096;
/// Most file growth over the budget that one retention pass can allow; see [`over_budget`].
pub const GRACE_CAP: u64 = 64 << 20;

/// How often retention runs: half the retention, but at most
/// [`RETENTION_EVERY`] and at least [`RETENTION_EVERY_MIN`] (so tests with
/// `retention = "1s"` see a pass every 500 ms).
pub fn retention_interval(retention: Duration) -> Duration {
    (retention / 2).clamp(RETENTION_EVERY_MIN, RETENTION_EVERY)
}

/// Starts retention and the disk-budget check on `tracker`; both stop on
/// `shutdown`. Returns the flag that is true while the database is over
/// `max_disk_bytes` and inbound webhooks must be refused.
pub fn spawn_retention(
    store: Store,
    destinations: Vec<DestinationName>,
    retention: Duration,
    max_disk_bytes: u64,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Arc<AtomicBool> {
    let over = Arc::new(AtomicBool::new(false));
    let freed = Arc::new(AtomicU64::new(0));
    let task = Retention {
        store: store.clone(),
        destinations,
        retention,
        freed: freed.clone(),
    };
    tracker.spawn(task.run(shutdown.clone()));
    tracker.spawn(budget_loop(
        store,
        max_disk_bytes,
        over.clone(),
        freed,
        shutdown,
    ));
    over
}

/// Whether inbound must be refused, given this measurement. `ceiling` carries
/// state between calls (start it at `max`); `freed` is how many bytes of
/// entries retention deleted since the previous call.
///
/// sled's `size_on_disk()` is the length of its file, which deletes do not
/// shrink: deleting even writes a little, and freed segments are reused by
/// later writes, the file being cut back only when its last segments fall
/// empty during later writes. Refusing whenever the size is over `max` would
/// therefore refuse forever once tripped. Instead:
///
/// - at or under `max`: accept;
/// - over `max`: refuse, unless retention has freed entries since, in which
///   case accept again until the file grows past its size at that moment by
///   more than what was freed (at most [`GRACE_CAP`]), i.e. until the freed
///   space is used up. No pass that frees nothing (a destination down, nothing
///   old enough) ever lifts a refusal.
pub fn over_budget(size: u64, max: u64, ceiling: &mut u64, freed: u64) -> bool {
    if size <= max {
        *ceiling = max;
        return false;
    }
    if freed > 0 {
        *ceiling = size.saturating_add(freed.min(GRACE_CAP));
    }
    size > *ceiling
}

async fn budget_loop(
    store: Store,
    max: u64,
    over: Arc<AtomicBool>,
    freed: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(BUDGET_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ceiling = max;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let size = match blocking(&store, |s| s.size_on_disk()).await {
            Ok(size) => size,
            Err(e) => {
                // Keep the last verdict rather than guess either way.
                tracing::warn!(error = %e, "cannot measure the database size");
                continue;
            }
        };
        let refuse = over_budget(size, max, &mut ceiling, freed.swap(0, Ordering::AcqRel));
        match (over.swap(refuse, Ordering::Relaxed), refuse) {
            (false, true) => tracing::warn!(
                size_on_disk = size,
                max_disk_bytes = max,
                "storage over max_disk_bytes: refusing inbound webhooks with 503"
            ),
            (true, false) => tracing::info!(
                size_on_disk = size,
                max_disk_bytes = max,
                "storage has room again: accepting inbound webhooks"
            ),
            _ => {}
        }
    }
}

/// Runs a blocking store operation on the blocking pool.
async fn blocking<T, F>(store: &Store, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|_| StoreError::Closed)?
}

struct Retention {
    store: Store,
    destinations: Vec<DestinationName>,
    retention: Duration,
    /// Bytes of entries deleted, for the budget task to collect.
    freed: Arc<AtomicU64>,
}

/// What one pass deleted.
#[derive(Debug, Default)]
struct Pass {
    messages: u64,
    first: Option<Seq>,
    last: Option<Seq>,
    /// Log chunks whose message had no readable head (damaged, yet finished by every destination).
    damaged: u64,
    rows: u64,
    dedup: u64,
    unreadable_dedup: u64,
}

impl Retention {
    async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(retention_interval(self.retention));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // The first tick completes at once: one pass at start.
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match self.pass(&shutdown).await {
                Ok(p) if p.messages + p.damaged + p.rows + p.dedup == 0 => {
                    tracing::debug!("retention: nothing to delete");
                }
                Ok(p) => tracing::info!(
                    messages = p.messages,
                    first_seq = ?p.first.map(|s| s.0),
                    last_seq = ?p.last.map(|s| s.0),
                    damaged_chunks = p.damaged,
                    attempt_and_dead_rows = p.rows,
                    dedup_entries = p.dedup,
                    "retention deleted expired entries"
                ),
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
        }
    }

    async fn pass(&self, shutdown: &CancellationToken) -> Result<Pass, StoreError> {
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let cutoff_ms = now.saturating_sub(retention_ms);
        let dests = self.destinations.clone();
        let upto = blocking(&self.store, move |s| finished_by_all(s, &dests)).await?;
        let mut pass = Pass::default();

        loop {
            if shutdown.is_cancelled() {
                return Ok(pass);
            }
            let plan = blocking(&self.store, move |s| plan_log_batch(s, upto, cutoff_ms)).await?;
            let Some(highest) = plan.highest else {
                break;
            };
            // Attempts and dead letters go first, so that a message that
            // answers as missing has nothing left behind.
            if !self
                .delete_rows_below(highest.next(), shutdown, &mut pass)
                .await?
            {
                return Ok(pass);
            }
            let more = plan.more;
            pass.messages += plan.messages;
            pass.damaged += plan.damaged;
            pass.first = pass.first.or(plan.first);
            pass.last = plan.last.or(pass.last);
            let bytes = plan.bytes;
            blocking(&self.store, move |s| apply_log_batch(s, plan)).await?;
            self.freed.fetch_add(bytes, Ordering::AcqRel);
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Rows left behind by an interrupted pass or a late attempt record.
        let below = blocking(&self.store, first_kept_seq).await?;
        if !self.delete_rows_below(below, shutdown, &mut pass).await? {
            return Ok(pass);
        }

        let mut after = None;
        loop {
            if shutdown.is_cancelled() {
                return Ok(pass);
            }
            let b = blocking(&self.store, move |s| delete_expired_dedup(s, after, now)).await?;
            self.freed.fetch_add(b.bytes, Ordering::AcqRel);
            pass.dedup += b.removed;
            pass.unreadable_dedup += b.unreadable;
            match b.next {
                Some(key) => after = Some(key),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        if pass.unreadable_dedup > 0 {
            tracing::warn!(
                entries = pass.unreadable_dedup,
                "dedup entries that cannot be decoded were left in place"
            );
        }
        Ok(pass)
    }

    /// Deletes the `attempts` and `dead` rows of every seq below `below`, for
    /// every destination that has any. False if shutdown interrupted it.
    async fn delete_rows_below(
        &self,
        below: Seq,
        shutdown: &CancellationToken,
        pass: &mut Pass,
    ) -> Result<bool, StoreError> {
        let trees: [fn(&Store) -> &sled::Tree; 2] = [|s| &s.attempts, |s| &s.dead];
        for tree in trees {
            let prefixes = blocking(&self.store, move |s| dest_prefixes(tree(s))).await?;
            for prefix in prefixes {
                loop {
                    if shutdown.is_cancelled() {
                        return Ok(false);
                    }
                    let p = prefix.clone();
                    let b = blocking(&self.store, move |s| delete_rows_below(tree(s), &p, below))
                        .await?;
                    self.freed.fetch_add(b.bytes, Ordering::AcqRel);
                    pass.rows += b.removed;
                    if !b.more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
        Ok(true)
    }
}

/// The highest seq every configured destination has finished (`u64::MAX` with none).
fn finished_by_all(s: &Store, dests: &[DestinationName]) -> Result<Seq, StoreError> {
    dests
        .iter()
        .try_fold(Seq(u64::MAX), |upto, d| Ok(upto.min(s.cursor(d)?)))
}

/// The lowest seq that may still have a message: the log's first or, when the
/// log is empty, one past the highest seq retention deleted (not one past the
/// last seq: a message appended meanwhile must keep its attempts).
fn first_kept_seq(s: &Store) -> Result<Seq, StoreError> {
    match s.log.first()? {
        Some((k, _)) => Ok(codec::parse_log_key(&k).map_or(Seq(0), |(seq, _)| seq)),
        None => Ok(seq_floor(s)?.next()),
    }
}

/// The next batch of whole messages to delete from the head of the log.
#[derive(Debug, Default)]
struct LogBatch {
    batch: sled::Batch,
    /// The highest seq in the batch; `None` when there is nothing to delete.
    highest: Option<Seq>,
    messages: u64,
    damaged: u64,
    first: Option<Seq>,
    last: Option<Seq>,
    bytes: u64,
    /// Stopped at the batch limit; more may be due.
    more: bool,
}

/// Collects the next batch of whole messages from the head of the log: those
/// at or below `upto` and received at or before `cutoff_ms`.
fn plan_log_batch(s: &Store, upto: Seq, cutoff_ms: u64) -> Result<LogBatch, StoreError> {
    let mut out = LogBatch::default();
    let mut highest = None;
    for (keys, kv) in s.log.iter().enumerate() {
        let (k, v) = kv?;
        let Some((seq, chunk)) = codec::parse_log_key(&k) else {
            break;
        };
        if seq > upto {
            break;
        }
        let is_head = chunk == 0;
        if is_head || highest != Some(seq) {
            // A new message starts here: batches end only on message boundaries.
            if keys >= BATCH_KEYS {
                out.more = true;
                break;
            }
            match is_head.then(|| codec::decode_head(&v)) {
                Some(Ok(head)) if head.received_at_ms > cutoff_ms => break,
                Some(Ok(_)) => {
                    out.messages += 1;
                    out.first.get_or_insert(seq);
                    out.last = Some(seq);
                }
                // No readable head: nobody can read this message, and every
                // destination is past it; dropping it keeps retention moving.
                _ => out.damaged += 1,
            }
        }
        highest = Some(seq);
        out.bytes += (k.len() + v.len()) as u64;
        out.batch.remove(k);
    }
    out.highest = highest;
    Ok(out)
}

/// Deletes a planned batch, raising `meta/seq_floor` first.
fn apply_log_batch(s: &Store, plan: LogBatch) -> Result<(), StoreError> {
    let Some(highest) = plan.highest else {
        return Ok(());
    };
    raise_floor(s, highest)?;
    // Seqs are never reused: when this batch empties the log, the floor must be
    // durable before the deletion can be.
    let tail = s
        .log
        .last()?
        .and_then(|(k, _)| codec::parse_log_key(&k))
        .map(|(seq, _)| seq);
    if tail.is_none_or(|t| t <= highest) {
        s.sync()?;
    }
    s.log.apply_batch(plan.batch)?;
    Ok(())
}

fn seq_floor(s: &Store) -> Result<Seq, StoreError> {
    match s.meta.get(b"seq_floor")? {
        Some(v) => Ok(codec::decode_seq(&v)?),
        None => Ok(Seq(0)),
    }
}

/// Sets `meta/seq_floor` to `seq` unless it is already at or above it.
fn raise_floor(s: &Store, seq: Seq) -> Result<(), StoreError> {
    if seq > seq_floor(s)? {
        s.meta.insert(b"seq_floor", &seq.to_be_bytes())?;
    }
    Ok(())
}

/// Every distinct `name ‖ 0x00` prefix in a per-destination tree, found by
/// skipping from one name to the next (one lookup per destination).
fn dest_prefixes(tree: &sled::Tree) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    while let Some(kv) = tree.range(from.as_slice()..).next() {
        let (k, _) = kv?;
        match k.iter().position(|&b| b == 0) {
            Some(end) => {
                out.push(k[..=end].to_vec());
                // `name ‖ 0x01` sorts after every `name ‖ 0x00 ‖ …` and before the next name.
                from = k[..end].to_vec();
                from.push(1);
            }
            None => {
                // Not a per-destination key; step over just this one.
                from = k.to_vec();
                from.push(0);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct RowsBatch {
    removed: u64,
    bytes: u64,
    more: bool,
}

/// Deletes up to [`BATCH_KEYS`] rows under `prefix` whose seq is below `below`.
fn delete_rows_below(
    tree: &sled::Tree,
    prefix: &[u8],
    below: Seq,
) -> Result<RowsBatch, StoreError> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&below.to_be_bytes());
    let mut batch = sled::Batch::default();
    let mut out = RowsBatch::default();
    for kv in tree.range(prefix..end.as_slice()) {
        if out.removed as usize >= BATCH_KEYS {
            out.more = true;
            break;
        }
        let (k, v) = kv?;
        out.removed += 1;
        out.bytes += (k.len() + v.len()) as u64;
        batch.remove(k);
    }
    if out.removed > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct DedupBatch {
    removed: u64,
    unreadable: u64,
    bytes: u64,
    /// Where the next batch starts (after this key); `None` when done.
    next: Option<Vec<u8>>,
}

/// Looks at up to [`DEDUP_SCAN`] dedup entries after `after` and deletes the
/// expired ones. Each removal is a compare-and-swap, so an entry the appender
/// rewrote in the meantime stays.
fn delete_expired_dedup(
    s: &Store,
    after: Option<Vec<u8>>,
    now_ms: u64,
) -> Result<DedupBatch, StoreError> {
    let iter = match &after {
        Some(a) => s
            .dedup
            .range::<&[u8], _>((Bound::Excluded(a.as_slice()), Bound::Unbounded)),
        None => s.dedup.iter(),
    };
    let mut out = DedupBatch::default();
    let mut seen = 0usize;
    for kv in iter {
        let (k, v) = kv?;
        match codec::decode_dedup(&v) {
            Ok(e) if e.expires_at_ms <= now_ms => {
                if s.dedup
                    .compare_and_swap(&k, Some(&v), None::<&[u8]>)?
                    .is_ok()
                {
                    out.removed += 1;
                    out.bytes += (k.len() + v.len()) as u64;
                }
            }
            Ok(_) => {}
            Err(_) => out.unreadable += 1,
        }
        seen += 1;
        if seen >= DEDUP_SCAN {
            out.next = Some(k.to_vec());
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, SourceName};
    use crate::store::{Attempt, DeadLetter, Message};

    fn put(store: &Store, seq: u64, received_at_ms: u64, body_len: usize) {
        let m = Message {
            id: MessageId::generate(received_at_ms),
            source: "a".parse().unwrap(),
            received_at_ms,
            content_type: None,
            idempotency_key: None,
            headers: vec![],
            body: vec![7; body_len],
        };
        let bytes = codec::encode_message(&m).unwrap();
        store.write_batch(&[(Seq(seq), bytes)], &[]).unwrap();
    }

    fn attempt() -> Attempt {
        Attempt {
            at_ms: 1,
            status: Some(500),
            latency_ms: 1,
            error: Some("x".into()),
        }
    }

    fn delete_log_batch(store: &Store, upto: Seq, cutoff: u64) -> LogBatch {
        let mut plan = plan_log_batch(store, upto, cutoff).unwrap();
        let batch = std::mem::take(&mut plan.batch);
        apply_log_batch(
            store,
            LogBatch {
                batch,
                highest: plan.highest,
                ..LogBatch::default()
            },
        )
        .unwrap();
        plan
    }

    fn drain(store: &Store, upto: Seq, cutoff: u64) -> LogBatch {
        let mut total = LogBatch::default();
        loop {
            let b = delete_log_batch(store, upto, cutoff);
            total.messages += b.messages;
            total.damaged += b.damaged;
            total.first = total.first.or(b.first);
            total.last = b.last.or(total.last);
            if !b.more {
                return total;
            }
        }
    }

    #[test]
    fn interval_is_half_the_retention_within_bounds() {
        assert_eq!(
            retention_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            retention_interval(Duration::from_millis(10)),
            RETENTION_EVERY_MIN
        );
        assert_eq!(
            retention_interval(Duration::from_secs(7 * 86400)),
            RETENTION_EVERY
        );
    }

    #[test]
    fn budget_refuses_over_max_until_retention_frees_and_again_when_that_is_used_up() {
        let max = 1000;
        let mut ceiling = max;
        assert!(!over_budget(900, max, &mut ceiling, 0));
        assert!(over_budget(1100, max, &mut ceiling, 0));
        // A pass that frees nothing never lifts the refusal.
        assert!(over_budget(1100, max, &mut ceiling, 0));
        // Freed 300 bytes: accept, while the file stays within 300 of its size now.
        assert!(!over_budget(1150, max, &mut ceiling, 300));
        assert!(!over_budget(1450, max, &mut ceiling, 0));
        assert!(over_budget(1451, max, &mut ceiling, 0));
        // Back under the budget forgets the allowance.
        assert!(!over_budget(999, max, &mut ceiling, 0));
        assert!(over_budget(1001, max, &mut ceiling, 0));
        // The allowance is capped.
        assert!(!over_budget(2000, max, &mut ceiling, u64::MAX));
        assert_eq!(ceiling, 2000 + GRACE_CAP);
    }

    #[test]
    fn deletes_the_old_finished_prefix_only_and_raises_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 1..=3 old, 4 young.
        for seq in 1..=3 {
            put(&store, seq, 1_000, 10_000);
        }
        put(&store, 4, 9_000, 10);
        // Finished only up to 2: 3 stays although old.
        let b = drain(&store, Seq(2), 5_000);
        assert_eq!(
            (b.messages, b.first, b.last),
            (2, Some(Seq(1)), Some(Seq(2)))
        );
        assert!(store.message(Seq(2)).unwrap().is_none());
        assert!(store.message(Seq(3)).unwrap().is_some());
        // Finished everywhere: 3 goes, 4 is too young.
        assert_eq!(drain(&store, Seq(u64::MAX), 5_000).messages, 1);
        assert!(store.message(Seq(4)).unwrap().is_some());
        // Old enough now: the log empties and the floor keeps the seq.
        assert_eq!(drain(&store, Seq(u64::MAX), 10_000).messages, 1);
        assert!(store.log.is_empty());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_seq().unwrap(), Seq(4));
    }

    #[test]
    fn batches_are_bounded_and_end_on_message_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let n = BATCH_KEYS as u64 + 10;
        for seq in 1..=n {
            put(&store, seq, 1, 10);
        }
        // A message of many chunks.
        put(&store, n + 1, 1, crate::store::CHUNK_BYTES * 3);
        let first = delete_log_batch(&store, Seq(u64::MAX), 5);
        assert_eq!(first.messages, BATCH_KEYS as u64);
        assert!(first.more);
        let rest = drain(&store, Seq(u64::MAX), 5);
        assert_eq!(rest.messages, 11);
        assert!(store.log.is_empty());
        assert_eq!(store.last_seq().unwrap(), Seq(n + 1));
    }

    #[test]
    fn attempts_and_dead_rows_of_deleted_messages_go_for_every_destination() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d1, d2): (DestinationName, DestinationName) =
            ("d1".parse().unwrap(), "d1-old".parse().unwrap());
        for seq in 1..=3 {
            put(&store, seq, 1, 10);
            for d in [&d1, &d2] {
                store.record_attempt(d, Seq(seq), 1, &attempt()).unwrap();
                store.record_attempt(d, Seq(seq), 2, &attempt()).unwrap();
            }
        }
        let dead = DeadLetter {
            at_ms: 1,
            attempts: 2,
            last_error: "x".into(),
        };
        store.add_dead_letter(&d1, Seq(1), &dead).unwrap();
        drain(&store, Seq(2), 5);
        let below = first_kept_seq(&store).unwrap();
        assert_eq!(below, Seq(3));
        for tree in [&store.attempts, &store.dead] {
            for prefix in dest_prefixes(tree).unwrap() {
                while delete_rows_below(tree, &prefix, below).unwrap().more {}
            }
        }
        for d in [&d1, &d2] {
            assert!(store.attempts(d, Seq(1)).unwrap().is_empty());
            assert!(store.attempts(d, Seq(2)).unwrap().is_empty());
            assert_eq!(store.attempts(d, Seq(3)).unwrap().len(), 2);
        }
        assert_eq!(store.dead_letter_count(&d1), 0);
    }

    #[test]
    fn only_expired_dedup_entries_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let src: SourceName = "a".parse().unwrap();
        let n = DEDUP_SCAN + 100;
        for i in 0..n {
            let e = codec::DedupEntry {
                seq: Seq(i as u64),
                id: MessageId::generate(1),
                expires_at_ms: if i % 2 == 0 { 100 } else { 10_000 },
            };
            store
                .dedup
                .insert(
                    codec::dedup_key(&src, &format!("k{i}")),
                    codec::encode_dedup(&e).unwrap(),
                )
                .unwrap();
        }
        let mut after = None;
        let mut removed = 0;
        loop {
            let b = delete_expired_dedup(&store, after, 5_000).unwrap();
            removed += b.removed;
            match b.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(removed as usize, n / 2);
        assert!(store.dedup_lookup(&src, "k0", 50).unwrap().is_none());
        assert!(store.dedup_lookup(&src, "k1", 5_000).unwrap().is_some());
    }
}
