//! What a server process costs over a measured window, read from `/proc`:
//! CPU, context switches, bytes written to and read from disk, memory.
//!
//! CPU (`utime + stime` of `/proc/PID/stat`) and disk bytes (`write_bytes`,
//! `read_bytes` of `/proc/PID/io`) are process-wide totals that keep what
//! exited threads used. Context switches are not: `/proc/PID/status` counts the
//! main thread only, and a thread's counters vanish with it. They are therefore
//! summed over `/proc/PID/task/*/status`, sampled every [`SAMPLE_EVERY`] during
//! the window and keeping the last values seen of a thread that exited
//! (sled's I/O threads exit after 1 s idle, tokio's blocking threads after
//! 10 s). What a thread did between its last sample and its exit is lost; the
//! thread table shows how much of the process CPU the threads account for.
//! A thread's CPU is the nanosecond `sum_exec_runtime` of its `schedstat`
//! (clock ticks, 10 ms, are too coarse to split a few seconds among threads).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the threads' counters are read during a window.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// `AT_CLKTCK` in the ELF auxiliary vector.
const AT_CLKTCK: usize = 17;

/// Clock ticks per second of `utime`/`stime`: the kernel's `AT_CLKTCK` from
/// `/proc/self/auxv` (where glibc's `sysconf(_SC_CLK_TCK)` gets it), else 100.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        const W: usize = std::mem::size_of::<usize>();
        let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("one word"));
        std::fs::read("/proc/self/auxv")
            .unwrap_or_default()
            .chunks_exact(2 * W)
            .find(|pair| word(&pair[..W]) == AT_CLKTCK)
            .map(|pair| word(&pair[W..]) as u64)
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// One thread's counters since it started.
#[derive(Debug, Clone, Default)]
struct ThreadCounters {
    name: String,
    /// Time on a CPU in nanoseconds.
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

impl ThreadCounters {
    fn since(&self, start: Option<&ThreadCounters>) -> ThreadCounters {
        let start = start.cloned().unwrap_or_default();
        ThreadCounters {
            name: self.name.clone(),
            cpu_ns: self.cpu_ns.saturating_sub(start.cpu_ns),
            voluntary: self.voluntary.saturating_sub(start.voluntary),
            involuntary: self.involuntary.saturating_sub(start.involuntary),
        }
    }
}

/// The fields of a `stat` line after the command name, which is in
/// parentheses and may itself hold spaces or parentheses.
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    Some((name, stat.get(close + 1..)?.split_whitespace().collect()))
}

