//! Read-only queries for the admin API: message listings, time lookups, dead
//! letters. Nothing here writes the log.

use serde::Serialize;

use super::codec::{self, DeadLetter};
use super::{Store, StoreError};
use crate::model::{DestinationName, MessageId, Seq, SourceName};

/// Most log entries one listing examines, so a filter that matches nothing
/// cannot turn one request into a full scan.
const SCAN_CAP: usize = 100_000;

/// What the admin API shows of a message without its body.
#[derive(Debug, Clone, Serialize)]
pub struct MessageMeta {
    pub seq: u64,
    pub id: MessageId,
    pub source: SourceName,
    pub received_at_ms: u64,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub body_bytes: usize,
}

impl Store {
    /// The lowest seq still in the log.
    pub fn first_seq(&self) -> Result<Option<Seq>, StoreError> {
        Ok(self
            .log
            .first()?
            .and_then(|(k, _)| codec::parse_log_key(&k).map(|(s, _)| s)))
    }

    /// The first message at or after `from` (its seq and the first chunk's head).
    fn head_at_or_after(&self, from: Seq) -> Result<Option<(Seq, codec::MessageHead)>, StoreError> {
        match self.log.range(codec::log_key(from, 0)..).next() {
            Some(kv) => {
                let (k, v) = kv?;
                match codec::parse_log_key(&k) {
                    Some((seq, 0)) => Ok(Some((seq, codec::decode_head(&v)?))),
                    // A message always starts at chunk 0; anything else is damage.
                    Some((seq, _)) => Err(StoreError::Truncated(seq)),
                    None => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// Messages after `after`, ascending, optionally from one source only.
    pub fn list_messages(
        &self,
        source: Option<&SourceName>,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<MessageMeta>, StoreError> {
        let mut out = Vec::new();
        let mut from = after.next();
        for _ in 0..SCAN_CAP {
            if out.len() >= limit {
                break;
            }
            let Some((seq, head)) = self.head_at_or_after(from)? else {
                break;
            };
            from = seq.next();
            if source.is_some_and(|s| *s != head.source) {
                continue;
            }
            if let Some(m) = self.message(seq)? {
                out.push(MessageMeta {
                    seq: seq.0,
                    id: m.id,
                    source: m.source,
                    received_at_ms: m.received_at_ms,
                    content_type: m.content_type,
                    idempotency_key: m.idempotency_key,
                    body_bytes: m.body.len(),
                });
            }
        }
        Ok(out)
    }

    /// The first seq received at or after `at_ms` (one past the head if none),
    /// by binary search over seqs: O(log n) reads, no scan.
    pub fn seq_at_time(&self, at_ms: u64) -> Result<Seq, StoreError> {
        let Some(first) = self.first_seq()? else {
            return Ok(self.last_seq()?.next());
        };
        let (mut lo, mut hi) = (first.0, self.last_seq()?.0.saturating_add(1));
        // Invariant: every message below `lo` is older than `at_ms`; `hi` is a candidate.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.head_at_or_after(Seq(mid))? {
                Some((seq, head)) if head.received_at_ms >= at_ms => hi = mid.min(seq.0),
                Some((seq, _)) => lo = seq.0 + 1,
                None => hi = mid,
            }
        }
        Ok(Seq(lo))
    }

    /// Dead letters of `dest` after `after`, oldest first.
    pub fn dead_letters(
        &self,
        dest: &DestinationName,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, DeadLetter)>, StoreError> {
        let prefix = codec::dest_prefix(dest);
        let start = codec::dead_key(dest, after.next());
        let mut out = Vec::new();
        for kv in self.dead.range(start..).take(limit) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let seq = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(Seq::from_be_bytes)
                .ok_or_else(|| StoreError::Codec(codec::CodecError::Corrupt("dead key".into())))?;
            out.push((seq, codec::decode_dead_letter(&v)?));
        }
        Ok(out)
    }

    /// The dead letter of `seq` at `dest`, if there is one.
    pub fn dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Option<DeadLetter>, StoreError> {
        match self.dead.get(codec::dead_key(dest, seq))? {
            Some(v) => Ok(Some(codec::decode_dead_letter(&v)?)),
            None => Ok(None),
        }
    }

    /// Removes a dead letter (after a successful redelivery).
    pub fn remove_dead_letter(&self, dest: &DestinationName, seq: Seq) -> Result<(), StoreError> {
        self.dead.remove(codec::dead_key(dest, seq))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Message;

    fn put(store: &Store, seq: u64, source: &str, at: u64) {
        let m = Message {
            id: MessageId::generate(at),
            source: source.parse().unwrap(),
            received_at_ms: at,
            content_type: None,
            idempotency_key: None,
            headers: vec![],
            body: vec![7; 10],
        };
        let bytes = codec::encode_message(&m).unwrap();
        store.write_batch(&[(Seq(seq), bytes)], &[]).unwrap();
    }

    #[test]
    fn seq_at_time_finds_the_first_message_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.seq_at_time(5).unwrap(), Seq(1));
        for seq in 3..=40 {
            put(&store, seq, "a", seq * 100);
        }
        assert_eq!(store.seq_at_time(0).unwrap(), Seq(3));
        assert_eq!(store.seq_at_time(1000).unwrap(), Seq(10));
        assert_eq!(store.seq_at_time(1001).unwrap(), Seq(11));
        assert_eq!(store.seq_at_time(4000).unwrap(), Seq(40));
        assert_eq!(store.seq_at_time(999_999).unwrap(), Seq(41));
    }

    #[test]
    fn listing_filters_by_source_and_pages_by_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for seq in 1..=10 {
            put(&store, seq, if seq % 2 == 0 { "b" } else { "a" }, seq);
        }
        let b: SourceName = "b".parse().unwrap();
        let page = store.list_messages(Some(&b), Seq(4), 2).unwrap();
        let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![6, 8]);
        assert_eq!(page[0].body_bytes, 10);
        assert_eq!(store.list_messages(None, Seq(0), 100).unwrap().len(), 10);
    }

    #[test]
    fn dead_letters_list_per_destination_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, ab): (DestinationName, DestinationName) =
            ("a".parse().unwrap(), "ab".parse().unwrap());
        let dl = DeadLetter {
            at_ms: 1,
            attempts: 3,
            last_error: "HTTP 400".into(),
        };
        for seq in [5, 2, 9] {
            store.add_dead_letter(&a, Seq(seq), &dl).unwrap();
        }
        store.add_dead_letter(&ab, Seq(1), &dl).unwrap();
        let got: Vec<u64> = store
            .dead_letters(&a, Seq(0), 10)
            .unwrap()
            .iter()
            .map(|(s, _)| s.0)
            .collect();
        assert_eq!(got, vec![2, 5, 9]);
        let got: Vec<u64> = store
            .dead_letters(&a, Seq(2), 1)
            .unwrap()
            .iter()
            .map(|(s, _)| s.0)
            .collect();
        assert_eq!(got, vec![5]);
        store.remove_dead_letter(&a, Seq(5)).unwrap();
        assert!(store.dead_letter(&a, Seq(5)).unwrap().is_none());
        assert_eq!(store.dead_letter_count(&a), 2);
    }
}
