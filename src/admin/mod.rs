//! Admin HTTP on `admin.listen`: health and readiness probes, Prometheus
//! metrics, the operator API under `/api/v1/` (bearer token when one is
//! configured), and the web console under `/ui/` (`/` leads there). Reads
//! relay state and flips destination state in the store; never writes the
//! log.

mod api;
mod console;
mod health;
mod metrics;
mod ops;
mod stream;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::delivery::Control;
use crate::ingest::SourceStats;
use crate::listen::{self, error, json};
use crate::model::Seq;
use crate::store::Store;
use crate::tls::TlsAcceptor;

/// One destination as the admin side sees it: its config and its worker's control.
pub type DestEntry = Arc<(DestinationConfig, Arc<Control>)>;
/// The sources with their counters.
type SourceList = Arc<Vec<(SourceConfig, Arc<SourceStats>)>>;

/// Everything the admin listener reports on or steers.
pub struct Admin {
    /// True while the relay accepts webhooks.
    pub ready: AtomicBool,
    backend: Backend,
    head: watch::Receiver<Seq>,
    /// Swapped whole by a reload; a request works on the lists it started with.
    sources: RwLock<SourceList>,
    destinations: RwLock<Arc<Vec<DestEntry>>>,
    token: Option<crate::config::Secret>,
    metrics: metrics::Metrics,
    /// Where `POST /api/v1/reload` asks the relay to reload.
    reloads: Option<mpsc::Sender<crate::reload::Request>>,
    /// The web console's sessions, rates and disk budget.
    console: console::Console,
}

impl Admin {
    /// The sled store; what only it can answer is not there yet in a fleet.
    fn store(&self) -> Result<&Store, api::ApiError> {
        self.backend.sled().ok_or(api::ApiError::NotInFleet)
    }

    /// The log's head now: in a fleet read from the stream (another relay
    /// may have stored more since this one's copy last followed it).
    pub(crate) async fn head_now(&self) -> Seq {
        let copy = *self.head.borrow();
        match &self.backend {
            Backend::Sled(_) => copy,
            Backend::Fleet(fleet) => fleet.head().await.map_or(copy, |h| h.max(copy)),
        }
    }

    /// Collects the handles of every stage.
    pub fn new(
        config: &Config,
        backend: Backend,
        head: watch::Receiver<Seq>,
        reloads: Option<mpsc::Sender<crate::reload::Request>>,
    ) -> Admin {
        Admin {
            ready: AtomicBool::new(false),
            backend,
            head,
            sources: RwLock::default(),
            destinations: RwLock::default(),
            token: config.admin.token.clone(),
            metrics: metrics::Metrics::new(),
            reloads,
            console: console::Console::new(
                config.storage.max_disk_bytes,
                config.admin.tls.is_some(),
            ),
        }
    }

    /// Takes the sources and destinations of `config` with their counters
    /// and controls (at start and after each reload).
    pub fn reconfigure(
        &self,
        config: &Config,
        stats: Vec<(String, Arc<SourceStats>)>,
        controls: Vec<(crate::model::DestinationName, Arc<Control>)>,
    ) {
        let sources: Vec<_> = config
            .sources
            .iter()
            .filter_map(|s| {
                let st = stats.iter().find(|(n, _)| n == s.name.as_str())?;
                Some((s.clone(), st.1.clone()))
            })
            .collect();
        let destinations: Vec<DestEntry> = config
            .destinations
            .iter()
            .filter_map(|d| {
                let c = controls.iter().find(|(n, _)| *n == d.name)?;
                Some(Arc::new((d.clone(), c.1.clone())))
            })
            .collect();
        self.console.set_budget(config.storage.max_disk_bytes);
        if let Ok(mut s) = self.sources.write() {
            *s = Arc::new(sources);
        }
        if let Ok(mut d) = self.destinations.write() {
            *d = Arc::new(destinations);
        }
    }

    fn sources(&self) -> SourceList {
        self.sources.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn destinations(&self) -> Arc<Vec<DestEntry>> {
        self.destinations
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        console::session::token_matches(presented, token)
    }
}

/// Every admin answer's body: whole (JSON, metrics) or streamed (events).
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body the admin API reads.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// How long an admin connection gets to complete its TLS handshake (the
/// admin listener has no `request_timeout` of its own).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin listener (over TLS when `tls` is given) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let sampler = tokio::spawn(console::sample_rates(admin.clone(), shutdown.clone()));
    let mut conns = JoinSet::new();
    while let Some((stream, peer)) =
        listen::next_connection(&listener, &mut conns, &shutdown, "admin").await
    {
        let (builder, admin) = (builder.clone(), admin.clone());
        match &tls {
            None => {
                conns.spawn(serve_connection(builder, stream, admin));
            }
            // In the connection's task, bounded: a silent peer holds only
            // its own task, and not for long.
            Some(tls) => {
                let tls = tls.clone();
                conns.spawn(async move {
                    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
                    match tls.accept(stream, deadline).await {
                        Ok(stream) => serve_connection(builder, stream, admin).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                        }
                    }
                });
            }
        }
    }
    conns.shutdown().await;
    // It stops on `shutdown` too; only its end is awaited here.
    let _ = sampler.await;
}

/// Serves one admin connection, plain or TLS, until it ends.
async fn serve_connection<I>(builder: Arc<auto::Builder<TokioExecutor>>, io: I, admin: Arc<Admin>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(route(&admin, req).await) }
    });
    // An error ends only this connection; there is nothing more to do with it.
    let _ = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned()
        .await;
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path().to_owned();
    let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    if admin.token.is_none() && !probe && !addressed_to_this_machine(&req) {
        // Without a token, a page of any site whose name an attacker points
        // at 127.0.0.1 (DNS rebinding) would be same-origin with the API
        // and the console: only requests naming an address or localhost.
        let msg = "without an admin token the admin listener answers only requests addressed \
                   to an IP address or localhost (Host header); set a token to use a name";
        return error(StatusCode::FORBIDDEN, msg).map(BodyExt::boxed_unsync);
    }
    if path.starts_with("/api/v1/") || path == "/api/v1" {
        if !admin.authorized(&req) {
            let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return resp.map(BodyExt::boxed_unsync);
        }
        return api::handle(admin, req).await;
    }
    if path == "/" || path == "/ui" || path.starts_with("/ui/") {
        return console::handle(admin, req).await;
    }
    probes(admin, req).await.map(BodyExt::boxed_unsync)
}

/// Whether the request's `Host` (or, over HTTP/2, its authority) is an IP
/// address or `localhost`, which no DNS answer can rebind.
fn addressed_to_this_machine(req: &Request<Incoming>) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| req.uri().authority().cloned());
    let Some(host) = host else {
        // HTTP/1.0 without Host: not a browser's request.
        return true;
    };
    let name = host.host().trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Health, readiness and metrics, which need no token.
async fn probes(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") if admin.ready.load(Ordering::Relaxed) => {
            // A fleet relay cut off from NATS cannot store what it is sent:
            // the load balancer should send elsewhere.
            match &admin.backend {
                Backend::Fleet(f) if !f.connected() => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS")
                }
                _ => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
            }
        }
        (&Method::GET, "/readyz") => error(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        (&Method::GET, "/metrics") => admin.metrics.render(admin).await,
        (_, "/healthz" | "/readyz" | "/metrics") => {
            let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            resp.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET"));
            resp
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