/// `utime + stime` from a `stat` line (fields 14 and 15; the list starts at field 3).
fn stat_ticks(fields: &[&str]) -> Option<u64> {
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   value ...` line's first number.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A thread's time on a CPU: the nanoseconds of its `schedstat`, else its
/// `utime + stime` (whole clock ticks, too coarse for a thread's share).
fn thread_cpu_ns(dir: &str) -> Option<u64> {
    let schedstat = std::fs::read_to_string(format!("{dir}/schedstat")).ok();
    if let Some(ns) = schedstat.and_then(|s| s.split_whitespace().next()?.parse().ok()) {
        return Some(ns);
    }
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let ticks = stat_ticks(&stat_fields(&stat)?.1)?;
    Some(ticks * 1_000_000_000 / clock_ticks())
}

fn read_thread(pid: u32, tid: u32) -> Option<ThreadCounters> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
    Some(ThreadCounters {
        name: name.to_string(),
        cpu_ns: thread_cpu_ns(&dir)?,
        voluntary: status_field(&status, "voluntary_ctxt_switches")?,
        involuntary: status_field(&status, "nonvoluntary_ctxt_switches")?,
    })
}

/// Every live thread of `pid` (one that exits while being read is left out).
fn read_threads(pid: u32) -> HashMap<u32, ThreadCounters> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| Some((tid, read_thread(pid, tid)?)))
        .collect()
}

/// Process-wide totals (exited threads included).
#[derive(Debug, Clone, Copy)]
struct Totals {
    ticks: u64,
    write_bytes: u64,
    read_bytes: u64,
}

fn read_totals(pid: u32) -> Totals {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/io: {e}"));
    let ticks = stat_fields(&stat)
        .and_then(|(_, fields)| stat_ticks(&fields))
        .unwrap_or_else(|| panic!("no utime/stime in /proc/{pid}/stat: {stat}"));
    Totals {
        ticks,
        write_bytes: status_field(&io, "write_bytes").expect("write_bytes in /proc/PID/io"),
        read_bytes: status_field(&io, "read_bytes").expect("read_bytes in /proc/PID/io"),
    }
}

/// VmRSS and VmHWM (peak since the process started) of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |k: &str| status_field(&status, k).map_or(0.0, |kib| kib as f64 / 1024.0);
    (mib("VmRSS"), mib("VmHWM"))
}

/// Counters of one process from [`Sampler::start`] to [`Sampler::finish`].
pub struct Sampler {
    pid: u32,
    totals: Totals,
    threads: HashMap<u32, ThreadCounters>,
    stop: mpsc::Sender<()>,
    /// The last counters seen of every thread, and which were alive at the end.
    poller: JoinHandle<(HashMap<u32, ThreadCounters>, HashSet<u32>)>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let threads = read_threads(pid);
        let totals = read_totals(pid);
        let (stop, stopped) = mpsc::channel::<()>();
        let mut seen = threads.clone();
        let poller = std::thread::Builder::new()
            .name("proc-sampler".into())
            .spawn(move || loop {
                let stop = stopped.recv_timeout(SAMPLE_EVERY);
                let now = read_threads(pid);
                let alive = now.keys().copied().collect();
                seen.extend(now);
                if stop != Err(mpsc::RecvTimeoutError::Timeout) {
                    return (seen, alive);
                }
            })
            .expect("start the /proc sampler thread");
        Sampler {
            pid,
            totals,
            threads,
            stop,
            poller,
        }
    }

    /// Ends the window: reads the totals and the threads once more.
    pub fn finish(self) -> Cost {
        let end = read_totals(self.pid);
        let _ = self.stop.send(());
        let (seen, alive) = self.poller.join().expect("the /proc sampler thread");
        let (rss_mib, hwm_mib) = rss_mib(self.pid);
        let per_second = clock_ticks();
        let cpu = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / per_second);

        let mut groups: BTreeMap<String, ThreadGroup> = BTreeMap::new();
        let (mut voluntary, mut involuntary, mut thread_ns) = (0, 0, 0);
        for (tid, last) in &seen {
            let d = last.since(self.threads.get(tid));
            voluntary += d.voluntary;
            involuntary += d.involuntary;
            thread_ns += d.cpu_ns;
            let name = group_name(&d.name);
            let g = groups.entry(name.clone()).or_insert_with(|| ThreadGroup {
                name,
                ..ThreadGroup::default()
            });
            g.threads += 1;
            g.cpu += Duration::from_nanos(d.cpu_ns);
            g.switches += d.voluntary + d.involuntary;
        }
        let mut threads: Vec<ThreadGroup> = groups.into_values().collect();
        threads.sort_by(|a, b| b.cpu.cmp(&a.cpu).then(b.switches.cmp(&a.switches)));
        Cost {
            cpu: cpu(end.ticks.saturating_sub(self.totals.ticks)),
            voluntary,
            involuntary,
            write_bytes: end.write_bytes.saturating_sub(self.totals.write_bytes),
            read_bytes: end.read_bytes.saturating_sub(self.totals.read_bytes),
            rss_mib,
            hwm_mib,
            threads,
            threads_seen: seen.len(),
            threads_exited: seen.keys().filter(|t| !alive.contains(t)).count(),
            thread_cpu: Duration::from_nanos(thread_ns),
        }
    }
}

/// Threads grouped by name without their trailing number (`sled-io-12` → `sled-io`).
fn group_name(name: &str) -> String {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let stem = stem.trim_end_matches(['-', '_', '#', ' ']);
    if stem.is_empty() { name } else { stem }.to_string()
}

/// Threads of one name within a window.
#[derive(Debug, Clone, Default)]
pub struct ThreadGroup {
    pub name: String,
    pub threads: usize,
    pub cpu: Duration,
    pub switches: u64,
}

/// What one process used within a window.
#[derive(Debug, Clone)]
pub struct Cost {
    /// user + system, exited threads included.
    pub cpu: Duration,
    /// Summed over the threads seen (see the module docs).
    pub voluntary: u64,
    pub involuntary: u64,
    /// Bytes the process caused to be written to / read from the storage layer.
    pub write_bytes: u64,
    pub read_bytes: u64,
    /// At the end of the window, and the peak since the process started.
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub threads: Vec<ThreadGroup>,
    pub threads_seen: usize,
    pub threads_exited: usize,
    /// CPU summed over the threads seen: what the per-thread figures cover of `cpu`.
    pub thread_cpu: Duration,
}

impl Cost {
    pub fn switches(&self) -> u64 {
        self.voluntary + self.involuntary
    }
}

/// Sum of the file sizes under `dir`, and of the space allocated to them, in bytes.
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.metadata().ok()?)))
        .map(|(path, m)| {
            if m.is_dir() {
                dir_bytes(&path)
            } else {
                (m.len(), m.blocks() * 512)
            }
        })
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}
