//! Opening sled: its configuration, waiting for a previous instance's lock,
//! and clearing what a crash can leave that would stop every later open.
//! Owns no tree and never writes records.

use std::path::Path;

use super::log::segments::SEGMENT_SIZE;
use super::StoreError;

/// How long [`open_sled`] waits for a previous instance to let go of the
/// data dir's lock (sled's background threads release it shortly after the
/// last handle drops, e.g. on an in-process restart). A second `serve` on a
/// dir a running relay holds waits this long too, then fails with
/// [`StoreError::InUse`] naming the holder: short next to a service
/// manager's restart delays, and long enough to ride over a stop and start.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// sled's page cache. Delivery reads just behind the head and admin reads are
/// rare, so a small cache keeps RSS low even with a large backlog.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The data dir's own lock file: see [`lock_data_dir`].
const LOCK_FILE: &str = "hookrelay.lock";

/// Takes the data dir's lock, before anything touches the dir (a format
/// migration included, which runs before sled takes its own lock), held
/// for as long as the returned file is open. Waits [`LOCK_WAIT`] for a
/// previous holder, like [`open_sled`]. Blocking.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join(LOCK_FILE);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let mut wait = LockWait::new(dir);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => wait.again(&path)?,
            Err(e) => return Err(io(e.into())),
        }
    }
}

/// Waiting for a data dir's lock: up to [`LOCK_WAIT`], said once in the
/// log, then [`StoreError::InUse`] naming the holder of `locked` (the
/// locked file) when the system says.
struct LockWait<'a> {
    dir: &'a Path,
    deadline: std::time::Instant,
    said: bool,
}

impl<'a> LockWait<'a> {
    fn new(dir: &'a Path) -> Self {
        LockWait {
            dir,
            deadline: std::time::Instant::now() + LOCK_WAIT,
            said: false,
        }
    }

