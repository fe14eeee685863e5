//! The relay running in this process on ephemeral ports with a temp data dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::RelayConfig;
use super::requests::{get, json_request, Answer};
use super::store::StoreView;
use super::wait::poll_for;

type RunResult = Result<(), hookrelay::Error>;

/// `hookrelay::run` in this process.
pub struct TestRelay {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    /// Holds relay.toml and the data dir `data`.
    pub dir: PathBuf,
    /// The admin token the config sets, if any.
    token: Option<String>,
    _tmp: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<RunResult>>,
}

/// Loads `file` and runs the relay it describes on two ephemeral listeners.
async fn launch(
    file: &Path,
) -> (
    SocketAddr,
    SocketAddr,
    CancellationToken,
    JoinHandle<RunResult>,
) {
    let config = hookrelay::config::Config::load(file).expect("test config is valid");
    let ingest = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (ingest.local_addr().unwrap(), admin.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let listeners = hookrelay::Listeners { ingest, admin };
    let task = tokio::spawn(hookrelay::run(config, listeners, shutdown.clone()));
    (addrs.0, addrs.1, shutdown, task)
}

impl TestRelay {
    /// Starts the relay `config` describes on a fresh temp dir.
    pub async fn start(config: &RelayConfig) -> TestRelay {
        let tmp = tempfile::tempdir().unwrap();
        let mut relay = TestRelay::start_in(tmp.path(), config).await;
        relay._tmp = Some(tmp);
        relay
    }

    /// Starts the relay with its config and data in `dir`.
    pub async fn start_in(dir: &Path, config: &RelayConfig) -> TestRelay {
        let file = config.write(dir);
        let (ingest, admin, shutdown, task) = launch(&file).await;
        TestRelay {
            ingest,
            admin,
            dir: dir.to_path_buf(),
            token: config.admin_token(),
            _tmp: None,
            shutdown,
            task: Some(task),
        }
    }

    /// Runs `config` in `dir` expecting start-up to fail; the error.
    pub async fn start_error(dir: &Path, config: &RelayConfig) -> hookrelay::Error {
        let (_, _, _shutdown, task) = launch(&config.write(dir)).await;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("start-up fails fast")
            .expect("the relay task did not panic")
            .expect_err("start-up fails")
    }

    /// `http://ingest/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.ingest, path)
    }

    /// `http://admin/path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// GET `path` on the admin listener with the config's token.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let (status, json) = self.api(http::Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {json}");
        json
    }

    /// `method path` on the admin listener with the config's token.
    pub async fn api(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (http::StatusCode, serde_json::Value) {
        let url = self.admin_url(path);
        json_request(method, &url, body.as_ref(), self.token.as_deref()).await
    }

    /// GET `path` on the admin listener with the config's token.
    pub async fn api_get(&self, path: &str) -> (http::StatusCode, serde_json::Value) {
        self.api(http::Method::GET, path, None).await
    }

    /// POST `path` (with a JSON `body`) on the admin listener with the config's token.
    pub async fn api_post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (http::StatusCode, serde_json::Value) {
        self.api(http::Method::POST, path, body).await
    }

    /// Polls GET `path` on the admin listener (with the token) until `cond`
    /// holds for its status and JSON; the JSON.
    pub async fn wait_admin(
        &self,
        path: &str,
        cond: impl Fn(http::StatusCode, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let last = std::cell::RefCell::new(serde_json::Value::Null);
        let (cond, last_ref) = (&cond, &last);
        let found = poll_for(Duration::from_secs(20), || async move {
            let (status, v) = self.api(http::Method::GET, path, None).await;
            let done = cond(status, &v);
            *last_ref.borrow_mut() = v.clone();
            done.then_some(v)
        })
        .await;
        found.unwrap_or_else(|| panic!("timed out on GET {path}, last: {}", last.borrow()))
    }

    /// GET `path` on the admin listener without a token.
    pub async fn admin_probe(&self, path: &str) -> Answer {
        get(&self.admin_url(path)).await
    }

    /// Graceful stop, as on SIGTERM; returns run()'s result.
    pub async fn stop(&mut self) -> RunResult {
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
        let (ingest, admin, shutdown, task) = launch(&self.dir.join("relay.toml")).await;
        TestRelay {
            ingest,
            admin,
            dir: self.dir.clone(),
            token: self.token.take(),
            _tmp: self._tmp.take(),
            shutdown,
            task: Some(task),
        }
    }

    /// The store of a stopped relay.
    pub fn store(&self) -> StoreView {
        assert!(
            self.task.is_none(),
            "stop the relay before opening its store"
        );
        StoreView::open(&self.dir.join("data"))
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
