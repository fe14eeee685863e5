//! `hookrelay serve` as a child process, found through its `--ready-file`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wait::{poll_for, wait_until_blocking};

/// How long a relay may take to start (recovery included) on a loaded machine.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// A `hookrelay serve` command being put together.
pub struct Launch {
    cmd: Command,
    ready_file: PathBuf,
}

impl Launch {
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.cmd.arg(a);
        self
    }

    /// Starts the child without waiting for it to be ready.
    pub fn spawn(mut self) -> RelayProcess {
        // A relay killed with -9 leaves its ready file behind.
        let _ = std::fs::remove_file(&self.ready_file);
        let mut child = self.cmd.spawn().expect("start hookrelay");
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let keep = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        RelayProcess {
            pid: child.id(),
            child,
            ingest: unknown,
            admin: unknown,
            ready_file: self.ready_file,
            stderr,
            reader: Some(reader),
        }
    }

    /// Starts the child and waits until it is ready.
    pub async fn start(self) -> RelayProcess {
        let mut relay = self.spawn();
        relay.wait_ready(START_DEADLINE).await;
        relay
    }
}

/// `hookrelay serve` as a child; killed when dropped.
pub struct RelayProcess {
    pub child: Child,
    pub pid: u32,
    /// From the ready file; `0.0.0.0:0` until [`RelayProcess::is_ready`].
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    ready_file: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl RelayProcess {
    /// `hookrelay serve --config CONFIG --ready-file DIR/ready.json`, logging
    /// at `info` to a kept stderr.
    pub fn command(config: &Path) -> Launch {
        let ready_file = config.with_file_name("ready.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .arg("--ready-file")
            .arg(&ready_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Launch { cmd, ready_file }
    }

    /// Starts the relay in `config` and waits until it is ready.
    pub async fn start(config: &Path) -> RelayProcess {
        RelayProcess::command(config).start().await
    }

    /// Whether this child wrote its ready file; takes the addresses from it.
    pub fn is_ready(&mut self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.ready_file) else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("the ready file is JSON");
        if v["pid"].as_u64() != Some(u64::from(self.pid)) {
            return false;
        }
        let addr = |k: &str| -> SocketAddr {
            v[k].as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {k} address in the ready file: {text}"))
        };
        self.ingest = addr("ingest");
        self.admin = addr("admin");
        true
    }

    /// Waits for the ready file; panics with the last log lines if the
    /// child exits or `timeout` passes first.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let ready = poll_for(timeout, || {
            let state = if self.is_ready() {
                Some(Ok(()))
            } else {
                self.child.try_wait().unwrap().map(Err)
            };
            std::future::ready(state)
        })
        .await;
        match ready {
            Some(Ok(())) => {}
            Some(Err(status)) => {
                self.join_reader();
                panic!("relay exited at start with {status}:\n{}", self.tail(40));
            }
            None => panic!("relay not ready within {timeout:?}:\n{}", self.tail(40)),
        }
    }

    /// `http://ingest/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.ingest, path)
    }

    /// `http://admin/path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// `kill -9`, and reaps the child.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap the relay");
        self.join_reader();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill")
            .args([which, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the child to exit (blocking); its exit code (-1 if killed
    /// by a signal). Its stderr is complete afterwards.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let mut code = None;
        wait_until_blocking("the relay to exit", timeout, || {
            code = self.child.try_wait().expect("try_wait");
            code.is_some()
        });
        self.join_reader();
        code.unwrap().code().unwrap_or(-1)
    }

    /// SIGTERM and the exit code.
    pub fn terminate(&mut self) -> i32 {
        self.sigterm();
        self.wait_exit(Duration::from_secs(60))
    }

    /// The end of the pipe comes with the child's exit.
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            r.join().expect("stderr reader");
        }
    }

    /// Every line the relay wrote to stderr so far.
    pub fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether a stderr line so far contains `what`.
    pub fn logged(&self, what: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// How many stderr lines so far contain `what`.
    pub fn logged_count(&self, what: &str) -> usize {
        let lines = self.stderr.lock().unwrap();
        lines.iter().filter(|l| l.contains(what)).count()
    }

    /// The last `n` stderr lines.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails, showing the panic messages, if the relay's stderr has any. A
    /// panic in a handler ends only its connection, so a client sees a close
    /// and only stderr tells.
    pub fn assert_no_panics(&self, when: &str) {
        let lines = self.lines();
        let at: Vec<usize> = (0..lines.len())
            .filter(|&i| is_panic_line(&lines[i]))
            .collect();
        if at.is_empty() {
            return;
        }
        // The panic line and the message after it.
        let shown: Vec<String> = at
            .iter()
            .take(10)
            .map(|&i| lines[i..(i + 2).min(lines.len())].join("\n    "))
            .collect();
        panic!(
            "the relay panicked {} times {when} (a panic ends only its connection, which the \
             client sees as a close); first ones from its stderr:\n  {}",
            at.len(),
            shown.join("\n  ")
        );
    }
}

/// A line of Rust's panic message (`thread '…' panicked at …`).
fn is_panic_line(line: &str) -> bool {
    line.contains("panicked at") || (line.contains("thread '") && line.contains("panicked"))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `hookrelay ARGS` to its end: exit code (-1 if killed), stdout, stderr.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(args)
        .output()
        .expect("run hookrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `hookrelay` client command left running (e.g. `tail`), its output
/// collected line by line; killed when dropped.
pub struct Running {
    pub child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(args)
            .env_remove("HOOKRELAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hookrelay");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines: Arc<Mutex<Vec<String>>> = Arc::default();
            let keep = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    keep.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Its exit code once it exited within `timeout`; panics otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = &mut self.child;
        wait_until_blocking("the command to exit", timeout, || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        let status = self.child.wait().expect("exit status");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
