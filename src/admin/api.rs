//! `/api/v1/` routes: JSON in and out. Errors map to status codes in
//! [`ApiError::into_response`] only; storage failures are opaque 500s.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{health, Admin, AdminBody, MAX_ADMIN_BODY};
use crate::config::DestinationConfig;
use crate::delivery::Control;
use crate::listen;
use crate::model::{Seq, SourceName};
use crate::route::Decision;
use crate::store::{Message, ReplayEnd, StoreError};

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
}

impl ApiError {
    fn into_response(self) -> Response<Full<Bytes>> {
        let status = match &self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) => {
                tracing::error!(error = %e, "admin request failed in storage");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
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
    let tail = super::stream::Tail::new(admin.store.clone(), admin.head.clone(), source, after);
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
        ["destinations", name] => get(match destination(admin, name) {
            Ok(d) => describe(admin, &d).await,
            Err(e) => Err(e),
        }),
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
    use std::sync::atomic::Ordering::Relaxed;
    let list: Vec<Value> = admin
        .sources()
        .iter()
        .map(|(s, st)| {
            let by_reason: serde_json::Map<String, Value> = st
                .rejected_by_reason()
                .into_iter()
                .map(|(r, n)| (r.as_str().to_owned(), json!(n)))
                .collect();
            json!({
                "name": s.name,
                "path": s.path,
                "scheme": s.verify.scheme().as_str(),
                "received": st.received.load(Relaxed),
                "rejected": st.rejected.load(Relaxed),
                "rejected_by_reason": by_reason,
                "duplicates": st.duplicates.load(Relaxed),
                "handshakes": st.handshakes.load(Relaxed),
            })
        })
        .collect();
    json!(list)
}

fn destination(admin: &Admin, name: &str) -> Result<super::DestEntry, ApiError> {
    admin
        .destinations()
        .iter()
        .find(|e| e.0.name.as_str() == name)
        .cloned()
        .ok_or(ApiError::NotFound("destination"))
}

async fn destinations(admin: &Admin) -> ApiResult {
    let all = admin.destinations();
    let mut list = Vec::with_capacity(all.len());
    for d in all.iter() {
        list.push(describe(admin, d).await?.1);
    }
    Ok((StatusCode::OK, json!(list)))
}

/// `scheme://host[:port]/path`, without credentials or query.
fn display_url(u: &http::Uri) -> String {
    let host = u.host().unwrap_or("");
    let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        u.scheme_str().unwrap_or("http"),
        u.path()
    )
}

async fn describe(
    admin: &Admin,
    (d, c): &(DestinationConfig, std::sync::Arc<Control>),
) -> ApiResult {
    let cursor = admin.store.cursors().get(&d.name)?;
    let head = *admin.head.borrow();
    let st = admin.store.destinations().get(&d.name)?;
    let pending = health::pending(&admin.store, d, cursor, head).await?;
    let now = crate::time::now_ms();
    let age = pending
        .oldest_received_ms
        .map(|at| now.saturating_sub(at) / 1000);
    let last = c.last_attempt().map(|a| {
        json!({
            "at": crate::time::rfc3339(a.at_ms),
            "seq": a.seq,
            "status": a.status,
            "error": a.error,
        })
    });
    Ok((
        StatusCode::OK,
        json!({
            "name": d.name,
            "url": display_url(&d.url),
            "sources": d.sources,
            "ordering": d.ordering.as_str(),
            "state": health::state_word(&st, c),
            "failing_since": c.failing_since_ms().map(crate::time::rfc3339),
            "last_success_at": c.last_success_ms().map(crate::time::rfc3339),
            "blocked_on": st.blocked_on.map(|s| s.0),
            "cursor": cursor.0,
            "head": head.0,
            "lag": pending.lag,
            "oldest_pending_age_seconds": age,
            "in_flight": c.in_flight(),
            "retrying": c.activity() == crate::delivery::status::Activity::Retrying,
            "dead_letters": admin.store.dead_letters().count(&d.name),
            "last_attempt": last,
        }),
    ))
}

