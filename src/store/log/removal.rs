//! Deleting the log's head for retention: planning a batch of whole
//! segments, raising `meta/seq_floor`, dropping their trees. Retention
//! decides what is due (age, cursors) and when; this owns how. Only ever
//! deletes a prefix of the log, never writes a message.

use super::segments::SegKey;
use super::{parse_key, Log, SEQ_FLOOR};
use crate::model::Seq;
use crate::store::codec::{self, LogValue};
use crate::store::StoreError;

/// What a planned batch deletes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// The highest seq in the batch; `None` when it holds no message.
    pub highest: Option<Seq>,
    pub messages: u64,
    /// Log values that cannot be read (damaged, yet finished by every destination).
    pub damaged: u64,
    pub first: Option<Seq>,
    pub last: Option<Seq>,
    pub bytes: u64,
    /// Stopped at the batch limit; more may be due.
    pub more: bool,
}

/// The next batch of whole segments to delete from the head of the log.
#[derive(Debug, Default)]
pub struct Removal {
    segments: Vec<SegKey>,
    pub summary: Summary,
}

/// What one segment holds, as far as retention cares.
#[derive(Default)]
struct Examined {
    messages: u64,
    damaged: u64,
    first: Option<Seq>,
    last: Option<Seq>,
    /// Receive time of the newest message whose head it holds.
    newest_ms: Option<u64>,
    bytes: u64,
}

impl Log {
    /// Collects the next batch of whole segments from the head of the log:
    /// those whose every message is at or below `upto` and was received at
    /// or before `cutoff_ms`. At most `max_segments` segments. Reads the
    /// segments' values (frame headers and one head each). Blocking.
    pub fn plan_removal(
        &self,
        upto: Seq,
        cutoff_ms: u64,
        max_segments: usize,
    ) -> Result<Removal, StoreError> {
        let mut out = Removal::default();
        let s = &mut out.summary;
        let dir = self.segments.read();
        for (first, tree) in dir.iter() {
            if out.segments.len() >= max_segments {
                s.more = true;
                break;
            }
            let e = examine(tree)?;
            if e.last.is_some_and(|l| l > upto) || e.newest_ms.is_some_and(|t| t > cutoff_ms) {
                break;
            }
            out.segments.push(*first);
            s.messages += e.messages;
            s.damaged += e.damaged;
            s.bytes += e.bytes;
            s.first = s.first.or(e.first);
            s.last = e.last.or(s.last);
            s.highest = s.highest.max(e.last);
        }
        Ok(out)
    }

    /// Deletes a planned batch, raising `meta/seq_floor` first. `sync` makes
    /// every write so far durable (the store's sync); it runs only when this
    /// batch empties the log. Blocking.
    pub fn remove(
        &self,
        plan: Removal,
        sync: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if plan.segments.is_empty() {
            return Ok(());
        }
        if let Some(highest) = plan.summary.highest {
            self.raise_floor(highest)?;
        }
        // Seqs are never reused: when this batch empties the log, the floor must be
        // durable before the deletion can be.
        let last = self.segments.read().last_key_value().map(|(k, _)| *k);
        if last.is_none_or(|l| plan.segments.contains(&l)) {
            sync()?;
        }
        self.segments.drop_segments(&plan.segments)
    }

    /// The lowest seq that may still have a message: the log's first or, when the
    /// log is empty, one past the highest seq retention deleted (not one past the
    /// last seq: a message appended meanwhile must keep its attempts).
    pub fn first_kept_seq(&self) -> Result<Seq, StoreError> {
        for tree in self.segments.read().values() {
            if let Some((k, _)) = tree.first()? {
                return Ok(parse_key(&k).map_or(Seq(0), |(seq, _)| seq));
            }
        }
        Ok(self.seq_floor()?.next())
    }

    /// Sets `meta/seq_floor` to `seq` unless it is already at or above it.
    fn raise_floor(&self, seq: Seq) -> Result<(), StoreError> {
        if seq > self.seq_floor()? {
            self.meta.insert(SEQ_FLOOR, &seq.to_be_bytes())?;
        }
        Ok(())
    }
}

