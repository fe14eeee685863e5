//! A small in-memory FUSE filesystem that can lose what was never synced, as
//! a disk does when the power goes: the power-loss test's stand-in for LazyFS.
//!
//! [`Disk`] holds the files; [`Disk::mount`] serves them at a directory from a
//! background thread of this process (the `fuser` crate's pure-Rust mount:
//! `mount(2)` as root, `fusermount3` otherwise), and [`Disk::cut_power`]
//! throws away everything not yet synced. The relay runs on it unmodified.
//!
//! # The model
//!
//! Every file has a *durable image* and a list of *pending changes* (writes
//! at an offset, size changes from `truncate`/`ftruncate`, `fallocate`), in
//! the order they were made. Reads see the image with the pending changes
//! applied, as the page cache would show them.
//!
//! - `fsync` and `fdatasync` of a file make all its pending changes durable,
//!   whichever descriptor made them (both carry the size, as `fdatasync` must
//!   for the data to be readable). Nothing else does: `sync_file_range`
//!   (sled's own flush) never reaches a FUSE filesystem, and `close` is no
//!   sync.
//! - The namespace (create, `mkdir`, unlink, `rmdir`, rename) is an ordered
//!   metadata journal, as on ext4 or XFS: each change is kept in memory, and
//!   any sync (`fsync`, `fdatasync` or `fsyncdir`, of any file or directory)
//!   commits all of them at once, in order. A cut reverts the whole namespace
//!   to the last commit: files created since then disappear, renamed ones get
//!   their old names back, unlinked ones come back with their durable image.
//!   This is looser than the strictest reading of POSIX (where only an
//!   `fsync` of the directory makes an entry durable); it is what journaling
//!   file systems do, and under the strict reading no program that creates a
//!   file without fsyncing every parent directory up to the mount point could
//!   ever reopen its data. [`Disk::with_strict_dirs`] models the strict
//!   reading instead. File *data*, on the other hand, is modelled more
//!   strictly than ext4's `data=ordered` mode: a commit forces out no other
//!   file's data.
//! - Writes go straight to this process (no FUSE writeback cache), so the
//!   pending changes are exactly the writes the program made, and none sits in
//!   the kernel. After a cut the test unmounts and mounts again, which also
//!   drops the kernel's page cache of the files: like a reboot.
//!
//! [`Disk::cut_power`] then, at one instant: keeps nothing pending
//! ([`Keep::Nothing`], the power-loss classic), or a pseudo-random part of it
//! ([`Keep::Some`]: each 4 KiB page touched since the last sync holds its
//! state after a random prefix of the changes to it, none to all, as the
//! page cache may have written it back between any two of them and a disk
//! with a volatile write cache may have kept any of those write-backs; pages
//! are independent of each other, and the size is that after a random prefix
//! of all the changes); reverts the namespace; answers syncs held by
//! [`Disk::hold_syncs`] with `EIO`; and answers every later request with
//! `EIO` until the next mount.
//!
//! [`Disk::hold_syncs`] makes syncs wait (a disk whose cache flush takes
//! forever) until the hold is released; a cut while they wait loses what
//! they would have made durable. The test uses it to make a power cut land
//! deterministically before any sync.
//!
//! Locks: `flock` and POSIX locks are not forwarded (the filesystem does not
//! ask for them at init), so the kernel keeps them locally, per mount, and
//! `/proc/locks` lists them as for any file system (sled locks its `db` file
//! with `flock`). No hard links, symlinks, special files or extended
//! attributes: sled and the relay use none.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// How long the kernel may cache names and attributes; every change goes
/// through it, and a cut is followed by a new mount.
const TTL: Duration = Duration::from_secs(1);
/// A page: the unit in which [`Keep::Some`] keeps or drops pending writes.
const PIECE: u64 = 4096;
const ROOT: u64 = 1;

/// What of the pending (never synced) changes survives a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: every file reverts to its last synced image.
    Nothing,
    /// Each page touched holds its state after a random prefix of its own
    /// pending changes, the size after a random prefix of all of them; the
    /// draws follow from this seed.
    Some { seed: u64 },
}

