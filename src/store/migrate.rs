//! Bringing a format 1 data dir to format 2, once, at open.
//!
//! Format 1 kept messages in one tree `log` as 4 KiB chunks, in a sled
//! database of sled's default 512 KiB segments; format 2 keeps them in
//! frames in segment trees, in a database of 8 MiB segments. sled refuses
//! to reopen a database with another segment size, so the migration builds
//! a new database beside the old one and swaps the files:
//!
//! 1. build `.format2-building/`: every tree but `log` copied as is, the
//!    messages re-packed into segments (their records unchanged: a version 1
//!    or 2 `Message` record decodes from a frame as from chunks), then
//!    `meta/format` = 2, synced;
//! 2. rename it to `.format2-ready/` (the commit point);
//! 3. move the old database's files into `.format1-moving/`, rename that to
//!    `.format1-old/`, move the new files into the data dir, remove both.
//!
//! A crash in step 1 leaves `.format2-building/`, which the next open
//! removes before it starts again from the untouched old database; a crash
//! in step 3 is finished by the next open from whichever directories exist,
//! so no message is lost or stored twice. Owns no tree of the running store.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::dedup::{self, BatchIndex, Dedup};
use super::log::segments::SEGMENT_SIZE;
use super::log::{parse_key, Log};
use super::{open, StoreError, FORMAT_VERSION};
use crate::model::Seq;

const BUILDING: &str = ".format2-building";
const READY: &str = ".format2-ready";
const OLD_MOVING: &str = ".format1-moving";
const OLD: &str = ".format1-old";
/// Encoded message bytes per write while copying.
const COPY_BATCH_BYTES: usize = 8 << 20;
/// Keys per batch while copying the other trees.
const COPY_BATCH_KEYS: usize = 4096;

/// Makes the data dir under `dir` ready for a format 2 open: finishes an
/// interrupted migration and migrates a format 1 database. Blocking.
pub fn prepare(dir: &Path) -> Result<(), StoreError> {
    finish_swap(dir)?;
    remove_dir_all_if_there(&dir.join(BUILDING))?;
    match open::persisted_segment_size(dir)? {
        None => Ok(()),
        Some(SEGMENT_SIZE) => Ok(()),
        Some(old) => {
            build(dir, old)?;
            finish_swap(dir)
        }
    }
}

/// Step 1 and 2: the new database, complete and synced, under `READY`.
fn build(dir: &Path, old_segment_size: usize) -> Result<(), StoreError> {
    let started = Instant::now();
    let old = open::open_sled_with(dir, old_segment_size)?;
    let meta = old.open_tree("meta")?;
    match meta.get(b"format")?.as_deref().map(u32_be).transpose()? {
        None | Some(1) => {}
        Some(v) if v > FORMAT_VERSION => return Err(StoreError::NewerFormat(v)),
        Some(v) => {
            return Err(StoreError::Migration(format!(
                "format {v} in a database of {old_segment_size}-byte segments"
            )))
        }
    }
    let log = old.open_tree("log")?;
    let first = log.first()?.and_then(|(k, _)| parse_key(&k)).map(|k| k.0);
    let last = log.last()?.and_then(|(k, _)| parse_key(&k)).map(|k| k.0);
    let span = match (first, last) {
        (Some(f), Some(l)) => l.0.saturating_sub(f.0) + 1,
        _ => 0,
    };
    tracing::info!(
        data_dir = %dir.display(),
        first_seq = first.map(|s| s.0),
        last_seq = last.map(|s| s.0),
        "migrating data dir from format 1 to 2: {span} messages"
    );

    let building = dir.join(BUILDING);
    let new = open::open_sled(&building)?;
    for name in old.tree_names() {
        if name == b"log" || name == b"__sled__default" {
            continue;
        }
        copy_tree(&old.open_tree(&name)?, &new.open_tree(&name)?)?;
    }
    let new_log = Log::open(&new, new.open_tree("meta")?)?;
    let new_dedup = Dedup::new(new.open_tree("dedup")?);
    let mut copy = Copy {
        log: &new_log,
        dedup: &new_dedup,
        batch: Vec::new(),
        bytes: 0,
        messages: 0,
    };
    // The message being put together from its chunks, and its next chunk.
    let mut current: Option<(Seq, Vec<u8>, u32)> = None;
    let mut stray_chunks = 0u64;
    for kv in log.iter() {
        let (k, v) = kv?;
        match (parse_key(&k), &mut current) {
            (Some((seq, 0)), _) => {
                if let Some((s, bytes, _)) = current.take() {
                    copy.push(s, bytes)?;
                }
                current = Some((seq, v.to_vec(), 1));
            }
            (Some((seq, chunk)), Some((s, bytes, next))) if seq == *s && chunk == *next => {
                bytes.extend_from_slice(&v);
                *next += 1;
            }
            // A chunk without its message's first, or after a gap: format 1
            // could not read that message either.
            _ => stray_chunks += 1,
        }
    }
    if let Some((s, bytes, _)) = current.take() {
        copy.push(s, bytes)?;
    }
    copy.write()?;
    let messages = copy.messages;
    new.open_tree("meta")?
        .insert(b"format", &FORMAT_VERSION.to_be_bytes())?;
    new.flush()?;
    let db_file = building.join("db");
    File::open(&db_file)
        .and_then(|f| f.sync_data())
        .map_err(|source| StoreError::Io {
            path: db_file,
            source,
        })?;
    drop((new_log, new_dedup, new, log, meta, old));
    sync_dir(&building)?;
    rename(&building, &dir.join(READY))?;
    sync_dir(dir)?;
    if stray_chunks > 0 {
        tracing::warn!(
            chunks = stray_chunks,
            "format 1 log chunks without their message's first chunk were left out"
        );
    }
    tracing::info!(
        messages,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data dir migrated to format 2"
    );
    Ok(())
}

