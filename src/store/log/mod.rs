//! The log: segment trees `log.<first key>` (messages in frames and parts,
//! by seq) and `meta/seq_floor`.
//!
//! Owns the log's key layout, its segments ([`segments`]), every read of a
//! message ([`walk`]), and the seq floor that keeps seqs from being reused.
//! Writes come from two places only: the appender (through
//! [`super::dedup::write_batch`], which puts a batch's dedup entries in the
//! same transaction) and retention (through [`removal`]). Must not touch
//! any other tree.
//!
//! - [`segments`]: the segment trees, their caps, and packing a batch into them;
//! - [`walk`]: reading messages in order across values and segments;
//! - [`query`]: the admin API's listings and time lookups;
//! - [`removal`]: retention's deletion of the log's head, whole segments at a time.

mod query;
pub mod removal;
pub mod segments;
mod walk;

use std::sync::Arc;

use super::codec::{self, LogValue, Message};
use super::StoreError;
use crate::model::{Seq, SourceName};

pub use query::{BackPage, MessageMeta, WholeOk};
use segments::Segments;
use walk::Walk;

const SEQ_FLOOR: &[u8] = b"seq_floor";

/// Bytes of a log key.
pub const KEY_LEN: usize = 12;

/// Log key: seq (8 bytes BE) ‖ part (4 bytes BE). A frame is keyed by its
/// first message's seq and part 0; a message in parts by its seq and each
/// part's index.
pub fn key(seq: Seq, part: u32) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&part.to_be_bytes());
    k
}

/// Splits a log key; `None` if it is not 12 bytes.
pub fn parse_key(k: &[u8]) -> Option<(Seq, u32)> {
    let seq: [u8; 8] = k.get(..8)?.try_into().ok()?;
    let part: [u8; 4] = k.get(8..12)?.try_into().ok()?;
    (k.len() == KEY_LEN).then(|| (Seq::from_be_bytes(seq), u32::from_be_bytes(part)))
}

/// Result of looking for a destination's next message.
#[derive(Debug)]
pub enum Scan {
    /// The next routed message.
    Found(Seq, Box<Message>),
    /// Nothing routed up to and including this seq (may be the starting point).
    Nothing(Seq),
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Log {
    segments: Arc<Segments>,
    /// Shared with the store, which owns `meta/format`; only `seq_floor` is ours.
    meta: sled::Tree,
}

impl Log {
    /// Finds the log's segments in `db`. Blocking.
    pub(super) fn open(db: &sled::Db, meta: sled::Tree) -> Result<Log, StoreError> {
        Ok(Log {
            segments: Arc::new(Segments::open(db)?),
            meta,
        })
    }

    /// The segments, for the one transaction that spans them and `dedup`.
    pub(super) fn segments(&self) -> &Segments {
        &self.segments
    }

    /// A walk from `from` on. One descent of one segment's tree.
    fn walk(&self, from: Seq) -> Result<Walk<'_>, StoreError> {
        Walk::new(self.segments.read(), from)
    }