/// What a cut threw away.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    /// Files that had changes pending.
    pub files: usize,
    /// Pending changes (writes and size changes) at the moment of the cut.
    pub pending_changes: usize,
    /// Bytes of the pending writes.
    pub pending_bytes: u64,
    /// [`Keep::Some`]: 4 KiB pages the pending changes touched...
    pub pages: usize,
    /// ...and how many of them kept some of those changes.
    pub pages_kept: usize,
    /// Whether namespace changes (creates, renames, unlinks) were reverted.
    pub namespace_reverted: bool,
    /// Syncs that were held and are answered with `EIO` instead.
    pub held_syncs_failed: usize,
}

/// Counters since the disk was made.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskStats {
    /// Syncs completed (`fsync`, `fdatasync`, `fsyncdir`).
    pub syncs: u64,
    /// Syncs waiting because of [`Disk::hold_syncs`].
    pub held: usize,
    /// Bytes written in all.
    pub bytes_written: u64,
}

enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, to: &mut Vec<u8>) {
        match self {
            Change::Write { offset, data } => {
                let (at, end) = (*offset as usize, *offset as usize + data.len());
                if to.len() < end {
                    to.resize(end, 0);
                }
                to[at..end].copy_from_slice(data);
            }
            Change::SetLen(len) => to.resize(*len as usize, 0),
        }
    }
}

#[derive(Default)]
struct FileData {
    /// What reads see: the durable image with the pending changes applied.
    live: Vec<u8>,
    /// What survives a cut.
    durable: Vec<u8>,
    pending: Vec<Change>,
}

impl FileData {
    fn change(&mut self, c: Change) {
        c.apply(&mut self.live);
        self.pending.push(c);
    }

    fn sync(&mut self) {
        for c in self.pending.drain(..) {
            c.apply(&mut self.durable);
        }
    }
}

struct Inode {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    data: FileData,
    /// Directories: name → inode, as the program sees it now...
    entries: BTreeMap<OsString, u64>,
    /// ...and as of the last namespace commit.
    durable_entries: BTreeMap<OsString, u64>,
    /// Directories: the parent, for `..`.
    parent: u64,
}

impl Inode {
    fn new(kind: FileType, perm: u16, uid: u32, gid: u32, parent: u64) -> Inode {
        let now = SystemTime::now();
        Inode {
            kind,
            perm,
            uid,
            gid,
            mtime: now,
            ctime: now,
            data: FileData::default(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            parent,
        }
    }

    fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = if self.is_dir() {
            4096
        } else {
            self.data.live.len() as u64
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind,
            perm: self.perm,
            nlink: if self.is_dir() { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PIECE as u32,
            flags: 0,
        }
    }
}

/// A sync waiting for its [`SyncHold`] to go.
struct Held {
    what: Synced,
    reply: ReplyEmpty,
}

/// What an `fsync`/`fdatasync` (a file) or `fsyncdir` (a directory) names.
#[derive(Debug, Clone, Copy)]
enum Synced {
    File(u64),
    Dir(u64),
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Namespace changes since the last commit.
    namespace_dirty: bool,
    /// See [`Disk::with_strict_dirs`].
    strict_dirs: bool,
    /// Between a cut and the next mount: every request fails.
    off: bool,
    holding: bool,
    held: Vec<Held>,
    stats: DiskStats,
}

impl State {
    fn new() -> State {
        // Owned by whoever runs the test, like the directory it is mounted on.
        let root = Inode::new(
            FileType::Directory,
            0o755,
            current_uid(),
            current_gid(),
            ROOT,
        );
        State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            namespace_dirty: false,
            strict_dirs: false,
            off: false,
            holding: false,
            held: Vec::new(),
            stats: DiskStats::default(),
        }
    }

