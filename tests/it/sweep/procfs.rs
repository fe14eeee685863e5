//! The relay process seen from /proc.

use std::collections::HashSet;
use std::net::SocketAddr;

pub fn try_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    try_status_kib(pid, key).unwrap_or_else(|| panic!("no {key} for pid {pid}: relay gone?"))
}

pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Open file descriptors of `pid`, and the inodes of those that are sockets.
pub fn fds(pid: u32) -> (usize, HashSet<u64>) {
    let mut count = 0;
    let mut sockets = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read fd dir") {
        let Ok(entry) = entry else { continue };
        count += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                sockets.insert(inode.parse().unwrap());
            }
        }
    }
    (count, sockets)
}

/// TCP sockets `pid` holds: (local port, listening).
pub fn tcp_sockets(pid: u32) -> Vec<(u16, bool)> {
    let (_, inodes) = fds(pid);
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let inode: u64 = f[9].parse().unwrap_or(0);
            if !inodes.contains(&inode) {
                continue;
            }
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .unwrap_or(0);
            out.push((port, f[3] == "0A"));
        }
    }
    out
}

/// TCP connections the relay holds open (inbound, admin or outbound).
pub fn open_connections(pid: u32) -> usize {
    tcp_sockets(pid).iter().filter(|(_, l)| !l).count()
}

/// Connections the relay holds open on its ingest port.
pub fn inbound_connections(pid: u32, ingest: SocketAddr) -> usize {
    tcp_sockets(pid)
        .iter()
        .filter(|(port, listening)| *port == ingest.port() && !listening)
        .count()
}
