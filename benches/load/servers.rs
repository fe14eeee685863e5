//! The servers under load, each in its own process so that its CPU, context
//! switches, disk I/O and memory are its own: the relay (`hookrelay serve
//! --ready-file`) and the bare hyper baseline (this bench binary again, with
//! [`BARE_SERVER_ENV`] set).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// Set to a ready-file path, the bench binary runs only the bare hyper server.
pub const BARE_SERVER_ENV: &str = "BENCH_BARE_SERVER";

/// A server running as a child process, found through its ready file.
pub struct Server {
    pub proc: std::process::Child,
    pub ingest: SocketAddr,
    /// The relay's admin listener (the bare server has none).
    pub admin: Option<SocketAddr>,
    /// From spawn until the server wrote its ready file.
    pub ready_after: Duration,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
            .expect("the relay's ready file names its admin address")
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits for the exit; returns how long it took.
    pub fn stop(&mut self, signal: &str) -> Duration {
        let t = Instant::now();
        let pid = self.proc.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = self.proc.kill();
        }
        let _ = self.proc.wait();
        t.elapsed()
    }
}

impl Drop for Server {
    /// A bench that panics must not leave its servers running.
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

/// The relay binary: `BENCH_RELAY_BIN` (another build, one with `serve
/// --ready-file`, for before/after comparisons), else the one cargo built for
/// this bench (`target/release/hookrelay` under `cargo bench`).
pub fn relay_bin() -> PathBuf {
    std::env::var_os("BENCH_RELAY_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_hookrelay").into(), PathBuf::from)
}

/// Starts the relay on `config` (whose listeners should be on port 0) and
/// waits until it is ready. Its log level is `BENCH_RELAY_LOG`, else `info`
/// (the default of `serve`, one line per webhook); the log goes to /dev/null.
pub fn spawn_relay(config: &Path) -> Server {
    let ready_file = config.with_file_name("ready.json");
    let mut cmd = Command::new(relay_bin());
    cmd.args(["serve", "--config"])
        .arg(config)
        .arg("--ready-file")
        .arg(&ready_file)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RELAY_LOG").unwrap_or_else(|_| "info".into()),
        );
    spawn(cmd, &ready_file, "hookrelay")
}

/// Starts the bare hyper server: this bench binary with [`BARE_SERVER_ENV`].
pub fn spawn_bare(dir: &Path) -> Server {
    let ready_file = dir.join("bare-ready.json");
    let mut cmd = Command::new(std::env::current_exe().expect("the bench binary's own path"));
    cmd.env(BARE_SERVER_ENV, &ready_file);
    spawn(cmd, &ready_file, "bare hyper server")
}

fn spawn(mut cmd: Command, ready_file: &Path, what: &str) -> Server {
    let started = Instant::now();
    // A relay killed with -9 leaves its ready file behind.
    let _ = std::fs::remove_file(ready_file);
    let mut proc = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what}: {e}"));
    let deadline = started + Duration::from_secs(120);
    let ready = loop {
        if let Some(ready) = std::fs::read_to_string(ready_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["pid"] == proc.id())
        {
            break ready;
        }
        if let Ok(Some(status)) = proc.try_wait() {
            panic!("the {what} exited at start with {status}");
        }
        assert!(Instant::now() < deadline, "the {what} did not become ready");
        std::thread::sleep(Duration::from_millis(1));
    };
    let addr = |k: &str| ready[k].as_str().and_then(|a| a.parse().ok());
    Server {
        ingest: addr("ingest").unwrap_or_else(|| panic!("no ingest address in {ready}")),
        admin: addr("admin"),
        proc,
        ready_after: started.elapsed(),
    }
}

/// POSTs to the relay's admin API; the status.
pub async fn admin_post(addr: SocketAddr, path: &str) -> StatusCode {
    admin_send(addr, http::Method::POST, path).await.0
}

/// One request to the relay's admin listener on a fresh connection: its
/// status and how many body bytes came back.
async fn admin_send(addr: SocketAddr, method: http::Method, path: &str) -> (StatusCode, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("admin handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("admin request");
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_bytes();
    (status, body.len())
}

/// GETs `path` from the relay's admin listener (a console page, say): the
/// status, the body's size, and the time to the whole answer.
pub async fn admin_get_timed(addr: SocketAddr, path: &str) -> (StatusCode, usize, Duration) {
    let t = Instant::now();
    let (status, len) = admin_send(addr, http::Method::GET, path).await;
    (status, len, t.elapsed())
}

/// The bare server's process: a multi-thread tokio runtime as the relay's,
/// connections served as the relay serves them (hyper-util's auto builder,
/// HTTP/1 keep-alive with a header timeout, `TCP_NODELAY`); each request's
/// body is read whole and answered `200` with a small JSON. Runs until killed.
pub fn serve_bare(ready_file: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bare server runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the bare server");
        let addr = listener.local_addr().expect("bare server address");
        let ready = serde_json::json!({"pid": std::process::id(), "ingest": addr.to_string()});
        let tmp = ready_file.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string()).expect("write the bare server's ready file");
        std::fs::rename(&tmp, ready_file).expect("rename the bare server's ready file");

        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let status = match body {
                        Ok(_) => StatusCode::OK,
                        Err(_) => StatusCode::BAD_REQUEST,
                    };
                    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}

/// `perf record` for the length of a window (`--perf FILE`). It samples the
/// whole machine (`-a`): following one process's threads (`-p PID`) costs
/// that process on every context switch, which doubled the relay's CPU per
/// webhook here; system-wide sampling did not (see BENCHMARKS.md).
pub struct Perf {
    proc: std::process::Child,
}

impl Perf {
    /// Starts sampling every CPU at 499 Hz with call chains into `file`, and
    /// says how to read `pid`'s part.
    pub fn start(pid: u32, file: &Path) -> Perf {
        println!(
            "perf       : recording into {}; the relay's part: perf report -i {} --pid {pid}",
            file.display(),
            file.display()
        );
        let proc = Command::new("perf")
            .args(["record", "-a", "-F", "499", "-g", "-o"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start perf record (is perf installed?): {e}"));
        // perf sets up its per-CPU buffers before it samples anything.
        std::thread::sleep(Duration::from_millis(300));
        Perf { proc }
    }

    /// Stops sampling (SIGINT, which makes perf write its file) and waits for it.
    pub fn stop(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let pid = self.proc.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        match self.proc.wait() {
            // perf writes its file, then ends by the SIGINT it caught.
            Ok(s) if s.success() || s.signal() == Some(2) => {}
            other => eprintln!("perf record ended with {other:?}"),
        }
    }
}