    fn dir(&self, ino: u64) -> Result<&Inode, Errno> {
        match self.inodes.get(&ino) {
            Some(i) if i.is_dir() => Ok(i),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        match self.inodes.get_mut(&ino) {
            Some(i) if i.is_dir() => Err(Errno::EISDIR),
            Some(i) => Ok(i),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// A new inode named `name` in `parent`.
    fn add(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        umask: u32,
    ) -> Result<(u64, FileAttr), Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let perm = (mode & !umask & 0o7777) as u16;
        let inode = Inode::new(kind, perm, req.uid(), req.gid(), parent);
        let attr = inode.attr(ino);
        self.inodes.insert(ino, inode);
        self.link(parent, name, ino);
        Ok((ino, attr))
    }

    fn link(&mut self, parent: u64, name: &OsStr, ino: u64) {
        if let Some(p) = self.inodes.get_mut(&parent) {
            p.entries.insert(name.to_os_string(), ino);
            let now = SystemTime::now();
            p.mtime = now;
            p.ctime = now;
        }
        self.namespace_dirty = true;
    }

    fn unlink_entry(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let removed = self.inodes.get_mut(&parent)?.entries.remove(name);
        self.namespace_dirty = true;
        removed
    }

    /// A sync: `file`'s pending changes, then the namespace journal.
    fn sync(&mut self, what: Synced) {
        if let Synced::File(f) = what {
            if let Some(i) = self.inodes.get_mut(&f) {
                i.data.sync();
            }
        }
        match (self.strict_dirs, what) {
            (false, _) if self.namespace_dirty => {
                for i in self.inodes.values_mut().filter(|i| i.is_dir()) {
                    i.durable_entries.clone_from(&i.entries);
                }
                self.namespace_dirty = false;
                self.forget_unreachable();
            }
            (true, Synced::Dir(d)) => {
                if let Some(i) = self.inodes.get_mut(&d) {
                    i.durable_entries.clone_from(&i.entries);
                }
                self.forget_unreachable();
            }
            _ => {}
        }
        self.stats.syncs += 1;
    }

    /// Drops inodes that neither the namespace nor its last commit can reach
    /// (a file can still be open after its unlink; the program sees it
    /// through the handle only until the next commit, which is enough for
    /// sled, which never reads an unlinked file).
    fn forget_unreachable(&mut self) {
        let mut seen = std::collections::HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(d) = todo.pop() {
            if let Some(i) = self.inodes.get(&d) {
                for &c in i.entries.values().chain(i.durable_entries.values()) {
                    if seen.insert(c) {
                        todo.push(c);
                    }
                }
            }
        }
        self.inodes.retain(|ino, _| seen.contains(ino));
    }

    fn cut(&mut self, keep: Keep) -> CutReport {
        let mut report = CutReport {
            namespace_reverted: self
                .inodes
                .values()
                .any(|i| i.is_dir() && i.entries != i.durable_entries),
            ..CutReport::default()
        };
        let mut draw = 0u64;
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(i) = self.inodes.get_mut(&ino) else {
                continue;
            };
            if i.is_dir() {
                i.entries.clone_from(&i.durable_entries);
                continue;
            }
            let d = &mut i.data;
            if d.pending.is_empty() {
                continue;
            }
            report.files += 1;
            report.pending_changes += d.pending.len();
            report.pending_bytes += d
                .pending
                .iter()
                .map(|c| match c {
                    Change::Write { data, .. } => data.len() as u64,
                    Change::SetLen(_) => 0,
                })
                .sum::<u64>();
            match keep {
                Keep::Nothing => {}
                Keep::Some { seed } => {
                    let mut random = |bound: usize| {
                        draw += 1;
                        (mix(seed ^ mix(draw)) % (bound as u64 + 1)) as usize
                    };
                    let (torn, pages, kept) = torn(&d.durable, &d.pending, &mut random);
                    d.durable = torn;
                    report.pages += pages;
                    report.pages_kept += kept;
                }
            }
            d.pending.clear();
            d.live.clone_from(&d.durable);
        }
        self.namespace_dirty = false;
        self.forget_unreachable();
        // Directories' `..` as the reverted namespace has it.
        let links: Vec<(u64, u64)> = self
            .inodes
            .iter()
            .flat_map(|(&p, i)| i.entries.values().map(move |&c| (c, p)))
            .collect();
        for (c, p) in links {
            if let Some(i) = self.inodes.get_mut(&c) {
                i.parent = p;
            }
        }
        for h in self.held.drain(..) {
            h.reply.error(Errno::EIO);
            report.held_syncs_failed += 1;
        }
        self.holding = false;
        self.off = true;
        report
    }
}

/// What a disk may hold after a cut with `pending` unsynced on top of
/// `durable`: for each 4 KiB page, the state after a random prefix (maybe
/// none, maybe all) of the changes touching it, as the page cache may have
/// written the page back at any moment in between; and for the size, the
/// one after a random prefix of all changes (the size is metadata, written
/// back on its own). A page (partly) beyond that size is cut there, and
/// bytes of the size no surviving write reached are zeros. `random(n)` is a
/// number in `0..=n`. Returns the contents, the pages touched, and how many
/// kept at least one of their changes.
fn torn(
    durable: &[u8],
    pending: &[Change],
    random: &mut impl FnMut(usize) -> usize,
) -> (Vec<u8>, usize, usize) {
    // The changes touching each page, in order.
    let mut touching: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut len = durable.len() as u64;
    for (n, c) in pending.iter().enumerate() {
        let (from, to) = match c {
            // From the old end on: a write past it also zero-fills the gap.
            Change::Write { offset, data } => (
                (*offset).min(len),
                (offset + data.len() as u64).max(len.min(*offset)),
            ),
            Change::SetLen(new) => (len.min(*new), len.max(*new)),
        };
        if to > from {
            for page in from / PIECE..to.div_ceil(PIECE) {
                touching.entry(page).or_default().push(n);
            }
        }
        len = match c {
            Change::Write { offset, data } => len.max(offset + data.len() as u64),
            Change::SetLen(new) => *new,
        };
    }
    // Which state of each page, and of the size, survives: after change
    // `Some(n)`, or the durable one.
    let survivor = |list: &[usize], k: usize| (k > 0).then(|| list[k - 1]);
    let mut at: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let page_of = |state: &[u8], page: u64| -> Vec<u8> {
        let start = ((page * PIECE) as usize).min(state.len());
        let end = ((page * PIECE + PIECE) as usize).min(state.len());
        state[start..end].to_vec()
    };
    let mut kept = 0;
    for (&page, list) in &touching {
        match survivor(list, random(list.len())) {
            Some(n) => {
                kept += 1;
                at.entry(n).or_default().push(page);
            }
            None => {
                pages.insert(page, page_of(durable, page));
            }
        }
    }
    let all: Vec<usize> = (0..pending.len()).collect();
    let size_after = survivor(&all, random(pending.len()));
    let mut size = durable.len();
    let mut state = durable.to_vec();
    for (n, c) in pending.iter().enumerate() {
        c.apply(&mut state);
        for &page in at.get(&n).into_iter().flatten() {
            pages.insert(page, page_of(&state, page));
        }
        if size_after == Some(n) {
            size = state.len();
        }
    }
    let mut disk = durable.to_vec();
    for (page, bytes) in pages {
        let start = (page * PIECE) as usize;
        if disk.len() < start + PIECE as usize {
            disk.resize(start + PIECE as usize, 0);
        }
        disk[start..start + PIECE as usize].fill(0);
        disk[start..start + bytes.len()].copy_from_slice(&bytes);
    }
    disk.resize(size, 0);
    (disk, touching.len(), kept)
}

/// splitmix64.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

fn current_gid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::gid(&m))
}

