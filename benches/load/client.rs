//! The load generator and the destinations' sink, both in the bench process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::Args;

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench started: the send time stamped in each body.
pub fn nanos() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Counts deliveries and records end-to-end latency from the stamped send time.
pub struct Sink {
    pub addr: SocketAddr,
    pub delivered: AtomicUsize,
    pub e2e: Mutex<Vec<u64>>,
    pub done: Notify,
    expected: usize,
}

pub async fn start_sink(expected: usize) -> Arc<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let sink = Arc::new(Sink {
        addr: listener.local_addr().expect("sink address"),
        delivered: AtomicUsize::new(0),
        e2e: Mutex::new(Vec::with_capacity(expected)),
        done: Notify::new(),
        expected,
    });
    let s = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let sent: u64 = std::str::from_utf8(&body[..16.min(body.len())])
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        s.e2e
                            .lock()
                            .expect("e2e lock")
                            .push(nanos().saturating_sub(sent));
                        if s.delivered.fetch_add(1, Ordering::SeqCst) + 1 == s.expected {
                            s.done.notify_one();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    sink
}

pub struct Drive {
    pub elapsed: Duration,
    /// Latency of each `200`, in nanoseconds.
    pub acks: Vec<u64>,
    pub failed: usize,
}

impl Drive {
    pub fn rps(&self) -> f64 {
        self.acks.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// A body of `size` bytes (at least 16) starting with its send time.
fn body(size: usize) -> Bytes {
    let mut b = format!("{:016}", nanos()).into_bytes();
    b.resize(size.max(16), b'x');
    Bytes::from(b)
}

/// Sends `a.requests` POSTs over `a.connections` keep-alive HTTP/1.1
/// connections: as fast as answered, or at `a.rate` per second (open loop).
pub async fn drive(addr: SocketAddr, path: &str, a: &Args) -> Drive {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = a
        .rate
        .map(|r| Duration::from_nanos(1_000_000_000 / r.max(1)));
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (next, failed, a, path) = (next.clone(), failed.clone(), a.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/1 handshake");
            tokio::spawn(conn);
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= a.requests {
                    break;
                }
                if let Some(iv) = interval {
                    // Open loop: request i is due at i * interval, whatever came before.
                    let due = started + iv * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let req = Request::post(format!("http://{addr}{path}"))
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(body(a.body)))
                    .expect("a valid request");
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status() == StatusCode::OK;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            acks.push(t.elapsed().as_nanos() as u64);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            acks
        }));
    }
    let mut acks = Vec::with_capacity(a.requests);
    for t in tasks {
        acks.extend(t.await.expect("a client connection task"));
    }
    Drive {
        elapsed: started.elapsed(),
        acks,
        failed: failed.load(Ordering::Relaxed),
    }
}

/// The `p` quantile (0..=1) of `v`, sorting it.
pub fn pct(v: &mut [u64], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Duration::from_nanos(v[i])
}

/// One line: ingest rate, ack latency and failures of a drive.
pub fn print_ingest(label: &str, d: &mut Drive) {
    println!(
        "{label:<11}: {:>9.0} req/s   ack p50 {:>8.2?} p99 {:>8.2?}   ({} failed)",
        d.rps(),
        pct(&mut d.acks, 0.50),
        pct(&mut d.acks, 0.99),
        d.failed
    );
}
