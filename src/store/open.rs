//! Opening sled: its configuration, waiting for a previous instance's lock,
//! and clearing what a crash can leave that would stop every later open.
//! Owns no tree and never writes records.

use std::path::Path;

use super::StoreError;

/// How long [`open_sled`] waits for a previous instance to let go of the
/// data dir's lock (sled's background threads release it shortly after the
/// last handle drops, e.g. on an in-process restart).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// sled's page cache. Delivery reads just behind the head and admin reads are
/// rare, so a small cache keeps RSS low even with a large backlog.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens sled under `dir` with the relay's settings. Blocking.
pub fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut cleared_partial_snapshots = false;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Background flushes keep cursors and attempts fresh; acks never rely on them.
            .flush_every_ms(Some(500))
            .cache_capacity(CACHE_BYTES)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e @ sled::Error::Corruption { .. }) if !cleared_partial_snapshots => {
                cleared_partial_snapshots = true;
                if remove_partial_snapshots(dir)? == 0 {
                    return Err(e.into());
                }
            }
            other => return Ok(other?),
        }
    }
}

/// Removes `snap.*.generating` files: snapshots a crash interrupted while
/// sled was writing them. sled 0.34 renames a snapshot to `snap.<lsn>` only
/// once it is complete and synced, but when it opens it also considers the
/// `.generating` ones, and a torn one (found by the crash loop: `kill -9`
/// during a start or a stop's checkpoint) makes every later open fail with
/// "corrupt snapshot". Without it sled recovers from the previous snapshot
/// and the log, which it keeps until the new snapshot is in place. Only
/// called after an open failed that way, so never under a running instance.
fn remove_partial_snapshots(dir: &Path) -> Result<usize, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let partial = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if partial {
            tracing::warn!(path = %path.display(), "removing a snapshot a crash left half-written");
            std::fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use crate::model::Seq;
    use crate::store::test_support::{message, open, put};
    use crate::store::Store;

    #[test]
    fn a_snapshot_torn_by_a_crash_does_not_stop_the_next_open() {
        let (dir, store) = open();
        for seq in 1..=20 {
            put(&store, seq, &message("a", 1, vec![seq as u8; 100]));
        }
        store.sync().unwrap();
        drop(store);
        // What `kill -9` leaves when it lands while sled writes a snapshot
        // (sled names it after the log position, so it sorts last).
        let torn = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&torn, b"half of a snapshot, no valid crc at its end").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!torn.exists());
        assert_eq!(store.log().last_seq().unwrap(), Seq(20));
        let last = store.log().message(Seq(20)).unwrap().unwrap();
        assert_eq!(last.body, vec![20; 100]);
    }
}