/// The files, shared by the test and the filesystem thread of each mount.
#[derive(Clone)]
pub struct Disk(Arc<Mutex<State>>);

impl Default for Disk {
    fn default() -> Self {
        Disk::new()
    }
}

impl Disk {
    /// An empty disk: only the root directory.
    pub fn new() -> Disk {
        Disk(Arc::new(Mutex::new(State::new())))
    }

    /// An empty disk whose namespace follows the strictest reading of POSIX
    /// instead of a journal: a directory's entries become durable only with
    /// an `fsyncdir` of that very directory.
    pub fn with_strict_dirs() -> Disk {
        let disk = Disk::new();
        disk.state().strict_dirs = true;
        disk
    }

    /// Makes everything durable, as `sync(1)` does.
    pub fn sync_everything(&self) {
        let mut st = self.state();
        for i in st.inodes.values_mut() {
            i.data.sync();
            i.durable_entries.clone_from(&i.entries);
        }
        st.namespace_dirty = false;
        st.forget_unreachable();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a handler is a test bug; the state is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves this disk at `at` (an existing empty directory) until the
    /// returned [`Mount`] is dropped; powers it on. An error says why FUSE
    /// is not usable here.
    pub fn mount(&self, at: &Path) -> Result<Mount, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
        }
        let root = current_uid() == 0;
        if !root && !on_path("fusermount3") && !on_path("fusermount") {
            return Err(
                "not root and no fusermount3 on PATH (apt-get install fuse3) to mount as a user"
                    .into(),
            );
        }
        self.state().off = false;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".into()),
            MountOption::Subtype("powercut".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let fs = PowerCutFs(self.clone());
        match fuser::spawn_mount(fs, at, &config) {
            Ok(session) => Ok(Mount {
                session: Some(session),
                at: at.to_path_buf(),
            }),
            Err(e) => Err(format!(
                "mounting a FUSE file system at {} failed: {e} ({})",
                at.display(),
                if root {
                    "as root: is mount(2) allowed in this container?"
                } else {
                    "through fusermount3: is it setuid and /dev/fuse readable?"
                }
            )),
        }
    }

