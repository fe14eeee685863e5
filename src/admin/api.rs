//! `/api/v1/` routes: JSON in and out. Errors map to status codes in
//! [`ApiError::into_response`] only; storage failures are opaque 500s.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{ops, Admin, AdminBody, MAX_ADMIN_BODY};
use crate::backend::Backend;
use crate::listen;
use crate::model::{Seq, SourceName};
use crate::route::Decision;
use crate::store::{Message, StoreError};

/// The hand-checked OpenAPI 3 document of this API (kept true by a test).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default and largest page size of listings.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("internal error")]
    Store(#[from] StoreError),
    #[error("the relay is stopping")]
    Unavailable,
    /// Not served with `backend = "nats"` yet.
    #[error("not available with storage.backend = \"nats\" yet")]
    NotInFleet,
    /// Another change of the same thing is under way (a fleet's replay).
    #[error("{0}")]
    Conflict(&'static str),
}

impl ApiError {
    /// The status this error answers with (the API's and the console's).
    pub(super) fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotInFleet => StatusCode::NOT_IMPLEMENTED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            // JetStream without a leader for a moment (a node lost): try again.
            ApiError::Store(crate::store::StoreError::Fleet(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        if let ApiError::Store(e) = &self {
            tracing::error!(error = %e, "admin request failed in storage");
        }
        let mut resp = listen::error(status, &self.to_string());
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        resp
    }
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

/// Routes one authorized `/api/v1/` request.
pub async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<AdminBody> {
    if req.uri().path().trim_end_matches('/') == "/api/v1/stream" {
        return match stream(admin, &req) {
            Ok(resp) => resp,
            Err(e) => e.into_response().map(BodyExt::boxed_unsync),
        };
    }
    let resp = match dispatch(admin, req).await {
        Ok((status, body)) => listen::json(status, &body),
        Err(e) => e.into_response(),
    };
    resp.map(BodyExt::boxed_unsync)
}

/// `GET /api/v1/stream?source=&after_seq=`: from `after_seq`, else after
/// the `Last-Event-ID` a reconnecting client sends, else from now on.
fn stream(admin: &Admin, req: &Request<Incoming>) -> Result<Response<AdminBody>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    let query = Query::parse(req.uri().query())?;
    let source = match &query.source {
        Some(name) => Some(
            admin
                .sources()
                .iter()
                .map(|(s, _)| &s.name)
                .find(|n| n.as_str() == name)
                .cloned()
                .ok_or(ApiError::NotFound("source"))?,
        ),
        None => None,
    };
    let last_event = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Seq);
    let after = query.after_seq.or(last_event);
    let tail = super::stream::Tail::new(admin.backend.clone(), admin.head.clone(), source, after);
    Ok(tail.into_response())
}

async fn dispatch(admin: &Admin, req: Request<Incoming>) -> ApiResult {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = Query::parse(req.uri().query())?;
    let segments: Vec<&str> = path
        .strip_prefix("/api/v1")
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    let get = |r: ApiResult| {
        if method == Method::GET {
            r
        } else {
            Err(ApiError::MethodNotAllowed("GET"))
        }
    };
    match segments.as_slice() {
        ["openapi.json"] => get(serde_json::from_str(OPENAPI)
            .map(|doc| (StatusCode::OK, doc))
            .map_err(|e| ApiError::BadRequest(format!("openapi document: {e}")))),
        ["sources"] => get(Ok((StatusCode::OK, sources(admin)))),
        ["destinations"] => get(destinations(admin).await),
        ["destinations", name] => get(describe(admin, name).await),
        ["destinations", name, "pause" | "resume"] => {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            let paused = segments[2] == "pause";
            set_paused(admin, name, paused).await
        }
        ["destinations", name, "replay"] => {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            let body = read_body(req).await?;
            replay(admin, name, &body).await
        }
        ["destinations", name, "dead-letters"] => get(dead_letters(admin, name, &query).await),
        ["destinations", name, "dead-letters", "redeliver"] => {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            redeliver_all(admin, name).await
        }
        ["destinations", name, "dead-letters", seq, "redeliver"] => {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            redeliver(admin, name, seq).await
        }
        ["destinations", name, "route", seq] => get(route(admin, name, seq).await),
        ["reload"] => {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed("POST"));
            }
            reload(admin).await
        }
        ["messages"] => get(messages(admin, &query).await),
        ["messages", seq] => get(message(admin, seq).await),
        _ => Err(ApiError::NotFound("route")),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| ApiError::BadRequest("body unreadable or over 64 KiB".into()))
}

