//! Inbound HTTP: accepts webhooks on `server.listen`, routes them by path to a
//! source, enforces method, size and time limits, verifies, and hands the
//! request to the appender. Answers the sender only after the appender says the
//! message is durable (for a source with `reply`, then with its destination's
//! answer: [`reply`]). Must not touch sled or delivery state directly.

mod preface;
mod reply;
mod response;
mod stats;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use crate::listen;
use crate::store::{AppendOutcome, Appender, NewMessage, StoreError};
use crate::telemetry::WEBHOOKS;
use crate::tls::TlsAcceptor;
use crate::verify::{Inbound, Reply, Verdict, Verified, Verifier};
pub use response::IngestError;
pub use stats::{RejectReason, SourceStats};

/// How long open connections get to finish their requests after shutdown starts.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Cap on request header bytes (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How much of a body refused with 413 is still read (and dropped) so that
/// the sender can read the answer; see [`discard_rest`].
const DISCARD_MAX_BYTES: usize = 4 * 1024 * 1024;
/// How long at most that reading goes on (less when `request_timeout` ends first).
const DISCARD_MAX_TIME: Duration = Duration::from_secs(5);

/// Inbound headers that are never stored: hop-by-hop, framing, and credentials.
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
];

struct Route {
    source: SourceConfig,
    verifier: Verifier,
    stats: Arc<SourceStats>,
    /// `reply`: whose answer the provider gets.
    reply: Option<reply::SyncRoute>,
}

/// Each destination's control, by name (where sync replies wait).
pub type Controls = [(crate::model::DestinationName, Arc<crate::delivery::Control>)];

type Routes = HashMap<String, Arc<Route>>;

/// Everything a request handler needs; shared by all connections.
pub struct Ingest {
    /// Swapped whole by a reload; a request keeps the route it started with.
    routes: RwLock<Arc<Routes>>,
    appender: Appender,
    max_body_bytes: u64,
    request_timeout: Duration,
    /// Refuses (503) while storage is over `max_disk_bytes` or under
    /// `min_free_bytes`; see [`crate::store::DiskGuard`].
    disk: Arc<crate::store::DiskGuard>,
}

impl Ingest {
    /// Builds the routing table and every source's verifier from the config;
    /// `controls`: the running destinations' (sync replies wait on them).
    pub fn new(
        config: &Config,
        controls: &Controls,
        appender: Appender,
        disk: Arc<crate::store::DiskGuard>,
    ) -> Ingest {
        Ingest {
            routes: RwLock::new(Arc::new(routes(config, controls, &HashMap::new()))),
            appender,
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: config.server.request_timeout,
            disk,
        }
    }

    /// Takes the sources of `config` and the new workers' `controls` (a
    /// reload): new routes for new requests; a source keeps its counters
    /// when its name stays.
    pub fn reconfigure(&self, config: &Config, controls: &Controls) {
        let stats: HashMap<String, Arc<SourceStats>> = self.stats().into_iter().collect();
        let new = Arc::new(routes(config, controls, &stats));
        if let Ok(mut r) = self.routes.write() {
            *r = new;
        }
    }

    fn over_budget(&self) -> bool {
        self.disk.refusing()
    }

