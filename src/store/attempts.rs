//! Tree `attempts`: one record per delivery attempt, key
//! `dest ‖ 0x00 ‖ seq (u64 BE) ‖ attempt number (u32 BE)`, value a versioned
//! [`Attempt`], which for a failed attempt of a retry run also says where
//! that run stands ([`RetryRun`]: its epoch, first attempt, start and next
//! retry time), so a message's latest record is all a restart needs to go
//! on with its retries. Delivery appends, the admin API reads, retention
//! deletes the rows of deleted messages. Must not touch any other tree.

use super::codec::{self, Attempt, CodecError, RetryRun};
use super::per_dest::{self, PerDestination, Removed};
use super::StoreError;
use crate::model::{DestinationName, Seq};

/// Handle to the attempt history; cheap to clone.
#[derive(Clone)]
pub struct Attempts {
    tree: sled::Tree,
}

/// `attempts` key: dest ‖ 0 ‖ seq ‖ attempt number.
fn key(dest: &DestinationName, seq: Seq, n: u32) -> Vec<u8> {
    let mut k = per_dest::seq_key(dest, seq);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

impl Attempts {
    pub(super) fn new(tree: sled::Tree) -> Attempts {
        Attempts { tree }
    }

    /// Records attempt number `n` (1-based) of delivering `seq` to `dest`.
    pub fn record(
        &self,
        dest: &DestinationName,
        seq: Seq,
        n: u32,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        self.record_in(dest, seq, n, attempt, None)
    }

    /// Records attempt `n` with the retry run it leaves behind (`None`: it
    /// belongs to none, e.g. a success or an operator's redelivery).
    pub fn record_in(
        &self,
        dest: &DestinationName,
        seq: Seq,
        n: u32,
        attempt: &Attempt,
        run: Option<&RetryRun>,
    ) -> Result<(), StoreError> {
        self.tree
            .insert(key(dest, seq, n), codec::encode_attempt_in(attempt, run)?)?;
        Ok(())
    }

    /// The latest recorded attempt of `seq` at `dest`, with its number and
    /// retry run: one seek to the end of the seq's range.
    pub fn latest(&self, dest: &DestinationName, seq: Seq) -> Result<Option<Latest>, StoreError> {
        let prefix = per_dest::seq_key(dest, seq);
        let Some(kv) = self.tree.scan_prefix(&prefix).next_back() else {
            return Ok(None);
        };
        let (k, v) = kv?;
        let n = k
            .strip_prefix(prefix.as_slice())
            .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| CodecError::Corrupt(format!("attempts key of {} bytes", k.len())))?;
        let (attempt, run) = codec::decode_attempt_in(&v)?;
        Ok(Some(Latest { n, attempt, run }))
    }

    /// Every recorded attempt of `seq` at `dest`, oldest first. A scan.
    pub fn list(&self, dest: &DestinationName, seq: Seq) -> Result<Vec<Attempt>, StoreError> {
        self.tree
            .scan_prefix(per_dest::seq_key(dest, seq))
            .map(|kv| Ok(codec::decode_attempt(&kv?.1)?))
            .collect()
    }

    /// The `limit` last recorded attempts at `dest` in key order (highest
    /// seq first, a message's latest attempt before its earlier ones): one
    /// seek to the end of the destination's range and a short walk back,
    /// whatever the history's size.
    pub fn recent(
        &self,
        dest: &DestinationName,
        limit: usize,
    ) -> Result<Vec<(Seq, Attempt)>, StoreError> {
        let prefix = per_dest::prefix(dest);
        self.tree
            .scan_prefix(&prefix)
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let seq = per_dest::parse_seq(&prefix, &k, 4).ok_or_else(|| {
                    CodecError::Corrupt(format!("attempts key of {} bytes", k.len()))
                })?;
                Ok((seq, codec::decode_attempt(&v)?))
            })
            .collect()
    }

    /// The highest seq with any recorded attempt at `dest` (0 when none): one
    /// seek to the end of the destination's range.
    pub fn last_attempted(&self, dest: &DestinationName) -> Result<Seq, StoreError> {
        let prefix = per_dest::prefix(dest);
        match self.tree.scan_prefix(&prefix).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                per_dest::parse_seq(&prefix, &k, 4).ok_or_else(|| {
                    CodecError::Corrupt(format!("attempts key of {} bytes", k.len())).into()
                })
            }
            None => Ok(Seq(0)),
        }
    }
}