/// Messages on their way into the new log.
struct Copy<'a> {
    log: &'a Log,
    dedup: &'a Dedup,
    batch: Vec<(Seq, Vec<u8>)>,
    bytes: usize,
    messages: u64,
}

impl Copy<'_> {
    fn push(&mut self, seq: Seq, record: Vec<u8>) -> Result<(), StoreError> {
        self.bytes += record.len();
        self.messages += 1;
        self.batch.push((seq, record));
        if self.bytes >= COPY_BATCH_BYTES {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), StoreError> {
        // The dedup tree was copied as is: no entries to add.
        dedup::write_batch(self.log, self.dedup, &self.batch, &BatchIndex::default())?;
        self.batch.clear();
        self.bytes = 0;
        Ok(())
    }
}

fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in from.iter() {
        let (k, v) = kv?;
        batch.insert(k, v);
        n += 1;
        if n == COPY_BATCH_KEYS {
            to.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Step 3, from wherever a crash interrupted it.
fn finish_swap(dir: &Path) -> Result<(), StoreError> {
    let (ready, old, moving) = (dir.join(READY), dir.join(OLD), dir.join(OLD_MOVING));
    if ready.exists() {
        // New files come in only once every old one is out (`OLD` exists),
        // so until then every sled file in the dir is an old one.
        if !old.exists() {
            std::fs::create_dir_all(&moving).map_err(io(&moving))?;
            for name in sled_files(dir)? {
                rename(&dir.join(&name), &moving.join(&name))?;
            }
            sync_dir(&moving)?;
            sync_dir(dir)?;
            rename(&moving, &old)?;
            sync_dir(dir)?;
        }
        for name in sled_files(&ready)? {
            rename(&ready.join(&name), &dir.join(&name))?;
        }
        sync_dir(dir)?;
        std::fs::remove_dir_all(&ready).map_err(io(&ready))?;
        sync_dir(dir)?;
    }
    remove_dir_all_if_there(&old)
}

/// The names of sled's files in `dir`: `conf`, `db`, `blobs`, `snap.*`.
fn sled_files(dir: &Path) -> Result<Vec<std::ffi::OsString>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let s = name.to_string_lossy();
        if matches!(&*s, "conf" | "db" | "blobs") || s.starts_with("snap.") {
            out.push(name);
        }
    }
    Ok(out)
}

