//! The log: tree `log` (messages in chunks, by seq) and `meta/seq_floor`.
//!
//! Owns the log's key layout, chunking, every read of a message, and the
//! seq floor that keeps seqs from being reused. Writes come from two places
//! only: the appender (through [`super::dedup::write_batch`], which puts a
//! batch's dedup entries in the same transaction) and retention (through
//! [`removal`]). Must not touch any other tree.
//!
//! - [`query`]: the admin API's listings and time lookups;
//! - [`removal`]: retention's deletion of the log's head.

mod query;
pub mod removal;

use super::codec::{self, CodecError, Message};
use super::{StoreError, CHUNK_BYTES};
use crate::model::{Seq, SourceName};

pub use query::MessageMeta;

const SEQ_FLOOR: &[u8] = b"seq_floor";

/// `log` key: seq (8 bytes BE) ‖ chunk index (4 bytes BE).
pub fn key(seq: Seq, chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Splits a `log` key; `None` if it is not 12 bytes.
pub fn parse_key(k: &[u8]) -> Option<(Seq, u32)> {
    let seq: [u8; 8] = k.get(..8)?.try_into().ok()?;
    let chunk: [u8; 4] = k.get(8..12)?.try_into().ok()?;
    (k.len() == 12).then(|| (Seq::from_be_bytes(seq), u32::from_be_bytes(chunk)))
}

fn parse_key_or_corrupt(k: &[u8]) -> Result<(Seq, u32), CodecError> {
    parse_key(k).ok_or_else(|| CodecError::Corrupt(format!("log key of {} bytes", k.len())))
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
    log: sled::Tree,
    /// Shared with the store, which owns `meta/format`; only `seq_floor` is ours.
    meta: sled::Tree,
}

impl Log {
    pub(super) fn new(log: sled::Tree, meta: sled::Tree) -> Log {
        Log { log, meta }
    }

    /// The tree, for the one transaction that spans it and `dedup`.
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.log
    }

    /// Encoded messages as one batch of chunks; see the store's docs for why
    /// chunks are small.
    pub(super) fn chunks(messages: &[(Seq, Vec<u8>)]) -> Result<sled::Batch, StoreError> {
        let mut batch = sled::Batch::default();
        for (seq, bytes) in messages {
            for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
                let i =
                    u32::try_from(i).map_err(|_| CodecError::Encode("message too large".into()))?;
                batch.insert(&key(*seq, i)[..], chunk);
            }
        }
        Ok(batch)
    }

    /// The highest seq ever assigned (0 when the log has never held anything).
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        let from_log = match self.log.last()? {
            Some((k, _)) => parse_key(&k).map(|(s, _)| s).unwrap_or_default(),
            None => Seq(0),
        };
        Ok(from_log.max(self.seq_floor()?))
    }

    /// The lowest seq still in the log.
    pub fn first_seq(&self) -> Result<Option<Seq>, StoreError> {
        Ok(self
            .log
            .first()?
            .and_then(|(k, _)| parse_key(&k).map(|(s, _)| s)))
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
        let mut bytes = Vec::new();
        for (expected, kv) in self.log.scan_prefix(seq.to_be_bytes()).enumerate() {
            let (k, v) = kv?;
            match parse_key(&k) {
                Some((_, chunk)) if chunk as usize == expected => {}
                _ => return Err(StoreError::Truncated(seq)),
            }
            bytes.extend_from_slice(&v);
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(codec::decode_message(&bytes)?))
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
        self.next_routed_within(after, upto, budget, u32::MAX, routes)
    }

    /// [`Log::next_routed`] that stops before a routed message of more than
    /// `max_chunks` chunks, answering `Nothing` up to the seq it saw before
    /// that one (`Nothing(after)` when that is the very next message). With
    /// a small budget and one chunk, bounded enough for an async thread when
    /// the messages are the newest, which sled still holds in its cache.
    pub fn next_routed_within(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        max_chunks: u32,
        routes: impl Fn(&SourceName) -> bool,
    ) -> Result<Scan, StoreError> {
        let mut seen = after;
        let mut from = after.next();
        for _ in 0..budget {
            if from > upto {
                break;
            }
            let mut chunks = self.log.range(key(from, 0)..);
            let Some((k, v)) = chunks.next().transpose()? else {
                // Nothing stored up to `upto` (gaps come from retention): all of it is scanned.
                return Ok(Scan::Nothing(upto));
            };
            let (seq, chunk) = parse_key_or_corrupt(&k)?;
            if seq > upto {
                return Ok(Scan::Nothing(upto));
            }
            if chunk == 0 {
                let head = codec::decode_head(&v)?;
                if routes(&head.source) {
                    let found = Self::rest_of(seq, v, &mut chunks, max_chunks)?;
                    return Ok(found.unwrap_or(Scan::Nothing(seen)));
                }
            }
            seen = seq;
            from = seq.next();
        }
        Ok(Scan::Nothing(seen))
    }

    /// [`Log::next_routed`] repeated from where the last one found a
    /// message, until `max_found` messages or about `max_bytes` of bodies are
    /// found (at least one), or up to and including the first
    /// [`Scan::Nothing`], which is then last; an error after a message was
    /// found ends the read instead of losing it. One trip to the blocking pool
    /// for several messages: a trip per message halved the delivery rate.
    /// Blocking.
    pub fn read_ahead(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        (max_found, max_bytes): (usize, usize),
        routes: impl Fn(&SourceName) -> bool,
    ) -> Result<Vec<Scan>, StoreError> {
        let mut out = Vec::new();
        let (mut from, mut bytes) = (after, 0);
        while out.is_empty() || (out.len() < max_found && bytes < max_bytes) {
            let scan = match self.next_routed(from, upto, budget, &routes) {
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

    /// Reads the chunks after `first` (chunk 0 of `seq`) from the iterator
    /// that found it, saving a second descent of the tree per delivery;
    /// `None` as soon as the message turns out longer than `max_chunks`.
    fn rest_of(
        seq: Seq,
        first: sled::IVec,
        chunks: &mut sled::Iter,
        max_chunks: u32,
    ) -> Result<Option<Scan>, StoreError> {
        let mut bytes = first.to_vec();
        for (expected, kv) in (1..).zip(chunks) {
            let (k, v) = kv?;
            match parse_key(&k) {
                Some((s, _)) if s != seq => break,
                Some(_) if expected >= max_chunks => return Ok(None),
                Some((_, chunk)) if chunk == expected => bytes.extend_from_slice(&v),
                _ => return Err(StoreError::Truncated(seq)),
            }
        }
        let message = codec::decode_message(&bytes)?;
        Ok(Some(Scan::Found(seq, Box::new(message))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{message, open, put};

    #[test]
    fn keys_sort_by_seq_then_chunk() {
        assert!(key(Seq(1), 9) < key(Seq(2), 0));
        assert_eq!(parse_key(&key(Seq(7), 3)), Some((Seq(7), 3)));
        assert_eq!(parse_key(b"short"), None);
    }

    #[test]
    fn large_messages_round_trip_in_chunks_and_never_reach_blob_files() {
        let (dir, store) = open();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for seq in 1..=5 {
            put(&store, seq, &message("a", 1, body.clone()));
        }
        store.sync().unwrap();
        assert_eq!(store.log().message(Seq(3)).unwrap().unwrap().body, body);
        let blobs = dir.path().join("blobs");
        let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "sled wrote blob files, which sync() does not fsync");
    }

    #[test]
    fn next_routed_reads_every_chunk_and_stops_at_the_next_message() {
        let (_dir, store) = open();
        let big: Vec<u8> = (0..3 * CHUNK_BYTES as u32 + 7).map(|i| i as u8).collect();
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
        // A missing middle chunk is reported, not skipped.
        log.log.remove(key(Seq(1), 2)).unwrap();
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
    fn next_routed_within_stops_before_a_message_of_more_chunks() {
        let (_dir, store) = open();
        put(&store, 1, &message("b", 1, vec![1]));
        put(&store, 2, &message("a", 1, vec![2; 2 * CHUNK_BYTES]));
        put(&store, 3, &message("a", 1, vec![3]));
        let (log, only_a) = (store.log(), |s: &SourceName| s.as_str() == "a");
        let within =
            |after, max_chunks| log.next_routed_within(Seq(after), Seq(3), 10, max_chunks, only_a);
        assert!(matches!(within(0, 1).unwrap(), Scan::Nothing(Seq(1))));
        assert!(matches!(within(1, 1).unwrap(), Scan::Nothing(Seq(1))));
        assert!(matches!(within(1, 3).unwrap(), Scan::Found(Seq(2), _)));
        match within(2, 1).unwrap() {
            Scan::Found(seq, m) => assert_eq!((seq, m.body), (Seq(3), vec![3])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_ahead_returns_what_it_found_before_a_damaged_message() {
        let (_dir, store) = open();
        let big = vec![7; 2 * CHUNK_BYTES];
        for seq in 1..=3 {
            put(&store, seq, &message("a", 1, big.clone()));
        }
        let log = store.log();
        log.log.remove(key(Seq(2), 1)).unwrap();
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