    /// The disk guard (for what a reload restarts).
    pub fn disk(&self) -> Arc<crate::store::DiskGuard> {
        self.disk.clone()
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// A handle on the appender (for what a reload restarts).
    pub fn appender(&self) -> Appender {
        self.appender.clone()
    }

    /// Counters of every source, by name.
    pub fn stats(&self) -> Vec<(String, Arc<SourceStats>)> {
        self.routes()
            .values()
            .map(|r| (r.source.name.to_string(), r.stats.clone()))
            .collect()
    }
}

/// Each source's route, reusing the counters in `stats` by source name.
fn routes(
    config: &Config,
    controls: &Controls,
    stats: &HashMap<String, Arc<SourceStats>>,
) -> Routes {
    config
        .sources
        .iter()
        .map(|s| {
            // The config names only running destinations; one missing
            // (never, but not worth a panic) means the fallback every time.
            let reply = s.reply.as_ref().and_then(|r| {
                let (_, control) = controls.iter().find(|(n, _)| *n == r.destination)?;
                Some(reply::SyncRoute {
                    config: r.clone(),
                    control: control.clone(),
                })
            });
            let route = Route {
                source: s.clone(),
                verifier: Verifier::new(s),
                stats: stats.get(s.name.as_str()).cloned().unwrap_or_default(),
                reply,
            };
            (s.path.clone(), Arc::new(route))
        })
        .collect()
}

/// Serves webhooks on `listener` (over TLS when `tls` is given) until
/// `shutdown`, then lets open requests finish (bounded by `DRAIN_GRACE`).
/// Returning drops the last appender handle.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ingest.request_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(256)
        // Idle HTTP/2 connections are pinged and closed when the peer is gone.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Connection tasks live here so that any still open after the drain grace
    // can be aborted; each holds the appender handle, which must go away.
    let mut conns = JoinSet::new();

