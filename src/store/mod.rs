//! Storage: the only code that touches sled. Owns the on-disk format, the
//! group-commit appender, cursors, destination state, attempts, dead letters and
//! the dedup index. It knows nothing of HTTP or delivery policy.
//!
//! [`Store`] opens the database and makes writes durable; each tree is owned
//! by one module and reached through a small handle (`store.cursors().get(&d)`):
//!
//! | module         | handle           | owns                                                 |
//! |----------------|------------------|------------------------------------------------------|
//! | `log/`         | [`Log`]          | `log.*` segments, `meta/seq_floor`: message reads, listings, removal of the head |
//! | `dedup`        | [`Dedup`]        | `dedup`; a batch's entries and the message-and-entries transaction |
//! | `cursors`      | [`Cursors`]      | `cursors`, `unordered`                               |
//! | `destinations` | [`Destinations`] | `dest`                                               |
//! | `attempts`     | [`Attempts`]     | `attempts`, with each failed attempt's retry run     |
//! | `dead`         | [`DeadLetters`]  | `dead`, and the dead-letter counts in memory         |
//! | `per_dest`     |                  | the key layout `attempts` and `dead` share           |
//! | [`codec`]      |                  | every value's encoding (no keys, no sled)            |
//! | `appender`     | [`Appender`]     | seq assignment, batching, group commit               |
//! | [`retention`]  |                  | what to delete when (age, cursors, disk budget)      |
//! | `open`         |                  | sled's settings, its lock, crash leftovers           |
//! | `migrate`      |                  | format 1 data dirs brought to format 2 at open       |
//! | `error`        | [`StoreError`]   | the store's errors and their classification          |
//!
//! # On-disk format (sled trees), format 2
//!
//! | tree       | key                                   | value                          |
//! |------------|---------------------------------------|--------------------------------|
//! | `log.` ‖ first key | seq u64 BE ‖ part u32 BE      | a frame or a part (below)      |
//! | `cursors`  | destination name                      | last finished seq, u64 BE      |
//! | `dest`     | destination name                      | `DestinationState`             |
//! | `attempts` | dest ‖ 0x00 ‖ seq BE ‖ attempt u32 BE | `Attempt` (+ its `RetryRun`)   |
//! | `dead`     | dest ‖ 0x00 ‖ seq BE                  | `DeadLetter`                   |
//! | `dedup`    | source ‖ 0x00 ‖ idempotency key       | `DedupEntry`                   |
//! | `unordered`| destination name                      | `UnorderedWindow` (clean stop) |
//! | `meta`     | `format` / `seq_floor`                | u32 BE (2) / u64 BE            |
//!
//! The log is a sequence of segments, each a sled tree named `log.` and
//! the 12-byte key of its first value. One append batch (a group commit) is
//! packed into as few values as it can:
//!
//! | value | key | bytes |
//! |-------|-----|-------|
//! | frame | first message's seq ‖ 0 | `0x10`, count u32 BE, then per message: seq u64 BE, length u32 BE, its `Message` record |
//! | part  | the message's seq ‖ part index | `0x11`, index u32 BE, count u32 BE, that share of its `Message` record |
//!
//! A value is at most 32 KiB (key included); a message whose record does
//! not fit one frame is stored in parts, which may span segments. A segment
//! takes at most 8 values and 256 KiB, so that sled never rewrites its leaf
//! (a value is written once), no page of it nears sled's blob threshold
//! (2 MiB with 8 MiB segments), and sled's page cache (which keeps a page
//! per shard whatever its capacity) pins at most 64 MiB of them;
//! `log/segments.rs` derives these caps from sled 0.34's constants, and says
//! when a segment of small values becomes dense and takes more than 8 (to
//! bound the number of trees). The log keeps an in-memory directory of
//! segments; retention drops whole segment trees.
//!
//! Every record is versioned (see [`codec`]); the bare counters (cursors,
//! `seq_floor`, `format`) are fixed-width big-endian integers whose meaning is
//! pinned by the `meta/format` version. A batch's values are written in one
//! sled batch, or in one transaction across the segments it fills and
//! `dedup` when it spans segments or has dedup entries, so a message is
//! stored whole or not at all, and never without its dedup entry. Nothing is
//! ever written to sled's blob files, which its flush never fsyncs.
//!
//! Format 1 (before): one tree `log` of 4 KiB chunks keyed seq ‖ chunk, in
//! a database of sled's default 512 KiB segments. sled refuses another
//! segment size for an existing database, so `migrate.rs` rebuilds such a
//! data dir beside itself and swaps the files in, crash-safely, at the
//! first open.
//!
//! # Durability
//!
//! sled's `flush()` ends in `sync_file_range`, which neither flushes the disk
//! cache nor persists metadata. [`Store::sync`] therefore follows it with
//! `fdatasync` on sled's `db` file. The appender calls it once per batch of
//! appends (group commit) before anyone is told "stored". Everything else
//! (cursors, attempts, state) becomes durable at sled's background flush or
//! the next sync; a crash may lose the last half second of it, which
//! at-least-once delivery allows.
//!
//! # Invariants
//!
//! - Seqs only grow and are never reused: the next seq is one past the larger of
//!   the last stored seq and `meta/seq_floor` (which retention raises, durably,
//!   before deleting the tail).
//! - A segment named by key K holds only values keyed K or later, and every
//!   value keyed below the next segment's name.
//! - A destination's cursor means every seq at or below it is finished for that
//!   destination (delivered, dead-lettered, or not routed to it).
//! - Retention deletes only a prefix of the log, and a message's attempts and
//!   dead letters before the message.
//!
//! # Which calls may run on async worker threads
//!
//! The runtime has as many worker threads as cores (two on the reference
//! machine), so a store call that takes a millisecond stalls every connection
//! and delivery sharing that thread. The rule:
//!
//! - **On an async thread**: a single-key operation (get, insert, remove,
//!   compare-and-swap, or one seek to the first or last key of a range) on a
//!   record whose size does not grow with message bodies or with how much is
//!   stored: a cursor, a destination state, a dead letter, an attempt, a dedup
//!   entry, a saved window, `last_seq`/`first_seq`; anything in memory
//!   (dead-letter counts, commit stats, the poisoned flag); and one
//!   exception for the hottest read: [`Log::next_routed_within`] with a
//!   scan of at most 64 messages and one record of at most 4 KiB, for a
//!   message among the 1024 newest, which sled's cache still holds since it
//!   was written: a directory lookup, one descent to the frame that holds
//!   it (an `IVec` clone), a walk of the frame's 12-byte message headers,
//!   and one message decoded.
//! - **On the blocking pool**, through [`Store::blocking`] (or [`blocking`]
//!   before a store exists): everything else. That is every read of a message
//!   ([`Log::message`], [`Log::read_ahead`], listings), every scan of a range
//!   ([`Attempts::list`], [`DeadLetters::list`], [`Log::seq_at_time`]), every
//!   batch or transaction, every sync, open and checkpoint, `size_on_disk`,
//!   and all of retention.
//!
//! A trip to the blocking pool costs two thread wake-ups: tens of µs on an
//! idle machine, milliseconds of scheduling delay when ingest keeps both cores
//! busy. So a hot path makes one trip for many records (a strict worker
//! reads up to 256 messages, about 1 MiB, per trip with [`Log::read_ahead`])
//! or none (the exception above). Measured: one trip per message halved the
//! drain rate, and 32 per trip let delivery fall behind a saturated ingest
//! for good. A method's doc says "Blocking" or "A scan" when it belongs to
//! the second group.
//!
//! # Crash behaviour
//!
//! A crash keeps each sled batch or transaction whole or not at all. Opening
//! after a crash replays sled's log; a snapshot a crash left half-written is
//! removed first (see `open.rs`). Nothing acknowledged as stored is lost: its
//! sync finished before the answer.