    /// The highest seq ever assigned (0 when the log has never held anything).
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        let mut from_log = Seq(0);
        for tree in self.segments.read().values().rev() {
            let Some((k, v)) = tree.last()? else {
                continue;
            };
            let (seq, _) = parse_key(&k).unwrap_or_default();
            from_log = match codec::decode_log_value(&v) {
                Ok(LogValue::Frame(mut entries)) => {
                    let mut last = seq;
                    while let Some(Ok((s, _))) = entries.next(&v) {
                        last = s;
                    }
                    last
                }
                _ => seq,
            };
            break;
        }
        Ok(from_log.max(self.seq_floor()?))
    }

    /// The lowest seq still in the log.
    pub fn first_seq(&self) -> Result<Option<Seq>, StoreError> {
        Ok(self.walk(Seq(0))?.next()?.map(|e| e.seq))
    }

    /// The highest seq retention deleted (0 when it never deleted any).
    fn seq_floor(&self) -> Result<Seq, StoreError> {
        match self.meta.get(SEQ_FLOOR)? {
            Some(v) => Ok(codec::decode_seq(&v)?),
            None => Ok(Seq(0)),
        }
    }

    /// Reads one whole message. Blocking.
    pub fn message(&self, seq: Seq) -> Result<Option<Message>, StoreError> {
        let mut walk = self.walk(seq)?;
        match walk.next()? {
            Some(entry) if entry.seq == seq => Ok(Some(walk.message(&entry)?)),
            _ => Ok(None),
        }
    }

    /// Finds the first message after `after` (and at most `upto`) whose source passes
    /// `routes`, looking at no more than `budget` messages so callers stay
    /// responsive. Blocking.
    pub fn next_routed(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        routes: impl Fn(&SourceName) -> bool,
    ) -> Result<Scan, StoreError> {
        self.next_routed_within(after, upto, budget, usize::MAX, routes)
    }

    /// [`Log::next_routed`] that stops before a routed message whose record
    /// is larger than `max_bytes` (one in parts counts its first part's
    /// size per part), answering `Nothing` up
    /// to the seq it saw before that one (`Nothing(after)` when that is the
    /// very next message). With a small budget and a small `max_bytes`,
    /// bounded enough for an async thread when the messages are the newest,
    /// which sled still holds in its cache: one descent to the frame that
    /// holds `after + 1`, a walk of frame headers, and one message decoded.
    pub fn next_routed_within(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        max_bytes: usize,
        routes: impl Fn(&SourceName) -> bool,
    ) -> Result<Scan, StoreError> {
        if after >= upto {
            return Ok(Scan::Nothing(after));
        }
        let mut walk = self.walk(after.next())?;
        Self::next_in(&mut walk, after, upto, budget, max_bytes, &routes)
    }

    /// The next routed message of `walk` (positioned after `after`).
    fn next_in(
        walk: &mut Walk<'_>,
        after: Seq,
        upto: Seq,
        budget: usize,
        max_bytes: usize,
        routes: &impl Fn(&SourceName) -> bool,
    ) -> Result<Scan, StoreError> {
        let mut seen = after;
        for _ in 0..budget {
            let Some(entry) = walk.next()? else {
                // Nothing stored up to `upto` (gaps come from retention): all of it is scanned.
                return Ok(Scan::Nothing(upto));
            };
            if entry.seq > upto {
                return Ok(Scan::Nothing(upto));
            }
            if routes(&entry.head()?.source) {
                // A part is about as large as the first one.
                if (entry.values as usize).saturating_mul(entry.len()) > max_bytes {
                    return Ok(Scan::Nothing(seen));
                }
                let message = walk.message(&entry)?;
                return Ok(Scan::Found(entry.seq, Box::new(message)));
            }
            seen = entry.seq;
        }
        Ok(Scan::Nothing(seen))
    }

    /// [`Log::next_routed`] repeated from where the last one found a
    /// message, until `max_found` messages or about `max_bytes` of bodies are
    /// found (at least one), or up to and including the first
    /// [`Scan::Nothing`], which is then last; an error after a message was
    /// found ends the read instead of losing it. One trip to the blocking pool
    /// and one walk for several messages: a trip per message halved the
    /// delivery rate. Blocking.
    pub fn read_ahead(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        (max_found, max_bytes): (usize, usize),
        routes: impl Fn(&SourceName) -> bool,
    ) -> Result<Vec<Scan>, StoreError> {
        if after >= upto {
            return Ok(vec![Scan::Nothing(after)]);
        }
        let mut walk = self.walk(after.next())?;
        let mut out = Vec::new();
        let (mut from, mut bytes) = (after, 0);
        while out.is_empty() || (out.len() < max_found && bytes < max_bytes) {
            if from >= upto {
                out.push(Scan::Nothing(upto));
                break;
            }
            let scan = match Self::next_in(&mut walk, from, upto, budget, usize::MAX, &routes) {
                Ok(scan) => scan,
                // What was found before a damaged message is delivered
                // first; the next read starts at the damage and reports it.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            let Scan::Found(seq, m) = &scan else {
                out.push(scan);
                break;
            };
            (from, bytes) = (*seq, bytes + m.body.len());
            out.push(scan);
        }
        Ok(out)
    }
}

#[cfg(test)]
impl Log {
    /// Makes the next append open a new segment.
    pub(crate) fn start_segment(&self) {
        *self.segments.lock_tail() = None;
    }

    /// The first key of every segment, in order.
    pub(crate) fn segment_keys(&self) -> Vec<(Seq, u32)> {
        let dir = self.segments.read();
        dir.keys().filter_map(|k| parse_key(k)).collect()
    }

    /// Removes one value (to damage a message).
    pub(crate) fn remove_value(&self, seq: Seq, part: u32) {
        let k = key(seq, part);
        for tree in self.segments.read().values() {
            tree.remove(k).unwrap();
        }
    }