fn u32_be(v: &[u8]) -> Result<u32, StoreError> {
    let b: [u8; 4] = v
        .try_into()
        .map_err(|_| StoreError::Migration("format marker of the wrong size".into()))?;
    Ok(u32::from_be_bytes(b))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(io(from))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn remove_dir_all_if_there(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DestinationName, SourceName};
    use crate::store::Store;

    /// A copy of the committed format 1 fixture (see its generator's
    /// description in the commit that added it).
    pub fn fixture_copy() -> tempfile::TempDir {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
        let to = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
            }
        }
        to
    }

    /// Everything the fixture holds, read through the format 2 store.
    fn check_fixture(store: &Store) {
        let log = store.log();
        assert_eq!(log.first_seq().unwrap(), Some(Seq(1)));
        assert_eq!(log.last_seq().unwrap(), Seq(5));
        let sources = ["s", "t", "s", "t", "s"];
        for (i, source) in sources.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let m = log
                .message(Seq(seq))
                .unwrap()
                .expect("every message is kept");
            assert_eq!(m.source.as_str(), source);
            assert_eq!(m.received_at_ms, 1_767_225_600_000 + i as u64 * 1000);
            assert_eq!(m.content_type.as_deref(), Some("application/json"));
            assert_eq!(
                m.headers,
                vec![("x-fixture".into(), seq.to_string().into_bytes())]
            );
            let body = match seq {
                3 => (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect(),
                n => format!("{{\"n\":{n}}}").into_bytes(),
            };
            assert_eq!(m.body, body, "seq {seq}");
        }
        let two = log.message(Seq(2)).unwrap().unwrap();
        assert_eq!(two.event_type.as_deref(), Some("invoice.paid"));
        assert_eq!(two.query.as_deref(), Some("account=acct_1"));
        let one = log.message(Seq(1)).unwrap().unwrap();
        assert_eq!(one.idempotency_key.as_deref(), Some("evt-1"));
        let s: SourceName = "s".parse().unwrap();
        let entry = store.dedup().lookup(&s, "evt-1", 0).unwrap().unwrap();
        assert_eq!((entry.seq, entry.id), (Seq(1), one.id));
        let d: DestinationName = "d".parse().unwrap();
        assert_eq!(store.cursors().get(&d).unwrap(), Seq(2));
        let attempts = store.attempts().list(&d, Seq(2)).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status, Some(500));
        assert_eq!(store.dead_letters().count(&d), 1);
        let dead = store.dead_letters().list(&d, Seq(0), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, Seq(2));
        assert_eq!(dead[0].1.last_error, "HTTP 500");
    }

    fn assert_format_2(dir: &Path) {
        assert_eq!(
            open::persisted_segment_size(dir).unwrap(),
            Some(SEGMENT_SIZE)
        );
        for leftover in [BUILDING, READY, OLD_MOVING, OLD] {
            assert!(!dir.join(leftover).exists(), "{leftover} left behind");
        }
    }

    #[test]
    fn a_format_1_data_dir_is_migrated_with_every_record() {
        let dir = fixture_copy();
        assert_eq!(
            open::persisted_segment_size(dir.path()).unwrap(),
            Some(512 * 1024)
        );
        let store = Store::open(dir.path()).unwrap();
        assert_format_2(dir.path());
        check_fixture(&store);
        let format = store.db().open_tree("meta").unwrap().get(b"format");
        assert_eq!(format.unwrap().unwrap().as_ref(), &2u32.to_be_bytes());
        assert!(!store.db().tree_names().iter().any(|n| n == b"log"));
        // And it stays that way across a reopen.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check_fixture(&store);
    }

    #[test]
    fn a_migration_interrupted_anywhere_finishes_at_the_next_open() {
        // A crash while building: the half-built copy is thrown away.
        let dir = fixture_copy();
        std::fs::create_dir_all(dir.path().join(BUILDING).join("blobs")).unwrap();
        std::fs::write(dir.path().join(BUILDING).join("db"), b"half").unwrap();
        check_fixture(&Store::open(dir.path()).unwrap());
        assert_format_2(dir.path());

        // Crashes after the commit point: before the swap, with some old
        // files moved out, and with some new files moved in.
        for moved_in in [0, 1, 2] {
            let dir = fixture_copy();
            build(dir.path(), 512 * 1024).unwrap();
            let (root, moving) = (dir.path(), dir.path().join(OLD_MOVING));
            if moved_in > 0 {
                std::fs::create_dir(&moving).unwrap();
                std::fs::rename(root.join("db"), moving.join("db")).unwrap();
            }
            if moved_in > 1 {
                for name in sled_files(root).unwrap() {
                    std::fs::rename(root.join(&name), moving.join(&name)).unwrap();
                }
                std::fs::rename(&moving, root.join(OLD)).unwrap();
                std::fs::rename(root.join(READY).join("conf"), root.join("conf")).unwrap();
            }
            check_fixture(&Store::open(dir.path()).unwrap());
            assert_format_2(dir.path());
        }
    }
}