async fn set_paused(admin: &Admin, name: &str, paused: bool) -> ApiResult {
    let entry = destination(admin, name)?;
    let (d, c) = &*entry;
    admin.store.destinations().update(&d.name, |st| {
        if !paused && (st.paused || st.blocked_on.is_some()) {
            // Resuming is also how an operator releases a blocked destination:
            // the blocking message, and every message whose retries the
            // pause stopped, gets a fresh run of attempts.
            st.retry_epoch = st.retry_epoch.wrapping_add(1);
            st.blocked_on = None;
        }
        st.paused = paused;
    })?;
    c.wake();
    tracing::info!(destination = %d.name, paused, "destination state changed by operator");
    describe(admin, &entry).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    from_seq: Option<u64>,
    from_time: Option<String>,
    /// Replays only up to this seq, then resumes where the cursor was.
    to_seq: Option<u64>,
    /// Counts what would go again and changes nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Most messages a dry run's count examines (about a second of reading).
const COUNT_CAP: usize = 2_000_000;

async fn replay(admin: &Admin, name: &str, body: &[u8]) -> ApiResult {
    let entry = destination(admin, name)?;
    let (d, c) = &*entry;
    let req: ReplayBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"from_seq\": N}} or {{\"from_time\": \"RFC3339\"}}, \
             optionally with \"to_seq\" and \"dry_run\": {e}"
        ))
    })?;
    let from = match (req.from_seq, req.from_time) {
        (Some(seq), None) => Seq(seq.max(1)),
        (None, Some(t)) => {
            // RFC 3339 requires the offset: a time without one is refused
            // rather than guessed to be UTC.
            let rfc3339 = &time::format_description::well_known::Rfc3339;
            let at = time::OffsetDateTime::parse(&t, rfc3339).map_err(|_| {
                ApiError::BadRequest(
                    "from_time must be RFC 3339 with its UTC offset, e.g. \
                     2026-12-03T08:00:00Z or 2026-12-03T09:00:00+01:00"
                        .into(),
                )
            })?;
            let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            admin
                .store
                .blocking(move |s| s.log().seq_at_time(ms))
                .await?
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of from_seq and from_time".into(),
            ))
        }
    };
    let head = *admin.head.borrow();
    if from.0 > head.0.saturating_add(1) {
        return Err(ApiError::BadRequest(format!(
            "from_seq {} is beyond the log head {} (at most head + 1)",
            from.0, head.0
        )));
    }
    // Past the head, an end changes nothing: the range is all there is.
    let to = match req.to_seq {
        Some(to) if to < from.0 => {
            return Err(ApiError::BadRequest(format!(
                "to_seq {to} is before the replay's first seq {}",
                from.0
            )))
        }
        Some(to) => Seq(to.min(head.0)),
        None => head,
    };
    let cursor = Seq(from.0 - 1);
    if req.dry_run {
        let sources = d.sources.clone();
        let (count, complete) = admin
            .store
            .blocking(move |s| {
                s.log()
                    .count_routed(from, to, |src| sources.contains(src), COUNT_CAP)
            })
            .await?;
        return Ok((
            StatusCode::OK,
            json!({
                "destination": d.name, "dry_run": true, "from_seq": from.0, "to_seq": to.0,
                "messages": count, "complete": complete,
            }),
        ));
    }
    let bounded = req.to_seq.is_some();
    let name = d.name.clone();
    let end = admin
        .store
        .blocking(move |s| {
            let end = std::cell::Cell::new(None);
            s.cursors()
                .rewind(s.destinations(), &name, cursor, |st, before| {
                    // Resume where delivery really was: past a bounded replay
                    // still in progress, that one's resume point.
                    let resume = st.replay_end.map_or(before, |e| e.resume.max(before));
                    // Only an end below it needs a jump back: up to there
                    // everything was delivered, after it all is pending anyway.
                    let new_end =
                        Some(ReplayEnd { to, resume }).filter(|e| bounded && e.to < e.resume);
                    end.set(new_end);
                    st.blocked_on = None;
                    st.replay_end = new_end;
                    // Every message of the range gets a fresh run of attempts.
                    st.retry_epoch = st.retry_epoch.wrapping_add(1);
                })?;
            Ok(end.get())
        })
        .await?;
    c.wake();
    tracing::info!(destination = %d.name, cursor = cursor.0, to_seq = end.map(|e| e.to.0), "replay requested by operator");
    Ok((
        StatusCode::OK,
        json!({ "destination": d.name, "cursor": cursor.0, "to_seq": to.0 }),
    ))
}