mod appender;
mod attempts;
pub mod codec;
mod cursors;
mod dead;
mod dedup;
mod destinations;
mod error;
pub(crate) mod log;
mod migrate;
mod open;
mod per_dest;
pub mod retention;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

pub use appender::{spawn_appender, AppendOutcome, Appender, NewMessage, OnStaged};
pub use attempts::{Attempts, Latest};
pub use codec::{
    Attempt, CodecError, DeadLetter, DestinationState, Message, MessageHead, ReplayEnd, RetryRun,
    UnorderedWindow,
};
pub use cursors::Cursors;
pub use dead::DeadLetters;
pub use dedup::Dedup;
pub use destinations::Destinations;
pub use error::StoreError;
pub use log::{BackPage, Log, MessageMeta, Scan};
pub use retention::{spawn_retention, DiskGuard, Limits};

/// The on-disk format this build writes (`meta/format`); format 1 data dirs
/// are migrated at open (see `migrate.rs`).
const FORMAT_VERSION: u32 = 2;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    log: Log,
    cursors: Cursors,
    destinations: Destinations,
    attempts: Attempts,
    dead: DeadLetters,
    dedup: Dedup,
    db_file: Arc<File>,
    /// The data dir's lock ([`open::lock_data_dir`]), held while any clone lives.
    _lock: Arc<File>,
    dir: PathBuf,
    commit: Arc<CommitStats>,
    /// Set by the first failed sync; see [`Store::sync`].
    poisoned: Arc<AtomicBool>,
}