    /// The power goes: see the module docs. Every request fails from now
    /// until the next [`Disk::mount`].
    pub fn cut_power(&self, keep: Keep) -> CutReport {
        self.state().cut(keep)
    }

    /// From now on syncs wait (their writes stay pending) until the hold
    /// is released or dropped, or a cut fails them. Dropping it matters: a
    /// process killed while it waits for a held sync cannot die (the kernel
    /// waits for the answer), so a test that panics mid-hold must not leave
    /// it held.
    pub fn hold_syncs(&self) -> SyncHold {
        self.state().holding = true;
        SyncHold(self.clone())
    }

    /// Completes the held syncs, in order, and lets later ones through.
    fn release_syncs(&self) {
        let mut st = self.state();
        st.holding = false;
        let held: Vec<Held> = st.held.drain(..).collect();
        for h in held {
            st.sync(h.what);
            h.reply.ok();
        }
    }

    /// Files (paths from the mount point) with writes not yet synced.
    pub fn unsynced_files(&self) -> Vec<String> {
        let st = self.state();
        let mut found = Vec::new();
        let mut todo = vec![(ROOT, String::new())];
        while let Some((dir, path)) = todo.pop() {
            for (name, &ino) in &st.inodes[&dir].entries {
                let Some(i) = st.inodes.get(&ino) else {
                    continue;
                };
                let p = format!("{path}{}", name.to_string_lossy());
                if i.is_dir() {
                    todo.push((ino, format!("{p}/")));
                } else if !i.data.pending.is_empty() {
                    found.push(p);
                }
            }
        }
        found.sort();
        found
    }

    /// Whether `needle` is in the file at `path` (from the mount point) as
    /// the program reads it, but not in its durable image: written, not
    /// yet synced. What a `kill -9` alone would keep and a cut may lose.
    pub fn unsynced_contains(&self, path: &str, needle: &[u8]) -> bool {
        let st = self.state();
        let mut ino = ROOT;
        for name in path.split('/') {
            match st.child(ino, OsStr::new(name)) {
                Ok(i) => ino = i,
                Err(_) => return false,
            }
        }
        let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        st.inodes
            .get(&ino)
            .is_some_and(|i| has(&i.data.live) && !has(&i.data.durable))
    }

    pub fn stats(&self) -> DiskStats {
        let st = self.state();
        DiskStats {
            held: st.held.len(),
            ..st.stats
        }
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
}

/// Syncs held by [`Disk::hold_syncs`]; released (completed) when dropped,
/// unless a cut failed them first.
#[must_use = "dropping the hold releases the syncs at once"]
pub struct SyncHold(Disk);

impl SyncHold {
    /// Completes the held syncs, in order, and lets later ones through.
    pub fn release(self) {}
}

impl Drop for SyncHold {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}

/// A mounted [`Disk`]; unmounted when dropped.
pub struct Mount {
    session: Option<BackgroundSession>,
    at: PathBuf,
}

impl Mount {
    /// Unmounts and waits for the filesystem thread to end.
    pub fn unmount(mut self) {
        self.unmount_inner();
    }

