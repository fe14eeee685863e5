//! Admin HTTP on `admin.listen`: liveness and readiness probes. Reads relay
//! state; never writes the log.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::respond::{error, json};

/// State the admin listener reports on.
#[derive(Debug, Default)]
pub struct Admin {
    /// True while the relay accepts webhooks.
    pub ready: AtomicBool,
}

/// Serves the admin API until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let admin = admin.clone();
        let service = service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(route(&admin, req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn route(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        "/readyz" if admin.ready.load(Ordering::Relaxed) => {
            json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
        }
        "/readyz" => error(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
