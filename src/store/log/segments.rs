//! The log's segments: one sled tree per segment, named `log.` ‖ its first
//! key, a directory of them in memory, and the appender's current segment
//! (the tail). Packs an append batch into frame and part values
//! ([`codec::encode_frame`], [`codec::encode_parts`]) and those into
//! segments, opening new ones as they fill.
//!
//! # Why segments, and their caps
//!
//! sled 0.34 (pinned in Cargo.lock) writes every insert as a fragment of its
//! leaf page; once a page has [`PAGE_CONSOLIDATION_THRESHOLD`] (10) entries
//! in its chain, including its base, the next update rewrites the whole leaf,
//! and a leaf of more than 16 entries splits, rewriting both halves. Sequential
//! inserts into one tree therefore wrote every value about 4.6 times. A tree
//! that takes at most [`CHEAP_VALUES`] (8) inserts after its empty base never
//! consolidates nor splits, so each value is written once.
//!
//! sled writes any page whose serialized size exceeds
//! `segment_size / MINIMUM_ITEMS_PER_SEGMENT` (8 MiB / 4 = 2 MiB here) to a
//! blob file that it never fsyncs, and its segment cleaner rewrites a whole
//! page when it moves it; and its page cache keeps at least one page per
//! shard (256 of them) in memory whatever its capacity. A segment's values
//! therefore total at most [`SEGMENT_BYTES`] (256 KiB, keys included): a
//! leaf that size is far from the blob threshold, and 256 of them are the
//! most the cache can pin (64 MiB). A frame is at most [`FRAME_BYTES`], an
//! eighth of that, so eight full frames fill a segment.
//!
//! Every tree is an entry of sled's meta page, which sled rewrites whole
//! whenever a tree is created or dropped, and which is itself a page (blob
//! threshold included). So segments are not free: with N of them, opening
//! one and dropping it later each write ~N × [`META_ENTRY_BYTES`]. A
//! segment that has its eight values but holds less than that twice over
//! (small frames: light traffic, or a long log) becomes dense and keeps
//! taking values up to [`DENSE_SEGMENT_BYTES`]: leaf consolidations and
//! splits then cost what they cost in any sled tree (its leaves split at 17
//! values, so no page nears the blob threshold), and the number of segments
//! stays bounded by the log's size over what they hold. No segment is
//! opened beyond [`MAX_SEGMENTS`].
//!
//! [`PAGE_CONSOLIDATION_THRESHOLD`]: https://docs.rs/sled/0.34.7/src/sled/pagecache/constants.rs.html

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{key, KEY_LEN};
use crate::model::Seq;
use crate::store::codec::{self, CodecError};
use crate::store::StoreError;

/// Values a segment takes before its leaf would consolidate (sled 0.34:
/// `PAGE_CONSOLIDATION_THRESHOLD` = 10 page entries, the empty base
/// included, so 9 fragments; one is kept as margin).
pub const CHEAP_VALUES: usize = 8;
/// The segment size sled is configured with (`segment_size`). Its blob
/// threshold is a quarter of it (sled 0.34's `MINIMUM_ITEMS_PER_SEGMENT` =
/// 4): 2 MiB.
pub const SEGMENT_SIZE: usize = 8 << 20;
const BLOB_THRESHOLD: usize = SEGMENT_SIZE / 4;
/// Most bytes (keys and values) a segment of at most [`CHEAP_VALUES`]
/// values holds: one leaf page, all of it in memory while sled caches it.
/// sled 0.34's page cache has 256 shards and each keeps at least the last
/// page it saw, whatever its capacity, so pages this size can hold up to
/// 256 × 256 KiB = 64 MiB in memory: the memory bound sets this cap, far
/// below the blob threshold.
pub const SEGMENT_BYTES: usize = 256 << 10;
/// Most bytes of one value (frame or part), key included: an eighth of a segment.
pub const FRAME_BYTES: usize = SEGMENT_BYTES / CHEAP_VALUES;
/// Most bytes a dense segment (below) holds: three quarters of the blob
/// threshold, so that even a leaf holding all of it would stay in the main
/// file. Its leaves split at 17 values, so each page stays far smaller.
pub const DENSE_SEGMENT_BYTES: usize = BLOB_THRESHOLD / 4 * 3;
/// What one segment costs in sled's meta page: its name (`log.` and a
/// 12-byte key) with a length prefix and its root page id, rounded up.
pub const META_ENTRY_BYTES: usize = 32;
/// A segment whose eight values hold fewer bytes than this many times the
/// number of segments becomes dense: it takes values up to
/// [`DENSE_SEGMENT_BYTES`], filling like any sled tree (consolidations included,
/// ~4.6 writes per value). Otherwise it closes: its creation and its drop
/// rewrite the meta page (~[`META_ENTRY_BYTES`] per segment each time), at
/// most twice its values' bytes, so its values cost at most ~3 writes each,
/// less than the dense alternative.
const DENSE_BELOW: usize = META_ENTRY_BYTES;
/// Most segments at once: keeps sled's meta page (~[`META_ENTRY_BYTES`]
/// each) under half its blob threshold. Past 8,192 segments every new one
/// is dense (a segment of 8 full frames holds less than 32 × 8,192 bytes),
/// so this is ~38 GiB of log; appends fail beyond it.
pub const MAX_SEGMENTS: usize = BLOB_THRESHOLD / 2 / META_ENTRY_BYTES;