/// `after_seq`, `limit`, `source` query parameters.
struct Query {
    /// Absent means from the start (listings) or from now on (the stream).
    after_seq: Option<Seq>,
    limit: usize,
    source: Option<String>,
    event_type: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut out = Query {
            after_seq: None,
            limit: DEFAULT_LIMIT,
            source: None,
            event_type: None,
        };
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "after_seq" => {
                    out.after_seq = Some(Seq(v.parse().map_err(|_| {
                        ApiError::BadRequest("after_seq must be a non-negative integer".into())
                    })?))
                }
                "limit" => {
                    let n: usize = v.parse().map_err(|_| {
                        ApiError::BadRequest("limit must be a positive integer".into())
                    })?;
                    if n == 0 {
                        return Err(ApiError::BadRequest("limit must be at least 1".into()));
                    }
                    out.limit = n.min(MAX_LIMIT);
                }
                "source" => out.source = Some(v.to_owned()),
                "event_type" => out.event_type = Some(decode_component(v)),
                _ => {
                    return Err(ApiError::BadRequest(
                        "unknown query parameter (use after_seq, limit, source, event_type)".into(),
                    ))
                }
            }
        }
        Ok(out)
    }
}

fn sources(admin: &Admin) -> Value {
    json!(ops::sources(admin))
}

async fn destinations(admin: &Admin) -> ApiResult {
    Ok((StatusCode::OK, json!(ops::describe_all(admin).await?)))
}

async fn describe(admin: &Admin, name: &str) -> ApiResult {
    let entry = ops::find_destination(admin, name)?;
    Ok((StatusCode::OK, json!(ops::describe(admin, &entry).await?)))
}

async fn set_paused(admin: &Admin, name: &str, paused: bool) -> ApiResult {
    Ok((
        StatusCode::OK,
        json!(ops::set_paused(admin, name, paused).await?),
    ))
}

async fn replay(admin: &Admin, name: &str, body: &[u8]) -> ApiResult {
    // The destination first: an unknown one is a 404 whatever the body.
    ops::find_destination(admin, name)?;
    let req: ops::ReplayRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"from_seq\": N}} or {{\"from_time\": \"RFC3339\"}}, \
             optionally with \"to_seq\" and \"dry_run\": {e}"
        ))
    })?;
    let plan = ops::plan_replay(admin, name, &req).await?;
    let d = &plan.entry.0;
    if req.dry_run {
        let (count, complete) = ops::count_replay(admin, &plan, ops::COUNT_CAP).await?;
        return Ok((
            StatusCode::OK,
            json!({
                "destination": d.name, "dry_run": true, "from_seq": plan.from.0, "to_seq": plan.to.0,
                "messages": count, "complete": complete,
            }),
        ));
    }
    let cursor = ops::apply_replay(admin, &plan).await?;
    Ok((
        StatusCode::OK,
        json!({ "destination": d.name, "cursor": cursor.0, "to_seq": plan.to.0 }),
    ))
}

async fn dead_letters(admin: &Admin, name: &str, q: &Query) -> ApiResult {
    let after = q.after_seq.unwrap_or_default();
    let list = ops::dead_letters(admin, name, after, q.limit).await?;
    Ok((StatusCode::OK, json!(list)))
}

/// A seq in a path or a form.
pub(super) fn parse_seq(s: &str) -> Result<Seq, ApiError> {
    s.parse()
        .map(Seq)
        .map_err(|_| ApiError::BadRequest("seq must be a non-negative integer".into()))
}

async fn redeliver(admin: &Admin, name: &str, seq: &str) -> ApiResult {
    let seq = parse_seq(seq)?;
    let dest = ops::redeliver(admin, name, seq).await?;
    Ok((
        StatusCode::ACCEPTED,
        json!({ "destination": dest, "seq": seq.0, "queued": true }),
    ))
}

/// Every dead letter of the destination again; answers how many were queued.
async fn redeliver_all(admin: &Admin, name: &str) -> ApiResult {
    let (dest, queued) = ops::redeliver_all(admin, name).await?;
    Ok((
        StatusCode::ACCEPTED,
        json!({ "destination": dest, "queued": queued }),
    ))
}

