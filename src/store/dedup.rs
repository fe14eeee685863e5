//! The dedup index, tree `dedup`: key `source ‖ 0x00 ‖ idempotency key`,
//! value a versioned [`DedupEntry`] (the first message with that key, until
//! its window ends).
//!
//! Owns the key layout, the lookup within a window, the entries of one append
//! batch (keys repeated inside a batch included), the one transaction that
//! writes a batch's messages with its entries, and retention's removal of
//! expired entries. Verify produces the idempotency key and ingest chooses
//! the window; neither touches the index. Must not write `log` other than in
//! [`write_batch`].

use std::collections::HashMap;
use std::ops::Bound;

use super::codec::{self, DedupEntry};
use super::log::Log;
use super::StoreError;
use crate::model::{MessageId, Seq, SourceName};

/// `dedup` key: source ‖ 0 ‖ idempotency key.
fn key(source: &SourceName, idempotency_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.as_str().len() + 1 + idempotency_key.len());
    k.extend_from_slice(source.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(idempotency_key.as_bytes());
    k
}

/// Handle to the dedup index; cheap to clone.
#[derive(Clone)]
pub struct Dedup {
    tree: sled::Tree,
}

impl Dedup {
    pub(super) fn new(tree: sled::Tree) -> Dedup {
        Dedup { tree }
    }