// The caps, checked against sled 0.34's constants at compile time.
const _: () = {
    // Consolidation at PAGE_CONSOLIDATION_THRESHOLD = 10 page entries, the empty base being one.
    assert!(1 + CHEAP_VALUES < 10);
    assert!(FRAME_BYTES * CHEAP_VALUES == SEGMENT_BYTES);
    assert!(SEGMENT_BYTES < DENSE_SEGMENT_BYTES);
    assert!(DENSE_SEGMENT_BYTES <= BLOB_THRESHOLD / 4 * 3);
    // A dense leaf splits past 16 values.
    assert!(17 * FRAME_BYTES <= BLOB_THRESHOLD / 2);
    // sled's cache pins up to one page per shard (N_SHARDS = 256).
    assert!(256 * SEGMENT_BYTES <= 64 << 20);
    assert!(MAX_SEGMENTS * META_ENTRY_BYTES <= BLOB_THRESHOLD / 2);
};

const PREFIX: &[u8] = b"log.";

/// A segment's first key, which is its name.
pub type SegKey = [u8; KEY_LEN];

/// The sled tree name of the segment starting at `first`.
pub fn tree_name(first: &SegKey) -> Vec<u8> {
    [PREFIX, first.as_slice()].concat()
}

/// The first key of a segment tree's name; `None` for other trees.
pub fn parse_tree_name(name: &[u8]) -> Option<SegKey> {
    name.strip_prefix(PREFIX)?.try_into().ok()
}

/// Segments by first key.
pub type Dir = BTreeMap<SegKey, sled::Tree>;

/// The segment the appender writes into.
#[derive(Clone)]
pub struct Tail {
    pub key: SegKey,
    pub tree: sled::Tree,
    pub values: usize,
    pub bytes: usize,
    /// Takes values up to [`DENSE_SEGMENT_BYTES`] rather than [`CHEAP_VALUES`].
    pub dense: bool,
}

impl Tail {
    fn cap(&self) -> usize {
        if self.dense {
            DENSE_SEGMENT_BYTES
        } else {
            SEGMENT_BYTES
        }
    }

    fn accepts(&self, len: usize) -> bool {
        self.bytes + len <= self.cap() && (self.dense || self.values < CHEAP_VALUES)
    }

    /// Decides, once the segment has its eight values, whether it goes on.
    fn count(&mut self, len: usize, segments: usize) {
        self.values += 1;
        self.bytes += len;
        if self.values == CHEAP_VALUES && self.bytes < DENSE_BELOW.saturating_mul(segments) {
            self.dense = true;
        }
    }
}

/// The directory and the tail. Lock order: tail, then directory.
pub struct Segments {
    db: sled::Db,
    dir: RwLock<Dir>,
    tail: Mutex<Option<Tail>>,
}

