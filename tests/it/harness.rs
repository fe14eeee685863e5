//! Test harness: the real relay on ephemeral ports with a temp data dir, real
//! HTTP receivers that record what arrives, and wait-until helpers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn seq(&self) -> u64 {
        self.header("x-hookrelay-seq")
            .and_then(|v| v.parse().ok())
            .expect("x-hookrelay-seq")
    }
}

/// What a receiver answers: status, extra headers, and a delay before answering.
pub type Script =
    Arc<dyn Fn(&Received) -> (StatusCode, Vec<(&'static str, String)>, Duration) + Send + Sync>;

/// A real HTTP server recording every request and answering per its script.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<(Received, StatusCode)>>>,
    arrivals: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Receiver {
    /// A receiver that always answers 200.
    pub async fn ok() -> Receiver {
        Receiver::scripted(Arc::new(|_| (StatusCode::OK, vec![], Duration::ZERO))).await
    }

    pub async fn scripted(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener, script)
    }

    /// Serves on an already bound listener (to come up on a known port).
    pub fn on(listener: TcpListener, script: Script) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (l, s, a) = (log.clone(), stop.clone(), arrivals.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = s.cancelled() => return,
                };
                let (l, script, s, a) = (l.clone(), script.clone(), s.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (l, script, a) = (l.clone(), script.clone(), a.clone());
                        async move {
                            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let path = req.uri().path().to_string();
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let rec = Received {
                                path,
                                headers,
                                body,
                            };
                            let (status, extra, delay) = script(&rec);
                            tokio::time::sleep(delay).await;
                            l.lock().unwrap().push((rec, status));
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *resp.status_mut() = status;
                            for (k, v) in extra {
                                resp.headers_mut().insert(k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = s.cancelled() => {} }
                });
            }
        });
        Receiver {
            addr,
            log,
            arrivals,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far with the status it was answered.
    pub fn all(&self) -> Vec<(Received, StatusCode)> {
        self.log.lock().unwrap().clone()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|(_, s)| s.is_success())
            .map(|(r, _)| r)
            .collect()
    }

    /// Requests that reached the receiver, answered yet or not.
    pub fn arrivals(&self) -> usize {
        self.arrivals.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_until(&format!("{n} deliveries at {}", self.addr), timeout, || {
            self.delivered().len() >= n
        })
        .await;
        self.delivered()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// HTTP client for posting webhooks (HTTP/1.1 keep-alive).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// What the relay answered to one POST.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
}

pub async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        headers,
        json,
    })
}

/// The relay running in-process on ephemeral ports with a temp data dir.
pub struct TestRelay {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), hookrelay::Error>>>,
    config_body: String,
}

impl TestRelay {
    /// Starts the relay with `body` (sources and destinations TOML) on a fresh temp dir.
    pub async fn spawn(body: &str) -> TestRelay {
        TestRelay::spawn_with_storage(body, "").await
    }

    /// Like [`TestRelay::spawn`], with extra `[storage]` keys.
    pub async fn spawn_with_storage(body: &str, storage: &str) -> TestRelay {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let text = format!("[storage]\ndata_dir = \"data\"\n{storage}\n\n{body}\n");
        let mut relay = TestRelay::start_in(&dir, &text).await;
        relay._tmp = Some(tmp);
        relay
    }

    async fn start_in(dir: &Path, text: &str) -> TestRelay {
        let file = dir.join("relay.toml");
        std::fs::write(&file, text).unwrap();
        let config = hookrelay::config::Config::load(&file).expect("test config is valid");
        let ingest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ingest_addr, admin_addr) = (ingest.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let listeners = hookrelay::Listeners { ingest, admin };
        let task = tokio::spawn(hookrelay::run(config, listeners, shutdown.clone()));
        TestRelay {
            ingest: ingest_addr,
            admin: admin_addr,
            dir: dir.to_path_buf(),
            _tmp: None,
            shutdown,
            task: Some(task),
            config_body: text.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.ingest, path)
    }

    /// Graceful stop, as on SIGTERM; returns run()'s result.
    pub async fn stop(&mut self) -> Result<(), hookrelay::Error> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("relay stops within 30s")
                .expect("relay task did not panic"),
            None => Ok(()),
        }
    }

    /// Graceful stop, then a new relay on the same data dir and config.
    pub async fn restart(mut self) -> TestRelay {
        self.stop().await.expect("clean stop");
        let tmp = self._tmp.take();
        let mut next = TestRelay::start_in(&self.dir, &self.config_body).await;
        next._tmp = tmp;
        next
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// GET `url`; status and JSON body.
pub async fn get(url: &str) -> Answer {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// Sends `method url` with an optional JSON body and bearer token; status and JSON answer.
pub async fn json_request(
    method: http::Method,
    url: &str,
    body: Option<&serde_json::Value>,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = client()
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Starts `hookrelay serve --config CONFIG` with `cmd` adjustments (env vars);
/// the receiver yields the ingest address from each "listening" log line.
pub fn spawn_binary(
    config: &std::path::Path,
    adjust: impl FnOnce(&mut std::process::Command),
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let (child, rx, _) = spawn_binary_logged(config, adjust);
    (child, rx)
}

/// Every line the relay wrote to stderr so far.
pub type StderrLines = Arc<Mutex<Vec<String>>>;

/// Like [`spawn_binary`], and also keeps every stderr line of the relay (for
/// example to look for panics, which end only a connection task).
pub fn spawn_binary_logged(
    config: &std::path::Path,
    adjust: impl FnOnce(&mut std::process::Command),
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    StderrLines,
) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    adjust(&mut cmd);
    let mut child = cmd.spawn().expect("start hookrelay");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = StderrLines::default();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.split("ingest=").nth(1) {
                let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            kept.lock().unwrap().push(line);
        }
    });
    (child, rx, lines)
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &std::process::Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
}

/// Waits for `child` to exit; its exit code (-1 if killed by a signal).
pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "relay did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