/// Reads one segment's values: its seqs, message count and newest head.
fn examine(tree: &sled::Tree) -> Result<Examined, StoreError> {
    let mut e = Examined::default();
    // The newest message's record (or first part), read for its time at the end.
    let mut newest: Option<(sled::IVec, std::ops::Range<usize>)> = None;
    for kv in tree.iter() {
        let (k, v) = kv?;
        e.bytes += (k.len() + v.len()) as u64;
        let Some((seq, _)) = parse_key(&k) else {
            e.damaged += 1;
            continue;
        };
        let mut saw = |seq: Seq| {
            e.first.get_or_insert(seq);
            e.last = Some(e.last.map_or(seq, |l| l.max(seq)));
        };
        match codec::decode_log_value(&v) {
            Ok(LogValue::Frame(mut entries)) => {
                saw(seq);
                while let Some(next) = entries.next(&v) {
                    match next {
                        Ok((seq, range)) => {
                            saw(seq);
                            e.messages += 1;
                            newest = Some((v.clone(), range));
                        }
                        Err(_) => e.damaged += 1,
                    }
                }
            }
            Ok(LogValue::Part {
                index: 0, payload, ..
            }) => {
                saw(seq);
                e.messages += 1;
                newest = Some((v.clone(), payload));
            }
            Ok(LogValue::Part { .. }) => saw(seq),
            Err(_) => {
                saw(seq);
                e.damaged += 1;
            }
        }
    }
    // No readable head: nobody can read that message, and every destination
    // is past it; dropping it keeps retention moving.
    e.newest_ms = newest
        .and_then(|(v, range)| codec::decode_head(&v[range]).ok())
        .map(|h| h.received_at_ms);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec;
    use crate::store::test_support::{message, open, put};
    use crate::store::Store;

    const MAX_SEGMENTS: usize = 4;

    fn remove_one_batch(store: &Store, upto: Seq, cutoff: u64) -> Summary {
        let plan = store
            .log()
            .plan_removal(upto, cutoff, MAX_SEGMENTS)
            .unwrap();
        let summary = plan.summary;
        store.log().remove(plan, || store.sync()).unwrap();
        summary
    }

    fn drain(store: &Store, upto: Seq, cutoff: u64) -> Summary {
        let mut total = Summary::default();
        loop {
            let b = remove_one_batch(store, upto, cutoff);
            total.messages += b.messages;
            total.damaged += b.damaged;
            total.first = total.first.or(b.first);
            total.last = b.last.or(total.last);
            if !b.more {
                return total;
            }
        }
    }

    /// Writes `seq` as the only message of a new segment.
    fn put_alone(store: &Store, seq: u64, received_at_ms: u64) {
        store.log().start_segment();
        put(store, seq, &message("a", received_at_ms, vec![7; 10_000]));
    }

    #[test]
    fn deletes_whole_segments_of_the_old_finished_prefix_and_raises_the_floor() {
        let (dir, store) = open();
        // 1..=3 old, 4 young, each in a segment of its own; 5 and 6 share one.
        for seq in 1..=3 {
            put_alone(&store, seq, 1_000);
        }
        put_alone(&store, 4, 9_000);
        put_alone(&store, 5, 9_000);
        put(&store, 6, &message("a", 9_000, vec![7; 10]));
        // Finished only up to 2: 3 stays although old.
        let b = drain(&store, Seq(2), 5_000);
        assert_eq!(
            (b.messages, b.first, b.last),
            (2, Some(Seq(1)), Some(Seq(2)))
        );
        assert!(store.log().message(Seq(2)).unwrap().is_none());
        assert!(store.log().message(Seq(3)).unwrap().is_some());
        assert_eq!(store.log().first_kept_seq().unwrap(), Seq(3));
        // Finished everywhere: 3 goes, 4 is too young.
        assert_eq!(drain(&store, Seq(u64::MAX), 5_000).messages, 1);
        assert!(store.log().message(Seq(4)).unwrap().is_some());
        // 5 is finished but shares its segment with 6, which is not.
        assert_eq!(drain(&store, Seq(5), 10_000).messages, 1);
        assert!(store.log().message(Seq(5)).unwrap().is_some());
        // Old enough now: the log empties and the floor keeps the seq.
        assert_eq!(drain(&store, Seq(u64::MAX), 10_000).messages, 2);
        assert!(store.log().segment_keys().is_empty());
        assert_eq!(store.log().first_kept_seq().unwrap(), Seq(7));
        // The appender's segment went too: the next append opens one.
        put(&store, 7, &message("a", 9_000, vec![7; 10]));
        assert_eq!(store.log().segment_keys(), vec![(Seq(7), 0)]);
        assert!(store.log().message(Seq(7)).unwrap().is_some());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.log().last_seq().unwrap(), Seq(7));
    }

    #[test]
    fn batches_are_bounded_by_segments() {
        let (_dir, store) = open();
        let n = MAX_SEGMENTS as u64 + 3;
        for seq in 1..=n {
            put_alone(&store, seq, 1);
        }
        let first = remove_one_batch(&store, Seq(u64::MAX), 5);
        assert_eq!(first.messages, MAX_SEGMENTS as u64);
        assert!(first.more);
        let rest = drain(&store, Seq(u64::MAX), 5);
        assert_eq!(rest.messages, 3);
        assert!(store.log().segment_keys().is_empty());
        assert_eq!(store.log().last_seq().unwrap(), Seq(n));
    }

    /// sled's segment cleaner rewrites whole pages once retention has freed
    /// most of a segment: those must stay below the blob threshold too, as
    /// must the meta page rewritten for every segment created and dropped.
    #[test]
    fn retention_and_cleaning_never_write_blob_files() {
        let (dir, store) = open();
        let batch = |from: u64, n: u64, len: usize| -> Vec<(Seq, Vec<u8>)> {
            (from..from + n)
                .map(|seq| {
                    let m = message("a", seq, vec![(seq % 251) as u8; len]);
                    (Seq(seq), codec::encode_message(&m).unwrap())
                })
                .collect()
        };
        let index = crate::store::dedup::BatchIndex::default();
        let mut seq = 1;
        for _round in 0..3 {
            // ~24 MiB per round, in batches of mixed sizes.
            for len in [900, 20_000, 70_000, 300_000].repeat(6) {
                let n = (1 << 20) / len as u64 + 1;
                let records = batch(seq, n, len);
                crate::store::dedup::write_batch(store.log(), store.dedup(), &records, &index)
                    .unwrap();
                seq += n;
            }
            store.sync().unwrap();
            // The oldest three quarters go.
            drain(&store, Seq(seq * 3 / 4), u64::MAX);
            store.sync().unwrap();
        }
        let m = store.log().message(Seq(seq - 1)).unwrap().unwrap();
        assert_eq!(m.body, vec![((seq - 1) % 251) as u8; 300_000]);
        let blobs = dir.path().join("blobs");
        let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "sled wrote blob files, which sync() does not fsync");
    }
}