/// A message's latest attempt at one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Its attempt number (1-based; numbers go on across runs and restarts).
    pub n: u32,
    pub attempt: Attempt,
    /// Where its retry run stood after it, if it belonged to one.
    pub run: Option<RetryRun>,
}

impl PerDestination for Attempts {
    fn prefixes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        per_dest::prefixes(&self.tree)
    }

    /// One sled batch: rows nobody else deletes, so no count to keep exact.
    fn remove_below(&self, prefix: &[u8], below: Seq, max: usize) -> Result<Removed, StoreError> {
        let rows = per_dest::rows_below(&self.tree, prefix, below, max)?;
        if !rows.keys.is_empty() {
            let mut batch = sled::Batch::default();
            for k in &rows.keys {
                batch.remove(k.clone());
            }
            self.tree.apply_batch(batch)?;
        }
        Ok(rows.removed(rows.keys.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{attempt, open};

    #[test]
    fn last_attempted_is_per_destination() {
        let (_dir, store) = open();
        let (attempts, none) = (store.attempts(), Seq(0));
        let (a, ab, c): (DestinationName, DestinationName, DestinationName) = (
            "a".parse().unwrap(),
            "ab".parse().unwrap(),
            "c".parse().unwrap(),
        );
        attempts.record(&a, Seq(7), 2, &attempt()).unwrap();
        attempts.record(&a, Seq(3), 1, &attempt()).unwrap();
        attempts.record(&ab, Seq(9), 1, &attempt()).unwrap();
        assert_eq!(attempts.last_attempted(&a).unwrap(), Seq(7));
        assert_eq!(attempts.last_attempted(&ab).unwrap(), Seq(9));
        assert_eq!(attempts.last_attempted(&c).unwrap(), none);
    }

    #[test]
    fn the_latest_attempt_of_a_seq_comes_with_its_number_and_run() {
        let (_dir, store) = open();
        let attempts = store.attempts();
        let (d, other): (DestinationName, DestinationName) =
            ("d".parse().unwrap(), "d2".parse().unwrap());
        assert_eq!(attempts.latest(&d, Seq(5)).unwrap(), None);
        let run = RetryRun {
            epoch: 1,
            first: 1,
            started_ms: 10,
            retry_at_ms: Some(20),
        };
        attempts.record(&d, Seq(5), 1, &attempt()).unwrap();
        attempts
            .record_in(&d, Seq(5), 2, &attempt(), Some(&run))
            .unwrap();
        attempts.record(&d, Seq(6), 1, &attempt()).unwrap();
        attempts.record(&other, Seq(5), 9, &attempt()).unwrap();
        let latest = attempts.latest(&d, Seq(5)).unwrap().unwrap();
        assert_eq!((latest.n, latest.run), (2, Some(run)));
        assert_eq!(latest.attempt, attempt());
        assert_eq!(attempts.list(&d, Seq(5)).unwrap().len(), 2);
        let plain = attempts.latest(&d, Seq(6)).unwrap().unwrap();
        assert_eq!((plain.n, plain.run), (1, None));
        assert_eq!(attempts.latest(&d, Seq(4)).unwrap(), None);
    }

    #[test]
    fn rows_below_a_seq_go_for_every_destination_and_no_others() {
        let (_dir, store) = open();
        let attempts = store.attempts();
        let (d1, d2): (DestinationName, DestinationName) =
            ("d1".parse().unwrap(), "d1-old".parse().unwrap());
        for seq in 1..=3 {
            for d in [&d1, &d2] {
                attempts.record(d, Seq(seq), 1, &attempt()).unwrap();
                attempts.record(d, Seq(seq), 2, &attempt()).unwrap();
            }
        }
        for prefix in attempts.prefixes().unwrap() {
            while attempts.remove_below(&prefix, Seq(3), 1).unwrap().more {}
        }
        for d in [&d1, &d2] {
            assert!(attempts.list(d, Seq(1)).unwrap().is_empty());
            assert!(attempts.list(d, Seq(2)).unwrap().is_empty());
            assert_eq!(attempts.list(d, Seq(3)).unwrap().len(), 2);
        }
    }
}