/// What group commit looks like, for `/metrics`.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Messages per applied batch.
    pub batch_size: crate::telemetry::Count,
    /// Time of one sync (sled flush + fdatasync).
    pub sync_duration: crate::telemetry::Seconds,
}

/// Runs blocking store work on the blocking pool; a panic in it comes back
/// as [`StoreError::TaskFailed`].
pub async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

impl Store {
    /// Opens (or creates) the database under `dir`, waiting a few seconds
    /// for another instance to release it. Blocking.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = open::lock_data_dir(dir)?;
        migrate::prepare(dir)?;
        let db = open::open_sled(dir)?;
        let file_path = dir.join("db");
        let db_file = File::open(&file_path).map_err(|source| StoreError::Io {
            path: file_path,
            source,
        })?;
        let meta = db.open_tree("meta")?;
        let store = Store {
            log: Log::open(&db, meta.clone())?,
            cursors: Cursors::new(db.open_tree("cursors")?, db.open_tree("unordered")?),
            destinations: Destinations::new(db.open_tree("dest")?),
            attempts: Attempts::new(db.open_tree("attempts")?),
            dead: DeadLetters::open(db.open_tree("dead")?)?,
            dedup: Dedup::new(db.open_tree("dedup")?),
            db,
            db_file: Arc::new(db_file),
            _lock: Arc::new(lock),
            dir: dir.to_path_buf(),
            commit: Arc::default(),
            poisoned: Arc::default(),
        };
        store.check_format(&meta)?;
        Ok(store)
    }

    /// The log: messages and the seq floor.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Delivery cursors and unordered windows.
    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// Operator state of destinations.
    pub fn destinations(&self) -> &Destinations {
        &self.destinations
    }

    /// Attempt history.
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Dead letters and their counts.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }

    /// The dedup index.
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Runs `f` with a clone of this handle on the blocking pool: the way to
    /// make any call the module docs list as blocking from async code.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || f(&store)).await
    }

    /// Closes this handle and writes sled's recovery snapshot, so the next
    /// start does not replay the whole log written since this one began.
    ///
    /// sled 0.34 writes that snapshot only while opening, so this reopens the
    /// database once this, the last handle, is gone (sled's own threads may
    /// hold the lock a moment longer, which is waited for). Fails at
    /// once if other handles are still alive. Blocking.
    pub fn checkpoint(self) -> Result<(), StoreError> {
        // Every clone shares this Arc, so its count is the number of live handles.
        let others = Arc::strong_count(&self.poisoned) - 1;
        if others > 0 {
            return Err(StoreError::StillOpen(others));
        }
        let dir = self.dir.clone();
        drop(self);
        let reopened = open::open_sled(&dir)?;
        reopened.flush()?;
        Ok(())
    }

    fn check_format(&self, meta: &sled::Tree) -> Result<(), StoreError> {
        match meta.get(b"format")? {
            Some(v) => {
                let v: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| CodecError::Corrupt("format marker".into()))?;
                let v = u32::from_be_bytes(v);
                if v > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat(v));
                }
                if v < FORMAT_VERSION {
                    // Only a database of format 1's segment size is migrated.
                    return Err(StoreError::Migration(format!(
                        "format {v} in a database of format {FORMAT_VERSION}'s segment size"
                    )));
                }
            }
            None => {
                meta.insert(b"format", &FORMAT_VERSION.to_be_bytes())?;
                self.sync()?;
                // The directory entry for a new db file must be durable too.
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }

    /// Makes every write so far durable: sled flush, then fdatasync of its file.
    /// Blocking.
    ///
    /// After one failure every later call fails too: once an fsync has failed,
    /// the kernel may have dropped dirty pages, so a later "successful" sync
    /// proves nothing. The relay stops and recovers from disk on restart.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.poisoned.load(SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let r = self
            .db
            .flush()
            .map(drop)
            .map_err(StoreError::from)
            .and_then(|()| {
                self.db_file.sync_data().map_err(|source| StoreError::Io {
                    path: self.dir.join("db"),
                    source,
                })
            });
        if r.is_err() {
            self.poisoned.store(true, SeqCst);
        }
        r
    }

    /// True once a sync has failed; nothing written since can be trusted as durable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(SeqCst)
    }

    /// Bytes sled uses on disk. Blocking (reads file metadata).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Group-commit statistics.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.commit
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// Helpers shared by the store's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::model::{MessageId, Seq};

    /// A fresh store in a temp dir (keep the dir alive as long as the store).
    pub fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    pub fn message(source: &str, received_at_ms: u64, body: Vec<u8>) -> Message {
        Message {
            id: MessageId::generate(received_at_ms),
            source: source.parse().unwrap(),
            received_at_ms,
            event_type: None,
            content_type: None,
            idempotency_key: None,
            query: None,
            headers: vec![],
            body,
        }
    }

    /// Writes `m` under `seq`, without a dedup entry (one batch, one frame).
    pub fn put(store: &Store, seq: u64, m: &Message) {
        let bytes = codec::encode_message(m).unwrap();
        let index = dedup::BatchIndex::default();
        dedup::write_batch(store.log(), store.dedup(), &[(Seq(seq), bytes)], &index).unwrap();
    }

    pub fn attempt() -> Attempt {
        Attempt {
            at_ms: 1,
            status: Some(500),
            latency_ms: 1,
            error: Some("x".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DestinationName, Seq};

    #[test]
    fn cursors_and_state_survive_reopen() {
        let (dir, store) = test_support::open();
        let d: DestinationName = "billing".parse().unwrap();
        store.cursors().set(&d, Seq(41)).unwrap();
        let st = DestinationState {
            paused: true,
            ..DestinationState::default()
        };
        store.destinations().set(&d, &st).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursors().get(&d).unwrap(), Seq(41));
        assert!(store.destinations().get(&d).unwrap().paused);
    }

    #[test]
    fn a_newer_format_is_refused_and_a_checkpoint_needs_the_last_handle() {
        let (dir, store) = test_support::open();
        let other = store.clone();
        assert!(matches!(store.checkpoint(), Err(StoreError::StillOpen(1))));
        let meta = other.db.open_tree("meta").unwrap();
        meta.insert(b"format", &3u32.to_be_bytes()).unwrap();
        drop(meta);
        other.sync().unwrap();
        other.checkpoint().unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NewerFormat(3))
        ));
    }
}