async fn dead_letters(admin: &Admin, name: &str, q: &Query) -> ApiResult {
    let entry = destination(admin, name)?;
    let (d, _) = &*entry;
    let (dest, after, limit) = (d.name.clone(), q.after_seq.unwrap_or_default(), q.limit);
    let list = admin
        .store
        .blocking(move |s| s.dead_letters().list(&dest, after, limit))
        .await?;
    let list: Vec<Value> = list
        .into_iter()
        .map(|(seq, dl)| {
            json!({
                "seq": seq.0,
                "at": crate::time::rfc3339(dl.at_ms),
                "attempts": dl.attempts,
                "last_error": dl.last_error,
            })
        })
        .collect();
    Ok((StatusCode::OK, json!(list)))
}

fn parse_seq(s: &str) -> Result<Seq, ApiError> {
    s.parse()
        .map(Seq)
        .map_err(|_| ApiError::BadRequest("seq must be a non-negative integer".into()))
}

async fn redeliver(admin: &Admin, name: &str, seq: &str) -> ApiResult {
    let entry = destination(admin, name)?;
    let (d, c) = &*entry;
    let seq = parse_seq(seq)?;
    if admin.store.dead_letters().get(&d.name, seq)?.is_none() {
        return Err(ApiError::NotFound("dead letter"));
    }
    let stored = admin.store.blocking(move |s| s.log().message(seq)).await?;
    if stored.is_none() {
        return Err(ApiError::NotFound("message"));
    }
    c.request_redelivery(seq);
    tracing::info!(destination = %d.name, seq = seq.0, "redelivery requested by operator");
    Ok((
        StatusCode::ACCEPTED,
        json!({ "destination": d.name, "seq": seq.0, "queued": true }),
    ))
}

/// Every dead letter of the destination again, oldest first (each one
/// attempt, as a single redelivery is); answers how many were queued.
async fn redeliver_all(admin: &Admin, name: &str) -> ApiResult {
    let entry = destination(admin, name)?;
    let (d, c) = &*entry;
    let dest = d.name.clone();
    let seqs = admin
        .store
        .blocking(move |s| s.dead_letters().seqs(&dest))
        .await?;
    let queued = c.request_redeliveries(seqs);
    tracing::info!(destination = %d.name, queued, "redelivery of every dead letter requested by operator");
    Ok((
        StatusCode::ACCEPTED,
        json!({ "destination": d.name, "queued": queued }),
    ))
}

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
    let list = admin
        .store
        .blocking(move |s| {
            s.log()
                .list_messages(source.as_ref(), event_type.as_deref(), after, limit)
        })
        .await?;
    let list: Vec<Value> = list.iter().map(|m| Value::Object(meta_json(m))).collect();
    Ok((StatusCode::OK, json!(list)))
}

async fn message(admin: &Admin, seq: &str) -> ApiResult {
    let seq = parse_seq(seq)?;
    let m = admin
        .store
        .blocking(move |s| s.log().message(seq))
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let mut per_dest = serde_json::Map::new();
    for entry in admin.destinations().iter() {
        let (d, _) = &**entry;
        if !d.sources.contains(&m.source) {
            continue;
        }
        let status = if admin.store.dead_letters().get(&d.name, seq)?.is_some() {
            "dead"
        } else if !d.rules.is_empty() && d.rules.decide(seq, &m) == Decision::Skip {
            // Today's rules: what a delivery (or a replay) would do now.
            "skipped"
        } else if admin.store.cursors().get(&d.name)? >= seq {
            "delivered"
        } else {
            "pending"
        };
        let name = d.name.clone();
        let attempts = admin
            .store
            .blocking(move |s| s.attempts().list(&name, seq))
            .await?;
        let attempts: Vec<Value> = attempts
            .into_iter()
            .map(|a| {
                json!({
                    "at": crate::time::rfc3339(a.at_ms),
                    "status": a.status,
                    "latency_ms": a.latency_ms,
                    "error": a.error,
                })
            })
            .collect();
        per_dest.insert(
            d.name.to_string(),
            json!({ "status": status, "attempts": attempts }),
        );
    }
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
    let entry = destination(admin, name)?;
    let (d, _) = &*entry;
    let seq = parse_seq(seq)?;
    let m = admin
        .store
        .blocking(move |s| s.log().message(seq))
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
