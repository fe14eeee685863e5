//! Retention and the disk budget: the background housekeeping that keeps the
//! data dir bounded. This module is the policy (what is due, when, in what
//! order); each tree's module owns how its rows are deleted.
//!
//! - **Retention** deletes log entries older than `storage.retention` once every
//!   configured destination's cursor is at or past them (a destination no longer
//!   in the config holds nothing back; a dead letter's cursor has moved on, so its
//!   message goes at retention age like the rest). Because seqs and receive times
//!   grow together, what goes is always a prefix of the log. With the messages go
//!   their `attempts` and `dead` rows (for every destination, configured or not),
//!   and expired `dedup` entries. It runs once at start, then every
//!   [`retention_interval`], on the blocking pool, yielding between steps:
//!   the log a few whole segments at a time ([`SEGMENTS_PER_STEP`]: a
//!   segment goes once every message in it is due, so up to one segment of
//!   due messages waits for the next), attempts in sled batches of at most
//!   [`BATCH_KEYS`] keys, dead letters one removal at a time (so their
//!   in-memory counts follow only removals sled reports). sled applies any
//!   batch under a lock that every other write waits for, so batches stay
//!   small: 512 removals held it about 5 ms (4096 held it 35-45 ms).
//! - **Disk budget** ([`budget`]): refuses inbound webhooks while the database
//!   is over `storage.max_disk_bytes`.
//!
//! Deletes from `log`, `attempts`, `dead` and `dedup` and raises
//! `meta/seq_floor`, only through those trees' handles. Must not touch
//! cursors or destination state (delivery and the admin API own them) and
//! never writes log entries.

pub mod budget;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::per_dest::PerDestination;
use super::{Store, StoreError};
use crate::model::{DestinationName, Seq};
use crate::time::now_ms;
pub use budget::{over_budget, DiskGuard, Limits, BUDGET_EVERY, GRACE_CAP};

/// How often retention runs (after once at start), for retentions of two minutes and more.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Retention never runs more often than this, however short `storage.retention` is.
pub const RETENTION_EVERY_MIN: Duration = Duration::from_millis(100);
/// Most attempt or dead-letter rows removed in one sled batch.
pub const BATCH_KEYS: usize = 512;
/// Most log segments dropped in one step (each a tree of at most 1.5 MiB:
/// a drop rewrites sled's meta page and frees the tree's pages).
pub const SEGMENTS_PER_STEP: usize = 16;
/// Most dedup entries examined per step (a read; expired ones are removed one by one).
pub const DEDUP_SCAN: usize = 4096;

/// How often retention runs: half the retention, but at most
/// [`RETENTION_EVERY`] and at least [`RETENTION_EVERY_MIN`] (so tests with
/// `retention = "1s"` see a pass every 500 ms).
pub fn retention_interval(retention: Duration) -> Duration {
    (retention / 2).clamp(RETENTION_EVERY_MIN, RETENTION_EVERY)
}

/// Starts retention and the disk-budget check on `tracker`; both stop on
/// `shutdown`. The budget check keeps `guard` (which ingest and the
/// appender consult) up to date with `limits`.
pub fn spawn_retention(
    store: Store,
    destinations: Vec<DestinationName>,
    retention: Duration,
    (limits, guard): (budget::Limits, Arc<DiskGuard>),
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let freed = Arc::new(AtomicU64::new(0));
    let task = Retention {
        store: store.clone(),
        destinations,
        retention,
        freed: freed.clone(),
    };
    tracker.spawn(task.run(shutdown.clone()));
    tracker.spawn(budget::budget_loop(store, limits, guard, freed, shutdown));
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
    /// Log values that could not be read (damaged, yet finished by every destination).
    damaged: u64,
    rows: u64,
    dedup: u64,
    unreadable_dedup: u64,
}

