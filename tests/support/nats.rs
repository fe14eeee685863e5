//! A real NATS JetStream cluster for the fleet tests: `nats-server` nodes on
//! loopback ports, each its own process with its own store dir, which a test
//! can `kill -9` and start again. Not a module of `support`: only the fleet
//! test includes it (`#[path]`).
//!
//! The server is `$HOOKRELAY_NATS_SERVER`, else `nats-server` on `PATH`,
//! and must be 2.10 or newer (2.9 loses KV and dedup state across node
//! restarts; see the README's fleet section). Without one, [`server`] says
//! why and the tests skip, except under `CI`, where they fail.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to join its cluster and report healthy.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary to run, or why there is none usable (printed as the
/// reason for a skip; a failure under `CI`).
pub fn server() -> Option<PathBuf> {
    let bin = std::env::var_os("HOOKRELAY_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let why = match Command::new(&bin).arg("--version").output() {
        Err(e) => format!("cannot run {}: {e}", bin.display()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match version(&text) {
                Some((2, minor)) if minor >= 10 => return Some(bin),
                Some(_) | None => format!(
                    "{} is {text:?}; the fleet needs 2.10 or newer",
                    bin.display()
                ),
            }
        }
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the fleet tests: {why} (.ci/run installs nats-server)"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// `nats-server: v2.15.1` → (2, 15).
fn version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A port free now (the OS may hand it out again; nats-server binds it
/// moments later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Node {
    name: String,
    client: u16,
    monitor: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A JetStream cluster of `n` nodes (n = 1: a single server).
pub struct Cluster {
    bin: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes under `dir` and waits until every one is healthy.
    pub fn start(bin: &Path, dir: &Path, n: usize) -> Cluster {
        std::fs::create_dir_all(dir).expect("create the cluster's dir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let (client, route, monitor) = ports[i];
                let name = format!("n{i}");
                let store = dir.join(&name);
                let mut conf = format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     max_payload: 8MB\n\
                     jetstream {{ store_dir: {:?}, sync_interval: always }}\n",
                    store.display().to_string()
                );
                if n > 1 {
                    let routes: Vec<String> = ports
                        .iter()
                        .map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}"))
                        .collect();
                    conf.push_str(&format!(
                        "cluster {{ name: hookrelay-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                        routes.join(", ")
                    ));
                }
                let config = dir.join(format!("{name}.conf"));
                std::fs::write(&config, conf).expect("write a nats-server config");
                Node {
                    name,
                    client,
                    monitor,
                    config,
                    child: None,
                }
            })
            .collect();
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            nodes,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c
    }

    /// The client URLs of every node, as `storage.nats.url` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Waits until node `i` reports healthy (JetStream up, its streams current).
    pub fn wait_healthy(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if healthz(node.monitor) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats node {} not healthy within {READY_DEADLINE:?}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its store dir and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Whether `GET /healthz` on the monitoring port answers 200.
fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