    fn unmount_inner(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(e) = session.umount_and_join() {
            // Busy (a process still has a file open): detach it instead.
            let lazy = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.at)
                .status();
            let _ = writeln!(
                std::io::stderr(),
                "powercut: unmounting {} failed ({e}); lazy unmount: {lazy:?}",
                self.at.display()
            );
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount_inner();
    }
}

/// The `fuser` side: each request locks the shared state.
struct PowerCutFs(Disk);

/// Answers `$reply` with the error of `$r` or goes on with its value.
macro_rules! tri {
    ($reply:ident, $r:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

/// Locks the state, or answers `EIO` while the power is off.
macro_rules! powered {
    ($self:ident, $reply:ident) => {{
        let st = $self.0.state();
        if st.off {
            return $reply.error(Errno::EIO);
        }
        st
    }};
}

impl PowerCutFs {
    /// An `fsync` or `fsyncdir`: done now, or held (with its answer) while
    /// syncs are held.
    fn sync_or_hold(&self, what: Synced, reply: ReplyEmpty) {
        let mut st = powered!(self, reply);
        if st.holding {
            st.held.push(Held { what, reply });
            return;
        }
        st.sync(what);
        reply.ok();
    }
}

impl fuser::Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = powered!(self, reply);
        let ino = tri!(reply, st.child(parent.0, name));
        reply.entry(&TTL, &st.inodes[&ino].attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = powered!(self, reply);
        match st.inodes.get(&ino.0) {
            Some(i) => reply.attr(&TTL, &i.attr(ino.0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = powered!(self, reply);
        let Some(i) = st.inodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let now = SystemTime::now();
        if let Some(len) = size {
            if i.is_dir() {
                return reply.error(Errno::EISDIR);
            }
            i.data.change(Change::SetLen(len));
            i.mtime = now;
        }
        if let Some(m) = mode {
            i.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            i.uid = u;
        }
        if let Some(g) = gid {
            i.gid = g;
        }
        if let Some(t) = mtime {
            i.mtime = match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => now,
            };
        }
        i.ctime = now;
        reply.attr(&TTL, &i.attr(ino.0));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc_s_ifmt() != libc_s_ifreg() {
            return reply.error(Errno::EPERM);
        }
        let mut st = powered!(self, reply);
        let (_, attr) = tri!(
            reply,
            st.add(req, parent.0, name, FileType::RegularFile, mode, umask)
        );
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = powered!(self, reply);
        let (_, attr) = tri!(
            reply,
            st.add(req, parent.0, name, FileType::Directory, mode, umask)
        );
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = powered!(self, reply);
        let ino = tri!(reply, st.child(parent.0, name));
        if st.inodes[&ino].is_dir() {
            return reply.error(Errno::EISDIR);
        }
        st.unlink_entry(parent.0, name);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = powered!(self, reply);
        let ino = tri!(reply, st.child(parent.0, name));
        let d = tri!(reply, st.dir(ino));
        if !d.entries.is_empty() {
            return reply.error(Errno::ENOTEMPTY);
        }
        st.unlink_entry(parent.0, name);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let mut st = powered!(self, reply);
        let ino = tri!(reply, st.child(parent.0, name));
        tri!(reply, st.dir(newparent.0));
        if let Ok(target) = st.child(newparent.0, newname) {
            if target == ino {
                return reply.ok();
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            match (st.inodes[&ino].is_dir(), st.inodes[&target].is_dir()) {
                (false, true) => return reply.error(Errno::EISDIR),
                (true, false) => return reply.error(Errno::ENOTDIR),
                (true, true) if !st.inodes[&target].entries.is_empty() => {
                    return reply.error(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        st.unlink_entry(parent.0, name);
        st.link(newparent.0, newname, ino);
        if let Some(i) = st.inodes.get_mut(&ino) {
            i.parent = newparent.0;
            i.ctime = SystemTime::now();
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let st = powered!(self, reply);
        if !st.inodes.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = powered!(self, reply);
        let (_, attr) = tri!(
            reply,
            st.add(req, parent.0, name, FileType::RegularFile, mode, umask)
        );
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = powered!(self, reply);
        let i = tri!(reply, st.file_mut(ino.0));
        let live = &i.data.live;
        let start = (offset as usize).min(live.len());
        let end = (start + size as usize).min(live.len());
        reply.data(&live[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = powered!(self, reply);
        st.stats.bytes_written += data.len() as u64;
        let i = tri!(reply, st.file_mut(ino.0));
        i.data.change(Change::Write {
            offset,
            data: data.to_vec(),
        });
        i.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close` is no sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_or_hold(Synced::File(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let st = powered!(self, reply);
        tri!(reply, st.dir(ino.0));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = powered!(self, reply);
        let d = tri!(reply, st.dir(ino.0));
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (d.parent, FileType::Directory, "..".into()),
        ];
        for (name, &c) in &d.entries {
            if let Some(i) = st.inodes.get(&c) {
                all.push((c, i.kind, name.clone()));
            }
        }
        for (n, (c, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(c), n as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_or_hold(Synced::Dir(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB, nearly all free: the relay's disk budget never trips on it.
        let blocks = (64u64 << 30) / PIECE;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            PIECE as u32,
            255,
            PIECE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain allocation only: it can grow the file, which is a size change.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = powered!(self, reply);
        let i = tri!(reply, st.file_mut(ino.0));
        if offset + length > i.data.live.len() as u64 {
            i.data.change(Change::SetLen(offset + length));
        }
        reply.ok();
    }
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

const fn libc_s_ifreg() -> u32 {
    0o100000
}
