//! Deleting the log's head for retention: planning a batch of whole
//! messages, raising `meta/seq_floor`, applying the batch. Retention decides
//! what is due (age, cursors) and when; this owns how. Only ever deletes a
//! prefix of the log, never writes a message.

use super::{parse_key, Log, SEQ_FLOOR};
use crate::model::Seq;
use crate::store::{codec, StoreError};

/// What a planned batch deletes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// The highest seq in the batch; `None` when there is nothing to delete.
    pub highest: Option<Seq>,
    pub messages: u64,
    /// Log chunks whose message had no readable head (damaged, yet finished by every destination).
    pub damaged: u64,
    pub first: Option<Seq>,
    pub last: Option<Seq>,
    pub bytes: u64,
    /// Stopped at the batch limit; more may be due.
    pub more: bool,
}

/// The next batch of whole messages to delete from the head of the log.
#[derive(Debug, Default)]
pub struct Removal {
    batch: sled::Batch,
    pub summary: Summary,
}

impl Log {
    /// Collects the next batch of whole messages from the head of the log:
    /// those at or below `upto` and received at or before `cutoff_ms`. A batch
    /// holds at most `max_keys` keys and ends on a message boundary, so one
    /// message of more chunks than that still goes, in a batch of its own.
    /// Blocking.
    pub fn plan_removal(
        &self,
        upto: Seq,
        cutoff_ms: u64,
        max_keys: usize,
    ) -> Result<Removal, StoreError> {
        let mut out = Removal::default();
        let s = &mut out.summary;
        let mut highest = None;
        for (keys, kv) in self.log.iter().enumerate() {
            let (k, v) = kv?;
            let Some((seq, chunk)) = parse_key(&k) else {
                break;
            };
            if seq > upto {
                break;
            }
            let is_head = chunk == 0;
            if is_head || highest != Some(seq) {
                // A new message starts here: batches end only on message boundaries.
                if keys >= max_keys {
                    s.more = true;
                    break;
                }
                match is_head.then(|| codec::decode_head(&v)) {
                    Some(Ok(head)) if head.received_at_ms > cutoff_ms => break,
                    Some(Ok(_)) => {
                        s.messages += 1;
                        s.first.get_or_insert(seq);
                        s.last = Some(seq);
                    }
                    // No readable head: nobody can read this message, and every
                    // destination is past it; dropping it keeps retention moving.
                    _ => s.damaged += 1,
                }
            }
            highest = Some(seq);
            s.bytes += (k.len() + v.len()) as u64;
            out.batch.remove(k);
        }
        s.highest = highest;
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
        let Some(highest) = plan.summary.highest else {
            return Ok(());
        };
        self.raise_floor(highest)?;
        // Seqs are never reused: when this batch empties the log, the floor must be
        // durable before the deletion can be.
        let tail = self.log.last()?.and_then(|(k, _)| parse_key(&k));
        if tail.is_none_or(|(t, _)| t <= highest) {
            sync()?;
        }
        self.log.apply_batch(plan.batch)?;
        Ok(())
    }

    /// The lowest seq that may still have a message: the log's first or, when the
    /// log is empty, one past the highest seq retention deleted (not one past the
    /// last seq: a message appended meanwhile must keep its attempts).
    pub fn first_kept_seq(&self) -> Result<Seq, StoreError> {
        match self.log.first()? {
            Some((k, _)) => Ok(parse_key(&k).map_or(Seq(0), |(seq, _)| seq)),
            None => Ok(self.seq_floor()?.next()),
        }
    }

    /// Sets `meta/seq_floor` to `seq` unless it is already at or above it.
    fn raise_floor(&self, seq: Seq) -> Result<(), StoreError> {
        if seq > self.seq_floor()? {
            self.meta.insert(SEQ_FLOOR, &seq.to_be_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{message, open, put};
    use crate::store::{Store, CHUNK_BYTES};

    const MAX_KEYS: usize = 512;

    fn remove_one_batch(store: &Store, upto: Seq, cutoff: u64) -> Summary {
        let plan = store.log().plan_removal(upto, cutoff, MAX_KEYS).unwrap();
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

    #[test]
    fn deletes_the_old_finished_prefix_only_and_raises_the_floor() {
        let (dir, store) = open();
        // 1..=3 old, 4 young.
        for seq in 1..=3 {
            put(&store, seq, &message("a", 1_000, vec![7; 10_000]));
        }
        put(&store, 4, &message("a", 9_000, vec![7; 10]));
        // Finished only up to 2: 3 stays although old.
        let b = drain(&store, Seq(2), 5_000);
        assert_eq!(
            (b.messages, b.first, b.last),
            (2, Some(Seq(1)), Some(Seq(2)))
        );
        assert!(store.log().message(Seq(2)).unwrap().is_none());
        assert!(store.log().message(Seq(3)).unwrap().is_some());
        // Finished everywhere: 3 goes, 4 is too young.
        assert_eq!(drain(&store, Seq(u64::MAX), 5_000).messages, 1);
        assert!(store.log().message(Seq(4)).unwrap().is_some());
        // Old enough now: the log empties and the floor keeps the seq.
        assert_eq!(drain(&store, Seq(u64::MAX), 10_000).messages, 1);
        assert!(store.log().log.is_empty());
        assert_eq!(store.log().first_kept_seq().unwrap(), Seq(5));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.log().last_seq().unwrap(), Seq(4));
    }

    #[test]
    fn batches_are_bounded_and_end_on_message_boundaries() {
        let (_dir, store) = open();
        let n = MAX_KEYS as u64 + 10;
        for seq in 1..=n {
            put(&store, seq, &message("a", 1, vec![7; 10]));
        }
        // A message of many chunks.
        put(&store, n + 1, &message("a", 1, vec![7; CHUNK_BYTES * 3]));
        let first = remove_one_batch(&store, Seq(u64::MAX), 5);
        assert_eq!(first.messages, MAX_KEYS as u64);
        assert!(first.more);
        let rest = drain(&store, Seq(u64::MAX), 5);
        assert_eq!(rest.messages, 11);
        assert!(store.log().log.is_empty());
        assert_eq!(store.log().last_seq().unwrap(), Seq(n + 1));
    }
}