/// Messages a fleet's listing reads at most per call (each comes over the
/// network, so fewer than sled's bound).
const FLEET_LIST_CAP: usize = 20_000;

async fn messages(admin: &Admin, q: &Query) -> ApiResult {
    let source = match &q.source {
        Some(s) => {
            let name: SourceName = s
                .parse()
                .map_err(|_| ApiError::BadRequest("source is not a valid name".into()))?;
            Some(name)
        }
        None => None,
    };
    let (after, limit) = (q.after_seq.unwrap_or_default(), q.limit);
    let event_type = q.event_type.clone();
    let list = match &admin.backend {
        Backend::Sled(store) => {
            store
                .blocking(move |s| {
                    s.log()
                        .list_messages(source.as_ref(), event_type.as_deref(), after, limit)
                })
                .await?
        }
        Backend::Fleet(fleet) => fleet
            .list_messages(
                (source.as_ref(), event_type.as_deref()),
                after,
                (limit, FLEET_LIST_CAP),
            )
            .await
            .map_err(crate::store::StoreError::from)?,
    };
    let list: Vec<Value> = list.iter().map(|m| Value::Object(meta_json(m))).collect();
    Ok((StatusCode::OK, json!(list)))
}

async fn message(admin: &Admin, seq: &str) -> ApiResult {
    let seq = parse_seq(seq)?;
    let (m, deliveries) = ops::message_detail(admin, seq).await?;
    let per_dest: serde_json::Map<String, Value> = deliveries
        .into_iter()
        .map(|d| (d.destination.to_string(), json!(d)))
        .collect();
    let mut out = message_json(seq, &m);
    out.insert("destinations".into(), Value::Object(per_dest));
    Ok((StatusCode::OK, Value::Object(out)))
}

/// `POST /api/v1/reload`: 200 with what changed, 400 with every problem
/// of the new config (the running one stays).
async fn reload(admin: &Admin) -> ApiResult {
    let Some(reloads) = &admin.reloads else {
        return Err(ApiError::NotFound("route"));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    reloads
        .send(crate::reload::Request { reply: Some(reply) })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match answer.await.map_err(|_| ApiError::Unavailable)? {
        Ok(changes) => Ok((
            StatusCode::OK,
            json!({ "reloaded": true, "added": changes.added, "removed": changes.removed,
                    "changed": changes.changed, "restart_needed": changes.restart_needed }),
        )),
        Err(problems) => Ok((
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid config: nothing changed", "problems": problems }),
        )),
    }
}

/// `GET /api/v1/destinations/{name}/route/{seq}`: what the destination's
/// routing does with a stored message now.
async fn route(admin: &Admin, name: &str, seq: &str) -> ApiResult {
    let entry = ops::find_destination(admin, name)?;
    let (d, _) = &*entry;
    let seq = parse_seq(seq)?;
    let m = admin
        .backend
        .message(seq)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let decision = if d.sources.contains(&m.source) {
        d.rules.decide(seq, &m)
    } else {
        Decision::Skip
    };
    Ok((
        StatusCode::OK,
        crate::route::decision_json(&d.name, seq, &m, decision),
    ))
}

/// A percent-encoded query value, decoded (`+` as a space).
fn decode_component(v: &str) -> String {
    form_urlencoded::parse(format!("x={v}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A stored message as the API shows it (also each event of the stream).
pub(super) fn message_json(seq: Seq, m: &Message) -> serde_json::Map<String, Value> {
    let headers: Vec<Value> = m
        .headers
        .iter()
        .map(|(k, v)| json!([k, String::from_utf8_lossy(v)]))
        .collect();
    let mut out = meta_json(&crate::store::MessageMeta::of(seq, m));
    out.insert("headers".into(), json!(headers));
    out.insert(
        "body_base64".into(),
        json!(crate::keys::b64_encode(&m.body)),
    );
    out
}

/// A message's metadata as the API shows it (listings, and the start of
/// every whole message).
fn meta_json(m: &crate::store::MessageMeta) -> serde_json::Map<String, Value> {
    let v = json!({
        "seq": m.seq,
        "id": m.id,
        "source": m.source,
        "received_at": crate::time::rfc3339(m.received_at_ms),
        "event_type": m.event_type,
        "content_type": m.content_type,
        "query": m.query,
        "idempotency_key": m.idempotency_key,
        "body_bytes": m.body_bytes,
    });
    match v {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