    /// Sleeps a little before the next try, or gives up.
    fn again(&mut self, locked: &Path) -> Result<(), StoreError> {
        let dir = self.dir;
        if std::time::Instant::now() >= self.deadline {
            return Err(StoreError::InUse {
                // Absolute, so that the operator knows which one.
                dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
                pid: lock_holder(locked),
            });
        }
        if !self.said {
            self.said = true;
            tracing::info!(
                data_dir = %dir.display(),
                "data dir locked; waiting up to {LOCK_WAIT:?} for its holder to let go"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        Ok(())
    }
}

/// Opens sled under `dir` with the relay's settings. Blocking.
pub fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    open_sled_with(dir, SEGMENT_SIZE)
}

/// [`open_sled`] with another `segment_size`: sled refuses to open a
/// database with any other than the one it was created with (kept in its
/// `conf` file), so a format 1 data dir (sled's default, 512 KiB) is opened
/// with its own to be migrated. Blocking.
pub fn open_sled_with(dir: &Path, segment_size: usize) -> Result<sled::Db, StoreError> {
    let mut wait = LockWait::new(dir);
    let mut cleared_partial_snapshots = false;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Background flushes keep cursors and attempts fresh; acks never rely on them.
            .flush_every_ms(Some(500))
            .cache_capacity(CACHE_BYTES)
            .segment_size(segment_size)
            .open();
        match opened {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                wait.again(&dir.join("db"))?;
            }
            Err(e @ sled::Error::Corruption { .. }) if !cleared_partial_snapshots => {
                cleared_partial_snapshots = true;
                if remove_partial_snapshots(dir)? == 0 {
                    return Err(e.into());
                }
            }
            Ok(db) => {
                sync_settings(dir)?;
                return Ok(db);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Makes sled's `conf` file durable, and the directory naming it.
///
/// sled 0.34 writes `conf` (its settings and their checksum, in two writes)
/// when it creates a database and again whenever it finds the file empty,
/// but never fsyncs it. A power cut can then leave it torn: zeros of its
/// length (on file systems that persist a size before the data), or the
/// settings without their checksum. sled then refuses every later open with
/// "Read corrupted data", and the relay cannot start, although every
/// acknowledged webhook is still in `db`. Found by the power-loss test
/// (`tests/power_loss.rs`). Synced after every open, it can only be torn by
/// a cut during the very first open, before anything is stored.
fn sync_settings(dir: &Path) -> Result<(), StoreError> {
    for path in [dir.join("conf"), dir.to_path_buf()] {
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|source| StoreError::Io { path, source })?;
    }
    Ok(())
}

/// The `segment_size` recorded in sled's `conf` file under `dir` (a line
/// `segment_size: N`); `None` when there is no database there yet.
pub fn persisted_segment_size(dir: &Path) -> Result<Option<usize>, StoreError> {
    let path = dir.join("conf");
    // The file ends in a binary checksum.
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| StoreError::Migration(format!("no segment_size in {}", path.display())))
}

/// The pid holding sled's lock on `db_file`. sled 0.34 locks its `db` file
/// with `flock(LOCK_EX | LOCK_NB)` (through fs2) for as long as it is open;
/// Linux lists every `flock` in `/proc/locks` with the holder's pid and the
/// file's device and inode. `None` where that cannot be read or matched.
#[cfg(target_os = "linux")]
fn lock_holder(db_file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(db_file).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    flock_holder(&locks, dev_major_minor(meta.dev()), meta.ino())
}

#[cfg(not(target_os = "linux"))]
fn lock_holder(_db_file: &Path) -> Option<u32> {
    None
}

/// glibc's `major()` and `minor()` of a `st_dev`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The pid of the `FLOCK` on inode `ino` of device `dev` in `locks`, the text
/// of `/proc/locks` (lines like `3: FLOCK  ADVISORY  WRITE 4242 fe:01:1234 0
/// EOF`, device numbers in hex; waiters are marked `->` and skipped). When no
/// lock matches the device too (overlayfs and btrfs report another `st_dev`
/// than the one the kernel lists), one holder of that inode is taken alone.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn flock_holder(locks: &str, dev: (u64, u64), ino: u64) -> Option<u32> {
    let mut same_inode = Vec::new();
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, _, pid, file, ..] = fields.as_slice() else {
            continue;
        };
        let Some(pid) = pid.parse::<u32>().ok().filter(|&p| p != 0) else {
            continue;
        };
        let mut parts = file.split(':');
        let (Some(major), Some(minor), Some(inode), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let parsed = (
            u64::from_str_radix(major, 16).ok(),
            u64::from_str_radix(minor, 16).ok(),
        );
        if parsed == (Some(dev.0), Some(dev.1)) {
            return Some(pid);
        }
        same_inode.push(pid);
    }
    same_inode.sort_unstable();
    same_inode.dedup();
    match same_inode.as_slice() {
        [pid] => Some(*pid),
        _ => None,
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
    use super::{dev_major_minor, flock_holder};
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

    #[test]
    fn the_lock_holder_is_read_from_proc_locks_by_device_and_inode() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 11 fe:00:777 0 EOF
2: FLOCK  ADVISORY  WRITE 22 08:01:777 0 EOF
3: FLOCK  ADVISORY  WRITE 33 fe:00:777 0 EOF
3: -> FLOCK  ADVISORY  WRITE 44 fe:00:777 0 EOF
4: FLOCK  ADVISORY  READ 55 fe:00:778 0 EOF
";
        assert_eq!(flock_holder(locks, (0xfe, 0), 777), Some(33));
        assert_eq!(flock_holder(locks, (8, 1), 777), Some(22));
        // No device matches: the one holder of that inode.
        assert_eq!(flock_holder(locks, (0, 40), 778), Some(55));
        // Two holders on other devices: unknown rather than a guess.
        assert_eq!(flock_holder(locks, (0, 40), 777), None);
        assert_eq!(flock_holder(locks, (0xfe, 0), 999), None);
        assert_eq!(flock_holder("", (0xfe, 0), 777), None);
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(dev_major_minor(0xfe00), (0xfe, 0));
        assert_eq!(dev_major_minor(0x0801), (8, 1));
        // A large minor (e.g. 259:65536, NVMe partitions) uses the high bits.
        assert_eq!(dev_major_minor((259 << 8) | (0x100 << 12)), (259, 0x100));
    }

    #[test]
    fn a_second_open_names_the_holder() {
        let (dir, _store) = open();
        let e = match Store::open(dir.path()) {
            Err(e) => e,
            Ok(_) => panic!("a second open of a held data dir succeeded"),
        };
        let text = e.to_string();
        assert!(text.contains("is in use by another hookrelay"), "{text}");
        #[cfg(target_os = "linux")]
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }
}