impl Segments {
    /// Finds every segment tree of `db`. Blocking.
    pub fn open(db: &sled::Db) -> Result<Segments, StoreError> {
        let mut dir = Dir::new();
        for name in db.tree_names() {
            if let Some(first) = parse_tree_name(&name) {
                dir.insert(first, db.open_tree(&name)?);
            }
        }
        drop_trailing_empty(db, &mut dir)?;
        let tail = match dir.last_key_value() {
            Some((k, tree)) => Some(load_tail(*k, tree, dir.len())?),
            None => None,
        };
        Ok(Segments {
            db: db.clone(),
            dir: RwLock::new(dir),
            tail: Mutex::new(tail),
        })
    }

    /// The directory, for reading. Held while a walk runs, so that
    /// retention cannot drop a tree under it.
    pub fn read(&self) -> RwLockReadGuard<'_, Dir> {
        self.dir.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Dir> {
        self.dir.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tail, locked: the appender holds it from staging to commit, and
    /// retention while it drops segments.
    pub fn lock_tail(&self) -> MutexGuard<'_, Option<Tail>> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the tail from disk after a failed write, dropping the
    /// segments that write opened and left empty.
    pub fn reload_tail(&self, tail: &mut Option<Tail>) {
        let mut dir = self.write();
        if drop_trailing_empty(&self.db, &mut dir).is_err() {
            *tail = None;
            return;
        }
        let live = dir.len();
        *tail = dir
            .last_key_value()
            .and_then(|(k, tree)| load_tail(*k, tree, live).ok());
    }

    /// Opens (or finds) the segment whose first key is `first`.
    fn open_segment(&self, first: SegKey) -> Result<Tail, StoreError> {
        let mut dir = self.write();
        if let Some(tree) = dir.get(&first) {
            return load_tail(first, tree, dir.len());
        }
        if dir.len() >= MAX_SEGMENTS {
            return Err(StoreError::TooManySegments(dir.len()));
        }
        let tree = self.db.open_tree(tree_name(&first))?;
        dir.insert(first, tree.clone());
        Ok(Tail {
            key: first,
            tree,
            values: 0,
            bytes: 0,
            dense: false,
        })
    }

    /// Drops the segments `firsts` (their trees and directory entries);
    /// the bytes their values held. Takes the tail lock, so a segment the
    /// appender is writing into is never dropped under it.
    pub fn drop_segments(&self, firsts: &[SegKey]) -> Result<(), StoreError> {
        let mut tail = self.lock_tail();
        let mut dir = self.write();
        for first in firsts {
            if tail.as_ref().is_some_and(|t| t.key == *first) {
                *tail = None;
            }
            if dir.remove(first).is_some() {
                self.db.drop_tree(tree_name(first))?;
            }
        }
        Ok(())
    }

    /// Packs encoded messages into values and those into segments, after
    /// `tail`; opens the segments it needs. Nothing is written yet: the
    /// caller applies the batches (in one transaction when there are
    /// several) and then stores [`Staged::tail`] as the new tail.
    pub fn stage(
        &self,
        tail: &Option<Tail>,
        messages: &[(Seq, Vec<u8>)],
    ) -> Result<Staged, StoreError> {
        let mut p = Placer {
            segments: self,
            live: self.read().len(),
            staged: Staged {
                writes: Vec::new(),
                tail: tail.clone(),
            },
        };
        let mut frame: Vec<(Seq, &[u8])> = Vec::new();
        // Frame sizes here are value bytes; a value's key comes on top.
        let max_value = FRAME_BYTES - KEY_LEN;
        let (mut frame_len, mut frame_cap) = (codec::FRAME_HEADER, max_value);
        for (seq, record) in messages {
            let entry = codec::FRAME_ENTRY_HEADER + record.len();
            if codec::FRAME_HEADER + entry > max_value {
                p.flush(&mut frame)?;
                frame_len = codec::FRAME_HEADER;
                for (i, part) in codec::encode_parts(record, max_value)?
                    .into_iter()
                    .enumerate()
                {
                    let i = u32::try_from(i)
                        .map_err(|_| CodecError::Encode("message too large".into()))?;
                    p.place(key(*seq, i), part)?;
                }
                continue;
            }
            if !frame.is_empty() && frame_len + entry > frame_cap {
                p.flush(&mut frame)?;
                frame_len = codec::FRAME_HEADER;
            }
            if frame.is_empty() {
                // Fill what the tail has left, unless not even this message fits there.
                frame_cap = p.room();
                if frame_len + entry > frame_cap {
                    frame_cap = max_value;
                }
            }
            frame.push((*seq, record));
            frame_len += entry;
        }
        p.flush(&mut frame)?;
        Ok(p.staged)
    }
}

/// A staged append: one batch per segment it touches, in key order.
pub struct Staged {
    pub writes: Vec<(SegKey, sled::Tree, sled::Batch)>,
    /// The tail once the batches are applied.
    pub tail: Option<Tail>,
}

struct Placer<'a> {
    segments: &'a Segments,
    live: usize,
    staged: Staged,
}