    /// The live entry for `idempotency_key` at `source`, if any.
    pub fn lookup(
        &self,
        source: &SourceName,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<Option<DedupEntry>, StoreError> {
        self.lookup_key(&key(source, idempotency_key), now_ms)
    }

    fn lookup_key(&self, k: &[u8], now_ms: u64) -> Result<Option<DedupEntry>, StoreError> {
        match self.tree.get(k)? {
            Some(v) => {
                let e = codec::decode_dedup(&v)?;
                Ok((e.expires_at_ms > now_ms).then_some(e))
            }
            None => Ok(None),
        }
    }

    /// Looks at up to `max` entries after `after` and deletes the expired
    /// ones. Each removal is a compare-and-swap, so an entry the appender
    /// rewrote in the meantime stays. Blocking.
    pub fn remove_expired(
        &self,
        after: Option<Vec<u8>>,
        now_ms: u64,
        max: usize,
    ) -> Result<Expired, StoreError> {
        let iter = match &after {
            Some(a) => self
                .tree
                .range::<&[u8], _>((Bound::Excluded(a.as_slice()), Bound::Unbounded)),
            None => self.tree.iter(),
        };
        let mut out = Expired::default();
        let mut seen = 0usize;
        for kv in iter {
            let (k, v) = kv?;
            match codec::decode_dedup(&v) {
                Ok(e) if e.expires_at_ms <= now_ms => {
                    if self
                        .tree
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
            if seen >= max {
                out.next = Some(k.to_vec());
                break;
            }
        }
        Ok(out)
    }
}

/// What one [`Dedup::remove_expired`] step did.
#[derive(Debug, Default)]
pub struct Expired {
    pub removed: u64,
    /// Entries that cannot be decoded, left in place.
    pub unreadable: u64,
    pub bytes: u64,
    /// Where the next step starts (after this key); `None` when done.
    pub next: Option<Vec<u8>>,
}

/// The dedup side of one append batch: which keys it has seen, and the
/// entries to write with its messages.
#[derive(Default)]
pub struct BatchIndex {
    seen: HashMap<Vec<u8>, (Seq, MessageId)>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What [`BatchIndex::check`] found.
pub enum Check {
    /// The key was seen inside its window: this is the first message's seq and id.
    Duplicate(Seq, MessageId),
    /// A new key; pass it to [`BatchIndex::remember`] once the message has a seq.
    New(NewKey),
}

/// A key checked and found new.
pub struct NewKey(Vec<u8>);

impl BatchIndex {
    /// Looks `idempotency_key` up earlier in this batch, then in the index.
    /// A point read of the index.
    pub fn check(
        &self,
        dedup: &Dedup,
        source: &SourceName,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<Check, StoreError> {
        let k = key(source, idempotency_key);
        if let Some((seq, id)) = self.seen.get(&k) {
            return Ok(Check::Duplicate(*seq, id.clone()));
        }
        match dedup.lookup_key(&k, now_ms)? {
            Some(e) => Ok(Check::Duplicate(e.seq, e.id)),
            None => Ok(Check::New(NewKey(k))),
        }
    }

    /// Adds the entry of a new message, to be written with it.
    pub fn remember(
        &mut self,
        key: NewKey,
        seq: Seq,
        id: MessageId,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let entry = DedupEntry {
            seq,
            id: id.clone(),
            expires_at_ms,
        };
        self.entries
            .push((key.0.clone(), codec::encode_dedup(&entry)?));
        self.seen.insert(key.0, (seq, id));
        Ok(())
    }
}

/// Stages a batch of encoded messages and their dedup entries in one atomic
/// write; durable only after the store's sync. Blocking.
///
/// Atomic across every tree it touches (the log segments the batch fills
/// and `dedup`): a crash (even before the sync) keeps all or nothing. A
/// message kept without its dedup entry would be stored a second time,
/// under a new seq and id, when its sender retries the unanswered request
/// after the restart.
pub fn write_batch(
    log: &Log,
    dedup: &Dedup,
    messages: &[(Seq, Vec<u8>)],
    index: &BatchIndex,
) -> Result<(), StoreError> {
    use sled::transaction::{
        ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    };
    if messages.is_empty() {
        return Ok(());
    }
    let segments = log.segments();
    // Held until the new tail is known, so retention never drops a segment
    // this batch writes into.
    let mut tail = segments.lock_tail();
    let staged = segments.stage(&tail, messages)?;
    let written = match staged.writes.as_slice() {
        [(_, tree, batch)] if index.entries.is_empty() => {
            tree.apply_batch(batch.clone()).map_err(StoreError::from)
        }
        writes => {
            let mut entries = sled::Batch::default();
            for (k, v) in &index.entries {
                entries.insert(k.as_slice(), v.as_slice());
            }
            let mut trees: Vec<&sled::Tree> = writes.iter().map(|(_, t, _)| t).collect();
            trees.push(&dedup.tree);
            // Like `apply_batch`, a transaction is recovered all or nothing,
            // here across every tree it names.
            trees[..]
                .transaction(|tx: &Vec<TransactionalTree>| {
                    for ((_, _, batch), tree) in writes.iter().zip(tx) {
                        tree.apply_batch(batch)?;
                    }
                    if let Some(dedup) = tx.last() {
                        dedup.apply_batch(&entries)?;
                    }
                    Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => StoreError::Sled(e),
                    TransactionError::Abort(never) => match never {},
                })
        }
    };
    match written {
        Ok(()) => *tail = staged.tail,
        Err(_) => segments.reload_tail(&mut tail),
    }
    written
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::test_support::message;
    use crate::store::Store;

    fn keyed(store: &Store, seq: u64, idempotency_key: &str, expires_at_ms: u64) {
        let mut m = message("a", 1, vec![7; 200]);
        m.idempotency_key = Some(idempotency_key.to_owned());
        let mut index = BatchIndex::default();
        let Check::New(k) = index
            .check(store.dedup(), &m.source, idempotency_key, 0)
            .unwrap()
        else {
            panic!("{idempotency_key} is already in the index");
        };
        index
            .remember(k, Seq(seq), m.id.clone(), expires_at_ms)
            .unwrap();
        let bytes = codec::encode_message(&m).unwrap();
        write_batch(store.log(), store.dedup(), &[(Seq(seq), bytes)], &index).unwrap();
    }

    #[test]
    fn a_batch_sees_its_own_keys_and_the_index_honours_the_window() {
        let (_dir, store) = crate::store::test_support::open();
        let src: SourceName = "a".parse().unwrap();
        keyed(&store, 1, "k", 1_000);
        let mut index = BatchIndex::default();
        assert!(matches!(
            index.check(store.dedup(), &src, "k", 999).unwrap(),
            Check::Duplicate(Seq(1), _)
        ));
        // Expired: new again, and a repeat in the same batch is its duplicate.
        let Check::New(k) = index.check(store.dedup(), &src, "k", 1_000).unwrap() else {
            panic!("an expired entry still counts");
        };
        index
            .remember(k, Seq(2), MessageId::generate(1), 5_000)
            .unwrap();
        assert!(matches!(
            index.check(store.dedup(), &src, "k", 1_000).unwrap(),
            Check::Duplicate(Seq(2), _)
        ));
    }

    #[test]
    fn only_expired_entries_go() {
        let (_dir, store) = crate::store::test_support::open();
        let src: SourceName = "a".parse().unwrap();
        let n = 4196;
        for i in 0..n {
            let e = DedupEntry {
                seq: Seq(i as u64),
                id: MessageId::generate(1),
                expires_at_ms: if i % 2 == 0 { 100 } else { 10_000 },
            };
            let k = key(&src, &format!("k{i}"));
            store
                .dedup()
                .tree
                .insert(k, codec::encode_dedup(&e).unwrap())
                .unwrap();
        }
        let mut after = None;
        let mut removed = 0;
        loop {
            let b = store.dedup().remove_expired(after, 5_000, 4096).unwrap();
            removed += b.removed;
            match b.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(removed as usize, n / 2);
        assert!(store.dedup().lookup(&src, "k0", 50).unwrap().is_none());
        assert!(store.dedup().lookup(&src, "k1", 5_000).unwrap().is_some());
    }

    /// Set for the child process of the crash test below: its data dir.
    const CRASH_CHILD_DIR: &str = "HOOKRELAY_TEST_CRASH_CHILD_DIR";
    /// How many sled flushes the child lets happen before it dies.
    const CRASH_CHILD_FLUSHES: &str = "HOOKRELAY_TEST_CRASH_CHILD_FLUSHES";

    /// The child of `a_crash_never_keeps_a_message_without_its_dedup_entry`:
    /// appends keyed messages while another thread flushes sled, and exits
    /// right after a flush without running any destructor, so sled gets no
    /// last flush: like `kill -9`, what was written stays in the page cache
    /// and what was not is lost (and, unlike an abort, no core dump).
    #[test]
    #[ignore = "run as a child process by a_crash_never_keeps_a_message_without_its_dedup_entry"]
    fn crash_child_appends_keyed_messages_until_it_dies() {
        let Ok(dir) = std::env::var(CRASH_CHILD_DIR) else {
            return;
        };
        // Any failure exits at once with its own code (never 3, the parent's
        // "died as planned"), so a broken child can neither pass nor run forever.
        let fail = |what: &str, code: i32| -> ! {
            eprintln!("crash child: {what}");
            std::process::exit(code)
        };
        let flushes: u32 = std::env::var(CRASH_CHILD_FLUSHES)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail("bad flush count", 4));
        let store = Store::open(Path::new(&dir)).unwrap_or_else(|e| fail(&e.to_string(), 5));
        let db = store.db().clone();
        // Flushing starts once the first message is written: on a fast
        // machine the flushes would otherwise all finish before any write,
        // and the trial would test nothing.
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if first_rx.recv().is_err() {
                fail("the writer stopped before its first write", 9);
            }
            for _ in 0..flushes {
                if let Err(e) = db.flush() {
                    fail(&e.to_string(), 6);
                }
            }
            std::process::exit(3);
        });
        for seq in 1..=1_000_000 {
            let idempotency_key = format!("delivery-{seq}");
            let mut m = message("a", 1, vec![7; 200]);
            m.idempotency_key = Some(idempotency_key.clone());
            let mut index = BatchIndex::default();
            let k = NewKey(key(&m.source, &idempotency_key));
            if let Err(e) = index.remember(k, Seq(seq), m.id.clone(), u64::MAX) {
                fail(&e.to_string(), 7);
            }
            let bytes = codec::encode_message(&m).unwrap_or_else(|e| fail(&e.to_string(), 7));
            if let Err(e) = write_batch(store.log(), store.dedup(), &[(Seq(seq), bytes)], &index) {
                fail(&e.to_string(), 7);
            }
            if seq == 1 {
                let _ = first_tx.send(());
            }
        }
        fail("the flushes never finished", 8);
    }

    /// A message and its dedup entry are one atomic write: after a crash at
    /// any moment, a stored message is still found by its idempotency key, so
    /// a sender's retry is answered as a duplicate instead of stored twice.
    #[test]
    fn a_crash_never_keeps_a_message_without_its_dedup_entry() {
        let exe = std::env::current_exe().unwrap();
        let mut stored = 0;
        for trial in 0..12u32 {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "store::dedup::tests::crash_child_appends_keyed_messages_until_it_dies",
                    "--ignored",
                ])
                .env(CRASH_CHILD_DIR, dir.path())
                .env(CRASH_CHILD_FLUSHES, (1 + trial % 4).to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(
                status.code(),
                Some(3),
                "the child dies after its flushes (other codes: see its stderr above)"
            );
            let store = Store::open(dir.path()).unwrap();
            let source: SourceName = "a".parse().unwrap();
            let last = store.log().last_seq().unwrap();
            stored += last.0;
            for seq in 1..=last.0 {
                let m = store
                    .log()
                    .message(Seq(seq))
                    .unwrap()
                    .expect("no gaps in the log");
                let key = m.idempotency_key.expect("every message has a key");
                let found = store.dedup().lookup(&source, &key, 0).unwrap();
                assert_eq!(
                    found.map(|e| e.seq),
                    Some(Seq(seq)),
                    "trial {trial}: seq {seq} of {} survived the crash without its dedup entry",
                    last.0
                );
            }
        }
        assert!(stored > 0, "the children stored something before dying");
    }
}