    while let Some((stream, peer)) =
        listen::next_connection(&listener, &mut conns, &shutdown, "ingest").await
    {
        let _ = stream.set_nodelay(true);
        // Bounds the wait for the first bytes (and, over TLS, the handshake
        // before them), which no hyper timer covers.
        let deadline = tokio::time::Instant::now() + ingest.request_timeout;
        let (builder, ingest, watcher) = (builder.clone(), ingest.clone(), graceful.watcher());
        match &tls {
            None => {
                let stream = preface::PrefaceDeadline::until(stream, deadline);
                conns.spawn(serve_connection(builder, stream, ingest, watcher, peer));
            }
            // The handshake runs in the connection's task, so a slow or
            // silent peer holds up nobody else.
            Some(tls) => {
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls.accept(stream, deadline).await {
                        Ok(stream) => {
                            let stream = preface::PrefaceDeadline::until(stream, deadline);
                            serve_connection(builder, stream, ingest, watcher, peer).await;
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "inbound TLS handshake failed");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("inbound connections still open after the drain grace; dropping them");
    }
    conns.shutdown().await;
}

/// Serves one connection (plain or TLS, HTTP/1 or HTTP/2) until it ends or
/// a graceful shutdown closes it.
async fn serve_connection<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    ingest: Arc<Ingest>,
    watcher: Watcher,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let ingest = ingest.clone();
        async move { Ok::<_, Infallible>(handle(&ingest, req).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "inbound connection ended with error");
    }
}

async fn handle(ingest: &Ingest, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match accept(ingest, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// What became of a request that was not refused.
enum Outcome {
    Appended(AppendOutcome),
    /// Appended for a source with `reply` (durable that long after the
    /// request's start): the destination's answer, if it gave one in time
    /// (the fallback otherwise).
    Replied(
        AppendOutcome,
        Duration,
        Option<crate::delivery::reply::AppAnswer>,
    ),
    /// A handshake answered by the verifier; nothing stored.
    Answered(Reply),
}

async fn accept(
    ingest: &Ingest,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, IngestError> {
    let route = ingest
        .routes()
        .get(req.uri().path())
        .cloned()
        .ok_or(IngestError::NotFound)?;
    let route = &*route;
    let stats = &route.stats;
    let started = tokio::time::Instant::now();
    let result = receive(ingest, route, req, started).await;
    if let Ok(Outcome::Replied(_, _, answer)) = &result {
        let counter = match answer {
            Some(_) => &stats.replied_by_app,
            None => &stats.replied_with_fallback,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    match &result {
        Ok(Outcome::Appended(a) | Outcome::Replied(a, _, _)) => match a {
            AppendOutcome::Stored { .. } => {
                // Time to the durable answer, without a sync reply's wait.
                let stored_in = match &result {
                    Ok(Outcome::Replied(_, stored_in, _)) => *stored_in,
                    _ => started.elapsed(),
                };
                stats.ingest_duration.observe(stored_in);
                stats.received.fetch_add(1, Ordering::Relaxed);
            }
            AppendOutcome::Duplicate { .. } => {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        },
        Ok(Outcome::Answered(_)) => {
            stats.handshakes.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            if let Some(reason) = e.reject_reason() {
                stats.reject(reason);
            }
            // The reason is from a fixed set, the detail names at most a
            // header: never a secret, a signature or the body.
            let reason = e
                .reject_reason()
                .map_or("unavailable", RejectReason::as_str);
            tracing::info!(
                source = %route.source.name,
                status = e.status().as_u16(),
                reason,
                detail = %e,
                "inbound request refused"
            );
        }
    }
    result.map(|outcome| match (outcome, &route.reply) {
        (Outcome::Replied(_, _, answer), Some(sync)) => reply::response(answer, &sync.config),
        (Outcome::Appended(a) | Outcome::Replied(a, _, _), _) => response::accepted(a),
        (Outcome::Answered(reply), _) => response::answered(reply),
    })
}

/// `started`: when the request arrived (a sync reply's `timeout` counts from it).
async fn receive(
    ingest: &Ingest,
    route: &Route,
    req: Request<Incoming>,
    started: tokio::time::Instant,
) -> Result<Outcome, IngestError> {
    let verifier = &route.verifier;
    let allowed =
        req.method() == Method::POST || (req.method() == Method::GET && verifier.answers_get());
    if !allowed {
        return Err(IngestError::MethodNotAllowed);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, mut body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + ingest.request_timeout;
    if declared.is_some_and(|n| n > ingest.max_body_bytes) {
        // A sender waiting for `100 Continue` sends no body after a final answer.
        if !parts.headers.contains_key(header::EXPECT) {
            discard_rest(&parts, body, deadline);
        }
        return Err(IngestError::TooLarge);
    }
    let limit = usize::try_from(ingest.max_body_bytes).unwrap_or(usize::MAX);
    let read = tokio::time::timeout_at(deadline, Limited::new(&mut body, limit).collect()).await;
    let body = match read.map_err(|_| IngestError::Timeout)? {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            discard_rest(&parts, body, deadline);
            return Err(IngestError::TooLarge);
        }
        Err(_) => return Err(IngestError::BadBody),
    };

    let inbound = Inbound {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    let verified = match verifier.verify(&inbound, crate::time::now_secs()) {
        Ok(Verdict::Accept(verified)) => verified,
        Ok(Verdict::Respond(reply)) => return Ok(Outcome::Answered(reply)),
        Err(error) => {
            return Err(IngestError::Rejected {
                error,
                challenge: verifier.challenge(),
            })
        }
    };
    if parts.method != Method::POST {
        // Only handshakes are answered on GET; nothing else is stored from one.
        return Err(IngestError::MethodNotAllowed);
    }
    // Checked here, not earlier: handshakes (which store nothing) are still
    // answered and forged requests still get 401.
    if ingest.over_budget() {
        return Err(IngestError::OverBudget);
    }
    let Some(sync) = &route.reply else {
        return store(ingest, route, &parts, body, verified, None)
            .await
            .map(Outcome::Appended);
    };
    let (hook, claim) = sync.claim();
    let outcome = store(ingest, route, &parts, body, verified, Some(hook)).await?;
    let stored_in = started.elapsed();
    let answer = match &outcome {
        AppendOutcome::Stored { seq, .. } => {
            claim.answer(*seq, started + sync.config.timeout).await
        }
        // Its first delivery is not this request's to wait for.
        AppendOutcome::Duplicate { .. } => None,
    };
    Ok(Outcome::Replied(outcome, stored_in, answer))
}

/// Reads and drops what is left of an HTTP/1 request body refused with 413,
/// in a task of its own, so that the sender can read the answer. The answer
/// goes out at once (with `Connection: close`); hyper keeps reading the body
/// for as long as something holds it and closes the connection once it has
/// ended. Dropping it instead makes hyper close with the rest of the body
/// unread, and closing a socket with unread input makes the kernel send a
/// reset: the sender's next write fails and most clients report that reset
/// instead of reading the 413 (or lose the 413 if not yet read). Bounded:
/// at most [`DISCARD_MAX_BYTES`] more, until the request's own deadline
/// (`request_timeout` after its head) and at most [`DISCARD_MAX_TIME`]; past
/// either the connection closes as before. HTTP/2 needs none of this: the
/// stream is reset, not the connection, and the answer stays readable.
fn discard_rest(parts: &http::request::Parts, mut body: Incoming, deadline: tokio::time::Instant) {
    if parts.version >= http::Version::HTTP_2 {
        return;
    }
    let deadline = deadline.min(tokio::time::Instant::now() + DISCARD_MAX_TIME);
    tokio::spawn(async move {
        let mut left = DISCARD_MAX_BYTES;
        let discard = async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len());
                let Some(rest) = left.checked_sub(n) else {
                    return;
                };
                left = rest;
            }
        };
        let _ = tokio::time::timeout_at(deadline, discard).await;
    });
}

/// Hands a verified request to the appender; taking a [`Verified`] is what
/// keeps anything unverified out of the log.
async fn store(
    ingest: &Ingest,
    route: &Route,
    parts: &http::request::Parts,
    body: Bytes,
    verified: Verified,
    on_staged: Option<crate::store::OnStaged>,
) -> Result<AppendOutcome, IngestError> {
    let source = &route.source;
    let headers = &parts.headers;
    let query = parts
        .uri
        .query()
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let credential = route.verifier.credential_header();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let named_by_connection = connection_named(headers);
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| {
            !NOT_STORED.contains(&name.as_str())
                && Some(*name) != credential
                && !named_by_connection.iter().any(|n| n == name.as_str())
        })
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let dedup = verified
        .into_idempotency_key()
        .map(|key| (key, source.dedup_window));
    let input = crate::route::Input {
        seq: None,
        id: None,
        source: source.name.as_str(),
        event_type: None,
        received_at_ms: crate::time::now_ms(),
        headers: &headers,
        query: query.as_deref(),
        content_type: content_type.as_deref(),
        body: &body,
    };
    // A failing `event_type` program stores the message without a type:
    // refusing the webhook would only make the provider retry it.
    let event_type = source.event_type.event_type(&input).unwrap_or_else(|e| {
        tracing::warn!(source = %source.name, error = %e, "event_type program failed; stored without an event type");
        None
    });

    let bytes = body.len();
    let msg = NewMessage {
        source: source.name.clone(),
        event_type: event_type.clone(),
        content_type,
        query,
        headers,
        body: body.to_vec(),
        dedup,
        on_staged,
    };
    let outcome = ingest
        .appender
        .append(msg)
        .await
        .map_err(|e: StoreError| match e {
            // The batch would have passed the disk budget: refused, not failed.
            StoreError::OverBudget => IngestError::OverBudget,
            e => {
                tracing::error!(source = %source.name, error = %e, "append failed");
                IngestError::Unavailable
            }
        })?;
    // Once the answer is known to be durable. Never headers or the body.
    // A duplicate names the first message with its key (`duplicate=true`).
    let (seq, id, duplicate) = match &outcome {
        AppendOutcome::Stored { seq, id } => (seq, id, None),
        AppendOutcome::Duplicate { seq, id } => (seq, id, Some(true)),
    };
    tracing::info!(
        target: WEBHOOKS,
        source = %source.name,
        seq = seq.0,
        id = %id,
        event_type,
        bytes,
        duplicate,
        "webhook accepted"
    );
    Ok(outcome)
}

/// Header names an inbound `Connection` header lists (RFC 9110 section 7.6.1):
/// hop-by-hop for that request, so never stored and never forwarded.
fn connection_named(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}