impl Placer<'_> {
    /// Bytes the next value can have and still go to the tail; a full
    /// frame's when it goes to a new segment.
    fn room(&self) -> usize {
        let room = match &self.staged.tail {
            Some(t) if t.accepts(KEY_LEN + codec::FRAME_HEADER + 64) => {
                (t.cap() - t.bytes).min(FRAME_BYTES)
            }
            _ => FRAME_BYTES,
        };
        room - KEY_LEN
    }

    fn flush(&mut self, frame: &mut Vec<(Seq, &[u8])>) -> Result<(), StoreError> {
        let Some(&(first, _)) = frame.first() else {
            return Ok(());
        };
        let value = codec::encode_frame(frame.iter().copied())?;
        frame.clear();
        self.place(key(first, 0), value)
    }

    fn place(&mut self, k: SegKey, value: Vec<u8>) -> Result<(), StoreError> {
        let len = KEY_LEN + value.len();
        let fits = self.staged.tail.as_ref().is_some_and(|t| t.accepts(len));
        if !fits {
            let opened = self.segments.open_segment(k)?;
            if opened.values == 0 {
                self.live += 1;
            }
            self.staged.tail = Some(opened);
        }
        let Some(tail) = self.staged.tail.as_mut() else {
            return Err(CodecError::Encode("no segment to write to".into()).into());
        };
        tail.count(len, self.live);
        match self.staged.writes.last_mut() {
            Some((first, _, batch)) if *first == tail.key => batch.insert(&k[..], value),
            _ => {
                let mut batch = sled::Batch::default();
                batch.insert(&k[..], value);
                self.staged
                    .writes
                    .push((tail.key, tail.tree.clone(), batch));
            }
        }
        Ok(())
    }
}

/// Drops the empty segments at the end of the log: opened for a write that
/// then failed or was cut by a crash. A later write opens its own, named by
/// its first key, so a segment never holds a key below its name.
fn drop_trailing_empty(db: &sled::Db, dir: &mut Dir) -> Result<(), StoreError> {
    while let Some(entry) = dir.last_entry() {
        if !entry.get().is_empty() {
            break;
        }
        let first = *entry.key();
        entry.remove();
        db.drop_tree(tree_name(&first))?;
    }
    Ok(())
}

/// A segment's value count and bytes, read from disk (at most a segment's
/// worth), among `segments` segments.
fn load_tail(key: SegKey, tree: &sled::Tree, segments: usize) -> Result<Tail, StoreError> {
    let mut tail = Tail {
        key,
        tree: tree.clone(),
        values: 0,
        bytes: 0,
        dense: false,
    };
    for kv in tree.iter() {
        let (k, v) = kv?;
        tail.count(k.len() + v.len(), segments);
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_their_meta_entry() {
        let name = tree_name(&key(Seq(7), 0));
        assert!(name.len() + 1 + 9 <= META_ENTRY_BYTES);
        assert_eq!(parse_tree_name(&name), Some(key(Seq(7), 0)));
        assert_eq!(parse_tree_name(b"log"), None);
        assert_eq!(parse_tree_name(b"meta"), None);
    }
}