/// The per-destination trees whose rows go with their messages.
const ROW_TREES: [fn(&Store) -> &dyn PerDestination; 2] = [|s| s.attempts(), |s| s.dead_letters()];

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
                    first_seq = p.first.map(|s| s.0),
                    last_seq = p.last.map(|s| s.0),
                    damaged_values = p.damaged,
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
        let upto = self
            .store
            .blocking(move |s| finished_by_all(s, &dests))
            .await?;
        let mut pass = Pass::default();

        loop {
            let planned = move |s: &Store| s.log().plan_removal(upto, cutoff_ms, SEGMENTS_PER_STEP);
            let Some(plan) = self.step(shutdown, planned).await? else {
                return Ok(pass);
            };
            let planned = plan.summary;
            let Some(highest) = planned.highest else {
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
            pass.messages += planned.messages;
            pass.damaged += planned.damaged;
            pass.first = pass.first.or(planned.first);
            pass.last = planned.last.or(pass.last);
            self.store
                .blocking(move |s| s.log().remove(plan, || s.sync()))
                .await?;
            self.freed.fetch_add(planned.bytes, Ordering::AcqRel);
            if !planned.more {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Rows left behind by an interrupted pass or a late attempt record.
        let below = self.store.blocking(|s| s.log().first_kept_seq()).await?;
        if !self.delete_rows_below(below, shutdown, &mut pass).await? {
            return Ok(pass);
        }

        let mut after = None;
        loop {
            let expired = move |s: &Store| s.dedup().remove_expired(after, now, DEDUP_SCAN);
            let Some(b) = self.step(shutdown, expired).await? else {
                return Ok(pass);
            };
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

    /// Runs one step on the blocking pool, unless shutdown has begun (`None`).
    async fn step<T, F>(&self, shutdown: &CancellationToken, f: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        self.store.blocking(f).await.map(Some)
    }

    /// Deletes the `attempts` and `dead` rows of every seq below `below`, for
    /// every destination that has any. False if shutdown interrupted it.
    async fn delete_rows_below(
        &self,
        below: Seq,
        shutdown: &CancellationToken,
        pass: &mut Pass,
    ) -> Result<bool, StoreError> {
        for tree in ROW_TREES {
            let prefixes = self.store.blocking(move |s| tree(s).prefixes()).await?;
            for prefix in prefixes {
                loop {
                    let p = prefix.clone();
                    let rows = move |s: &Store| tree(s).remove_below(&p, below, BATCH_KEYS);
                    let Some(b) = self.step(shutdown, rows).await? else {
                        return Ok(false);
                    };
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
        .try_fold(Seq(u64::MAX), |upto, d| Ok(upto.min(s.cursors().get(d)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{attempt, message, open, put};
    use crate::store::DeadLetter;

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

    #[tokio::test]
    async fn a_pass_deletes_finished_messages_with_their_rows_for_every_destination() {
        let (_dir, store) = open();
        let (d1, gone): (DestinationName, DestinationName) =
            ("d1".parse().unwrap(), "d1-old".parse().unwrap());
        for seq in 1..=3 {
            // A segment each: retention drops whole segments.
            store.log().start_segment();
            put(&store, seq, &message("a", 1, vec![7; 10]));
            for d in [&d1, &gone] {
                store.attempts().record(d, Seq(seq), 1, &attempt()).unwrap();
                store.attempts().record(d, Seq(seq), 2, &attempt()).unwrap();
            }
        }
        let dead = DeadLetter {
            at_ms: 1,
            attempts: 2,
            last_error: "x".into(),
        };
        store.dead_letters().add(&d1, Seq(1), &dead).unwrap();
        store.dead_letters().add(&gone, Seq(3), &dead).unwrap();
        // Only d1 is configured, and it finished up to 2.
        store.cursors().set(&d1, Seq(2)).unwrap();
        let task = Retention {
            store: store.clone(),
            destinations: vec![d1.clone()],
            retention: Duration::ZERO,
            freed: Arc::default(),
        };
        let p = task.pass(&CancellationToken::new()).await.unwrap();
        assert_eq!(
            (p.messages, p.first, p.last),
            (2, Some(Seq(1)), Some(Seq(2)))
        );
        assert_eq!(p.rows, 2 * 2 * 2 + 1);
        assert!(task.freed.load(Ordering::Relaxed) > 0);
        for d in [&d1, &gone] {
            assert!(store.attempts().list(d, Seq(2)).unwrap().is_empty());
            assert_eq!(store.attempts().list(d, Seq(3)).unwrap().len(), 2);
        }
        assert_eq!(store.dead_letters().count(&d1), 0);
        assert_eq!(store.dead_letters().count(&gone), 1);
        assert!(store.log().message(Seq(3)).unwrap().is_some());
    }
}