    /// Every value's key and length, in order.
    pub(crate) fn values(&self) -> Vec<((Seq, u32), usize)> {
        let dir = self.segments.read();
        let mut out = Vec::new();
        for tree in dir.values() {
            for kv in tree.iter() {
                let (k, v) = kv.unwrap();
                out.push((parse_key(&k).unwrap(), v.len()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::segments::{CHEAP_VALUES, FRAME_BYTES, SEGMENT_BYTES};
    use super::*;
    use crate::store::dedup::{write_batch, BatchIndex};
    use crate::store::test_support::{message, open, put};

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn keys_sort_by_seq_then_part() {
        assert!(key(Seq(1), 9) < key(Seq(2), 0));
        assert_eq!(parse_key(&key(Seq(7), 3)), Some((Seq(7), 3)));
        assert_eq!(parse_key(b"short"), None);
    }

    #[test]
    fn a_batch_is_packed_into_frames_and_segments_of_at_most_eight_values() {
        let (_dir, store) = open();
        // 4000 messages of 1 KiB in one batch: ~4.2 MiB, 17 segments of 240.
        let records: Vec<(Seq, Vec<u8>)> = (1..=4000)
            .map(|seq| {
                let m = message("a", seq, body(1024));
                (Seq(seq), codec::encode_message(&m).unwrap())
            })
            .collect();
        write_batch(store.log(), store.dedup(), &records, &BatchIndex::default()).unwrap();
        let values = store.log().values();
        assert!(values
            .iter()
            .all(|((_, part), len)| *part == 0 && *len + KEY_LEN <= FRAME_BYTES));
        let segments = store.log().segment_keys();
        assert_eq!(segments.len(), 17, "{segments:?}");
        for tree in store.log().segments.read().values() {
            let (n, bytes) = tree.iter().fold((0, 0), |(n, b), kv| {
                let (k, v) = kv.unwrap();
                (n + 1, b + k.len() + v.len())
            });
            assert!(
                n <= CHEAP_VALUES && bytes <= SEGMENT_BYTES,
                "{n} values, {bytes} bytes"
            );
        }
        // Full segments: few values, each close to a frame.
        assert!(values.len() <= 17 * CHEAP_VALUES, "{}", values.len());
        for seq in [1, 2, 180, 181, 1999, 4000] {
            let m = store.log().message(Seq(seq)).unwrap().unwrap();
            assert_eq!(m.received_at_ms, seq);
        }
        assert_eq!(store.log().message(Seq(4001)).unwrap(), None);
        assert_eq!(store.log().last_seq().unwrap(), Seq(4000));
        assert_eq!(store.log().first_seq().unwrap(), Some(Seq(1)));
    }

    /// A crash between opening a segment and writing to it leaves an empty
    /// tree named by a key that the next write may not reach; the next open
    /// drops it.
    #[test]
    fn an_empty_segment_left_at_the_end_is_dropped_at_open() {
        let (dir, store) = open();
        put(&store, 1, &message("a", 1, vec![1; 10]));
        let leftover = segments::tree_name(&key(Seq(5), 0));
        store.db().open_tree(&leftover).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = crate::store::Store::open(dir.path()).unwrap();
        assert!(!store.db().tree_names().iter().any(|n| n == &leftover[..]));
        store.log().start_segment();
        put(&store, 2, &message("a", 2, vec![2; 10]));
        assert_eq!(store.log().segment_keys(), vec![(Seq(1), 0), (Seq(2), 0)]);
        assert_eq!(
            store.log().message(Seq(2)).unwrap().unwrap().body,
            vec![2; 10]
        );
    }

    #[test]
    fn small_appends_fill_one_segment_instead_of_opening_many() {
        let (_dir, store) = open();
        for seq in 1..=2000 {
            put(&store, seq, &message("a", seq, body(100)));
        }
        // Eight values per segment only while a segment's values outweigh
        // what it costs in sled's meta page; then segments fill up.
        let segments = store.log().segment_keys().len();
        assert!((10..60).contains(&segments), "{segments} segments");
        let last = store.log().segments.read().values().last().unwrap().len();
        assert!(last > 1000, "the last segment has {last} values");
        assert_eq!(store.log().values().len(), 2000);
        let got = store
            .log()
            .read_ahead(Seq(0), Seq(2000), 3000, (3000, usize::MAX), |_| true);
        assert_eq!(got.unwrap().len(), 2001);
    }

    #[test]
    fn large_messages_round_trip_in_parts_and_never_reach_blob_files() {
        let (dir, store) = open();
        let big = body(3_000_000);
        for seq in 1..=5 {
            put(&store, seq, &message("a", 1, big.clone()));
        }
        // A batch mixing sizes, spanning segments, in one transaction.
        let records: Vec<(Seq, Vec<u8>)> = (6..=60)
            .map(|seq| {
                let len = [10, 70_000, 190_000, 600_000][seq as usize % 4];
                let m = message("a", seq, body(len));
                (Seq(seq), codec::encode_message(&m).unwrap())
            })
            .collect();
        write_batch(store.log(), store.dedup(), &records, &BatchIndex::default()).unwrap();
        store.sync().unwrap();
        assert_eq!(store.log().message(Seq(3)).unwrap().unwrap().body, big);
        for (seq, record) in &records {
            let m = store.log().message(*seq).unwrap().unwrap();
            assert_eq!(codec::encode_message(&m).unwrap(), *record);
        }
        let parts: Vec<u32> = store
            .log()
            .values()
            .iter()
            .filter(|((s, _), _)| *s == Seq(3))
            .map(|((_, p), _)| *p)
            .collect();
        assert_eq!(parts, (0..parts.len() as u32).collect::<Vec<_>>());
        assert!(parts.len() > 10);
        let blobs = dir.path().join("blobs");
        let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "sled wrote blob files, which sync() does not fsync");
    }

    #[test]
    fn a_walk_over_heads_steps_over_the_parts_it_does_not_read() {
        let (_dir, store) = open();
        put(&store, 1, &message("a", 1, vec![1]));
        put(&store, 2, &message("big", 2, body(2 * SEGMENT_BYTES + 5)));
        put(&store, 3, &message("a", 3, vec![3]));
        put(&store, 4, &message("big", 4, body(3 * FRAME_BYTES)));
        put(&store, 5, &message("a", 5, vec![5]));
        let log = store.log();
        let mut walk = log.walk(Seq(1)).unwrap();
        let mut seen = Vec::new();
        while let Some(e) = walk.next().unwrap() {
            seen.push((e.seq.0, e.head().unwrap().source.to_string(), e.values > 1));
        }
        let want = |s: u64, src: &str, parts: bool| (s, src.to_owned(), parts);
        assert_eq!(
            seen,
            [
                want(1, "a", false),
                want(2, "big", true),
                want(3, "a", false),
                want(4, "big", true),
                want(5, "a", false)
            ]
        );
        // Reading one in full still works after skipping another.
        let mut walk = log.walk(Seq(2)).unwrap();
        let skipped = walk.next().unwrap().unwrap();
        assert_eq!(skipped.seq, Seq(2));
        assert_eq!(walk.next().unwrap().unwrap().seq, Seq(3));
        let big = walk.next().unwrap().unwrap();
        assert_eq!(walk.message(&big).unwrap().body.len(), 3 * FRAME_BYTES);
        assert_eq!(walk.next().unwrap().unwrap().seq, Seq(5));
    }

    #[test]
    fn next_routed_reads_every_part_and_stops_at_the_next_message() {
        let (_dir, store) = open();
        let big = body(3 * FRAME_BYTES + 7);
        put(&store, 1, &message("a", 1, big.clone()));
        put(&store, 2, &message("a", 1, vec![2]));
        let log = store.log();
        let any = |_: &SourceName| true;
        match log.next_routed(Seq(0), Seq(2), 10, any).unwrap() {
            Scan::Found(seq, m) => assert_eq!((seq, m.body), (Seq(1), big)),
            other => panic!("{other:?}"),
        }
        match log.next_routed(Seq(1), Seq(2), 10, any).unwrap() {
            Scan::Found(seq, m) => assert_eq!((seq, m.body), (Seq(2), vec![2])),
            other => panic!("{other:?}"),
        }
        // A missing middle part is reported, not skipped.
        log.remove_value(Seq(1), 2);
        assert!(matches!(
            log.next_routed(Seq(0), Seq(2), 10, any),
            Err(StoreError::Truncated(Seq(1)))
        ));
    }

    #[test]
    fn next_routed_skips_unrouted_sources_and_respects_upto() {
        let (_dir, store) = open();
        put(&store, 1, &message("a", 1, vec![1]));
        put(&store, 2, &message("b", 1, vec![2; 10_000]));
        put(&store, 3, &message("a", 1, vec![3]));
        let log = store.log();
        let only_a = |s: &SourceName| s.as_str() == "a";
        match log.next_routed(Seq(1), Seq(3), 10, only_a).unwrap() {
            Scan::Found(seq, m) => assert_eq!((seq, m.body), (Seq(3), vec![3])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            log.next_routed(Seq(1), Seq(2), 10, only_a).unwrap(),
            Scan::Nothing(Seq(2))
        ));
        // A head above the last stored entry (e.g. after retention emptied the
        // log) is reported as fully scanned, so the worker waits instead of spinning.
        assert!(matches!(
            log.next_routed(Seq(3), Seq(9), 10, only_a).unwrap(),
            Scan::Nothing(Seq(9))
        ));
        assert!(matches!(
            log.next_routed(Seq(0), Seq(1), 10, |_| false).unwrap(),
            Scan::Nothing(Seq(1))
        ));
        assert_eq!(log.last_seq().unwrap(), Seq(3));
    }

    #[test]
    fn messages_are_found_in_the_middle_of_frames_and_across_segments() {
        let (_dir, store) = open();
        let mut seq = 0;
        for batch in 0..6 {
            let records: Vec<(Seq, Vec<u8>)> = (0..40)
                .map(|_| {
                    seq += 1;
                    let source = if seq % 3 == 0 { "b" } else { "a" };
                    let m = message(source, seq, body(5000));
                    (Seq(seq), codec::encode_message(&m).unwrap())
                })
                .collect();
            write_batch(store.log(), store.dedup(), &records, &BatchIndex::default()).unwrap();
            if batch % 2 == 1 {
                store.log().start_segment();
            }
        }
        let log = store.log();
        assert!(log.segment_keys().len() >= 3);
        let only_b = |s: &SourceName| s.as_str() == "b";
        for after in 0..seq {
            let want = (after + 1..=seq).find(|s| s % 3 == 0);
            match log.next_routed(Seq(after), Seq(seq), 1000, only_b).unwrap() {
                Scan::Found(s, m) => assert_eq!((Some(s.0), m.received_at_ms), (want, s.0)),
                Scan::Nothing(s) => assert_eq!((want, s), (None, Seq(seq))),
            }
        }
    }

    #[test]
    fn read_ahead_stops_at_its_limits_or_after_the_first_nothing() {
        let (_dir, store) = open();
        for seq in 1..=6 {
            let source = if seq == 2 { "b" } else { "a" };
            put(&store, seq, &message(source, 1, vec![seq as u8; 100]));
        }
        let only_a = |s: &SourceName| s.as_str() == "a";
        let seqs = |scans: Vec<Scan>| -> Vec<(bool, u64)> {
            let found = |s: &Scan| match s {
                Scan::Found(seq, _) => (true, seq.0),
                Scan::Nothing(seq) => (false, seq.0),
            };
            scans.iter().map(found).collect()
        };
        let read = |after, upto, limits| {
            store
                .log()
                .read_ahead(Seq(after), Seq(upto), 10, limits, only_a)
        };
        let by_count = read(0, 6, (3, usize::MAX)).unwrap();
        assert_eq!(seqs(by_count), [(true, 1), (true, 3), (true, 4)]);
        let by_bytes = read(0, 6, (9, 150)).unwrap();
        assert_eq!(seqs(by_bytes), [(true, 1), (true, 3)]);
        let to_the_head = read(3, 6, (9, usize::MAX)).unwrap();
        assert_eq!(
            seqs(to_the_head),
            [(true, 4), (true, 5), (true, 6), (false, 6)]
        );
        assert_eq!(seqs(read(6, 6, (9, 0)).unwrap()), [(false, 6)]);
    }

    #[test]
    fn next_routed_within_stops_before_a_larger_message() {
        let (_dir, store) = open();
        put(&store, 1, &message("b", 1, vec![1]));
        put(&store, 2, &message("a", 1, vec![2; 8000]));
        put(&store, 3, &message("a", 1, vec![3]));
        put(&store, 4, &message("a", 1, vec![4; FRAME_BYTES]));
        let (log, only_a) = (store.log(), |s: &SourceName| s.as_str() == "a");
        let within =
            |after, max_bytes| log.next_routed_within(Seq(after), Seq(4), 10, max_bytes, only_a);
        assert!(matches!(within(0, 4096).unwrap(), Scan::Nothing(Seq(1))));
        assert!(matches!(within(1, 4096).unwrap(), Scan::Nothing(Seq(1))));
        assert!(matches!(within(1, 9000).unwrap(), Scan::Found(Seq(2), _)));
        match within(2, 4096).unwrap() {
            Scan::Found(seq, m) => assert_eq!((seq, m.body), (Seq(3), vec![3])),
            other => panic!("{other:?}"),
        }
        // A message in parts counts all of them.
        assert!(matches!(
            within(3, FRAME_BYTES).unwrap(),
            Scan::Nothing(Seq(3))
        ));
        assert!(matches!(
            within(3, 3 * FRAME_BYTES).unwrap(),
            Scan::Found(Seq(4), _)
        ));
    }

    #[test]
    fn read_ahead_returns_what_it_found_before_a_damaged_message() {
        let (_dir, store) = open();
        let big = vec![7; 2 * FRAME_BYTES];
        for seq in 1..=3 {
            put(&store, seq, &message("a", 1, big.clone()));
        }
        let log = store.log();
        log.remove_value(Seq(2), 1);
        let any = |_: &SourceName| true;
        let found = log.read_ahead(Seq(0), Seq(3), 10, (9, usize::MAX), any);
        let found = found.expect("seq 1 is readable");
        assert!(matches!(found[..], [Scan::Found(Seq(1), _)]), "{found:?}");
        assert!(matches!(
            log.read_ahead(Seq(1), Seq(3), 10, (9, usize::MAX), any),
            Err(StoreError::Truncated(Seq(2)))
        ));
    }
}
#[cfg(test)]
mod stats {
    /// Prints segment statistics of the data dir in `HOOKRELAY_STATS_DIR`.
    #[test]
    #[ignore = "a measurement aid"]
    fn segment_stats() {
        let Ok(dir) = std::env::var("HOOKRELAY_STATS_DIR") else {
            return;
        };
        let store = crate::store::Store::open(std::path::Path::new(&dir)).unwrap();
        let segs = store.log().segments.read();
        let mut hist = std::collections::BTreeMap::new();
        let (mut values, mut bytes) = (0, 0);
        for t in segs.values() {
            let n = t.len();
            *hist.entry(n).or_insert(0) += 1;
            for kv in t.iter() {
                let (k, v) = kv.unwrap();
                values += 1;
                bytes += k.len() + v.len();
            }
        }
        let m = store.log().message(super::Seq(100)).unwrap().unwrap();
        let rec = crate::store::codec::encode_message(&m).unwrap().len();
        eprintln!(
            "segments {} values {values} bytes {bytes} values/segment {hist:?} record of seq 100: {rec} bytes, body {}",
            segs.len(),
            m.body.len()
        );
    }
}
#[cfg(test)]
mod amp {
    use crate::model::Seq;
    use crate::store::codec;
    use crate::store::dedup::{write_batch, BatchIndex};
    use crate::store::test_support::{message, open};

    fn written() -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Bytes written per body byte for batches of `HOOKRELAY_AMP` (batch,sync_every).
    #[test]
    #[ignore = "a measurement aid"]
    fn amplification() {
        let Ok(spec) = std::env::var("HOOKRELAY_AMP") else {
            return;
        };
        let v: Vec<usize> = spec.split(',').map(|x| x.parse().unwrap()).collect();
        let (batch, sync_every, body) = (v[0], v[1], v[2]);
        let (_dir, store) = open();
        let before = written();
        let mut seq = 0;
        let n = 60_000 / batch;
        for i in 0..n {
            let records: Vec<(Seq, Vec<u8>)> = (0..batch)
                .map(|_| {
                    seq += 1;
                    (
                        Seq(seq),
                        codec::encode_message(&message("a", 1, vec![7; body])).unwrap(),
                    )
                })
                .collect();
            write_batch(store.log(), store.dedup(), &records, &BatchIndex::default()).unwrap();
            if sync_every > 0 && i % sync_every == 0 {
                store.sync().unwrap();
            }
        }
        store.sync().unwrap();
        let w = written() - before;
        let bodies = (seq as usize * body) as f64;
        eprintln!(
            "batch {batch} sync_every {sync_every}: written/body {:.2}, segments {}, db {:.2}",
            w as f64 / bodies,
            store.log().segment_keys().len(),
            std::fs::metadata(_dir.path().join("db")).unwrap().len() as f64 / bodies
        );
    }
}
