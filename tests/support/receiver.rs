//! A real HTTP destination that records every request and answers per its script.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::wait::wait_until;

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `x-hookrelay-seq`; panics without one.
    pub fn seq(&self) -> u64 {
        self.header("x-hookrelay-seq")
            .and_then(|v| v.parse().ok())
            .expect("x-hookrelay-seq")
    }

    /// `x-hookrelay-attempt`; panics without one.
    pub fn attempt(&self) -> u32 {
        self.header("x-hookrelay-attempt")
            .and_then(|v| v.parse().ok())
            .expect("x-hookrelay-attempt")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks the Standard Webhooks signature over the body as received
    /// (written from the spec, not with the relay's code),
    /// with the raw signing `key`; its timestamp (Unix seconds).
    pub fn verify_standard(&self, key: &[u8]) -> u64 {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let id = self.header("webhook-id").expect("webhook-id");
        let ts = self.header("webhook-timestamp").expect("webhook-timestamp");
        let sig = self.header("webhook-signature").expect("webhook-signature");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&self.body);
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("v1,{want}"), "signature of {id} at {ts}");
        ts.parse().expect("unix seconds")
    }
}

/// What a receiver answers: status, extra headers, and a delay before answering.
pub type Script = Arc<ScriptFn>;

/// What a script decides for one request.
type ScriptFn =
    dyn Fn(&Received) -> (StatusCode, Vec<(&'static str, String)>, Duration) + Send + Sync;
/// The body a receiver answers with.
type BodyFn = dyn Fn(&Received) -> Bytes + Send + Sync;
/// The body a receiver answers with (`{}` unless a test gives one).
pub type BodyScript = Arc<BodyFn>;

/// A script answering `status` at once, with no extra headers.
pub fn answer(status: StatusCode) -> Script {
    Arc::new(move |_| (status, vec![], Duration::ZERO))
}

/// A real HTTP server recording every request and answering per its script;
/// it stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<(Received, StatusCode)>>>,
    arrivals: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Receiver {
    /// A receiver that always answers 200.
    pub async fn ok() -> Receiver {
        Receiver::scripted(answer(StatusCode::OK)).await
    }

    /// A receiver that always answers `status`.
    pub async fn answering(status: StatusCode) -> Receiver {
        Receiver::scripted(answer(status)).await
    }

    /// A receiver that answers 200 after `delay`.
    pub async fn slow(delay: Duration) -> Receiver {
        Receiver::scripted(Arc::new(move |_| (StatusCode::OK, vec![], delay))).await
    }

    /// A receiver answering `refused` where `when` holds for a request, else 200.
    pub async fn refusing(
        refused: StatusCode,
        when: impl Fn(&Received) -> bool + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::scripted(Arc::new(move |r| {
            let status = if when(r) { refused } else { StatusCode::OK };
            (status, vec![], Duration::ZERO)
        }))
        .await
    }

    /// A receiver answering `refused` until `open` is set, then 200.
    pub async fn gated(open: &Arc<std::sync::atomic::AtomicBool>, refused: StatusCode) -> Receiver {
        let open = open.clone();
        Receiver::refusing(refused, move |_| !open.load(Ordering::SeqCst)).await
    }

    pub async fn scripted(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener, script)
    }

    /// Answers per `script`, with `body` as the answer's body (an app whose
    /// answer a provider reads).
    pub fn replying(listener: TcpListener, script: Script, body: BodyScript) -> Receiver {
        Receiver::serve(listener, None, script, Some(body))
    }

    /// An HTTPS receiver with `tls` as its server config.
    pub async fn tls(tls: Arc<tokio_rustls::rustls::ServerConfig>, script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            script,
            None,
        )
    }

    /// Serves on an already bound listener (to come up on a known port).
    pub fn on(listener: TcpListener, script: Script) -> Receiver {
        Receiver::serve(listener, None, script, None)
    }

    fn serve(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: Script,
        body: Option<BodyScript>,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (l, s, a) = (log.clone(), stop.clone(), arrivals.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = s.cancelled() => return,
                };
                let (l, script, s, a, tls, body) = (
                    l.clone(),
                    script.clone(),
                    s.clone(),
                    a.clone(),
                    tls.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (l, script, a, body) =
                            (l.clone(), script.clone(), a.clone(), body.clone());
                        async move {
                            let scripts = (&*script, body.as_deref());
                            Ok::<_, Infallible>(answer_one(req, scripts, &l, &a).await)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, _ = s.cancelled() => {} }
                        }
                        Some(acceptor) => {
                            // Handshakes the relay refuses (unknown issuer) end here.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, _ = s.cancelled() => {} }
                        }
                    }
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

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request answered so far with its status, in answer order.
    pub fn all(&self) -> Vec<(Received, StatusCode)> {
        self.log.lock().unwrap().clone()
    }

    /// Requests answered 2xx, in answer order.
    pub fn delivered(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|(_, s)| s.is_success())
            .map(|(r, _)| r)
            .collect()
    }

    /// Requests that reached the receiver, answered yet or not.
    pub fn arrivals(&self) -> usize {
        self.arrivals.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
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

/// Reads one request, asks the script, records the request once answered.
async fn answer_one(
    req: Request<Incoming>,
    (script, body_of): (&ScriptFn, Option<&BodyFn>),
    log: &Mutex<Vec<(Received, StatusCode)>>,
    arrivals: &AtomicUsize,
) -> Response<Full<Bytes>> {
    arrivals.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let Ok(body) = req.into_body().collect().await else {
        // The sender went away mid-body: it never sees an answer.
        return Response::new(Full::new(Bytes::new()));
    };
    let rec = Received {
        path,
        query,
        headers,
        body: body.to_bytes(),
    };
    let (status, extra, delay) = script(&rec);
    let body = body_of.map_or(Bytes::from_static(b"{}"), |f| f(&rec));
    tokio::time::sleep(delay).await;
    log.lock().unwrap().push((rec, status));
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
