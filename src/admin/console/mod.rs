//! The web console under `/ui/` on the admin listener: server-rendered
//! HTML (maud), a stylesheet and one small script compiled into the
//! binary. Reading works without JavaScript; the script only refreshes
//! live figures and asks before destructive actions.
//!
//! Owns: the console's routes, its sessions and CSRF tokens
//! ([`session`]), its pages ([`pages`]), the message browser's query
//! ([`browse`]), the deliveries-per-minute sampler ([`rate`]) and its
//! assets. Gathers nothing itself: every read and action goes through
//! `admin::ops`, the same code as the JSON API, so the two cannot
//! disagree. Must not touch the log, the delivery workers or the config
//! beyond what `ops` does.
//!
//! Security: with `[admin]` token set, `/ui/login` takes it once (compared
//! in constant time) and sets an `HttpOnly`, `SameSite=Strict` session
//! cookie; the token never appears in a URL or a page. Without a token
//! the console is open, as the API is, but still hands out a session for
//! its CSRF token. Every action is a POST that must come from this origin
//! (`Sec-Fetch-Site`/`Origin`) and carry the session's CSRF token. Every
//! answer carries a CSP without inline script.

mod browse;
mod pages;
pub mod rate;
pub(super) mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use maud::Markup;

use super::api::{parse_seq, ApiError};
use super::{ops, Admin, AdminBody};
use crate::backend::Backend;
use crate::model::Seq;
use pages::{Ctx, DestRow};

/// The console's own state on the admin side.
#[derive(Debug)]
pub struct Console {
    sessions: session::Sessions,
    /// Deliveries per minute by destination.
    pub rates: rate::Rates,
    /// `storage.max_disk_bytes`, swapped by a reload.
    budget: AtomicU64,
    /// The admin listener is HTTPS: cookies get `Secure`, origins `https`.
    secure: bool,
}

impl Console {
    /// The console of a relay whose admin listener is HTTPS when `secure`.
    pub fn new(budget: u64, secure: bool) -> Console {
        Console {
            sessions: session::Sessions::default(),
            rates: rate::Rates::default(),
            budget: AtomicU64::new(budget),
            secure,
        }
    }

    /// Takes the disk budget of a (re)loaded config.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
    }
}

/// The stylesheet and the script, compiled in.
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// No inline script or style anywhere; nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Largest form the console reads.
const MAX_FORM: usize = 16 * 1024;

/// Dead letters and recent attempts shown on a destination page.
const DEST_ROWS: usize = 50;

/// Most messages the replay confirm page counts (tens of milliseconds);
/// past that it says how far the count went and the most it can be, so no
/// page reads the whole log. The API's dry run counts further.
const CONFIRM_COUNT_CAP: usize = 50_000;

type Html = Response<Full<Bytes>>;

/// Samples every destination's delivered counter for [`rate`], until `stop`.
pub async fn sample_rates(admin: std::sync::Arc<Admin>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(rate::EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for e in admin.destinations().iter() {
            let (d, c) = &**e;
            admin
                .console
                .rates
                .sample(d.name.as_str(), c.counters().0, now);
        }
    }
}

/// Routes one request under `/ui` (and `/`, which leads there).
pub async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<AdminBody> {
    let resp = route(admin, req).await;
    secure_headers(resp).map(BodyExt::boxed_unsync)
}

/// The headers every console answer carries.
fn secure_headers(mut resp: Html) -> Html {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

fn html(status: StatusCode, page: Markup) -> Html {
    let mut resp = Response::new(Full::new(Bytes::from(page.into_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages hold webhook data and the CSRF token: no cache keeps them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect(to: &str) -> Html {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Html {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The URL carries the version: a new build is a new URL.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

fn with_cookie(mut resp: Html, cookie: &str) -> Html {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A `403` page saying `why`.
fn forbidden(ctx: Option<&Ctx>, why: &str) -> Html {
    html(
        StatusCode::FORBIDDEN,
        pages::error(ctx, StatusCode::FORBIDDEN, why),
    )
}

fn error_page(ctx: Option<&Ctx>, e: ApiError) -> Html {
    let status = e.status();
    if let ApiError::Store(err) = &e {
        tracing::error!(error = %err, "console request failed in storage");
    }
    html(status, pages::error(ctx, status, &e.to_string()))
}

/// Whether a POST comes from a page of this console: a browser says so in
/// `Sec-Fetch-Site` (or, older ones, in `Origin`); a request with neither
/// is not from a browser's cross-site form, and still needs the CSRF token.
fn same_origin(req: &Request<Incoming>, secure: bool) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scheme = if secure { "https://" } else { "http://" };
    !host.is_empty() && origin.strip_prefix(scheme) == Some(host)
}

/// A request's form fields (`application/x-www-form-urlencoded`).
struct Form(Vec<(String, String)>);

impl Form {
    async fn read(req: Request<Incoming>) -> Result<Form, ApiError> {
        let body = Limited::new(req.into_body(), MAX_FORM)
            .collect()
            .await
            .map_err(|_| ApiError::BadRequest("form unreadable or over 16 KiB".into()))?
            .to_bytes();
        Ok(Form(form_urlencoded::parse(&body).into_owned().collect()))
    }

    /// The field `k`, empty when absent.
    fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The path below `/ui`, split.
fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix("/ui")
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// One query parameter.
fn query_param(req: &Request<Incoming>, k: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.into_owned())
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Html {
    let path = req.uri().path().to_owned();
    if path == "/" || path == "/ui" {
        return redirect("/ui/");
    }
    let segs = segments(&path);
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["assets", "console.css"]) => return asset("text/css; charset=utf-8", CSS),
        (&Method::GET, ["assets", "console.js"]) => {
            return asset("text/javascript; charset=utf-8", JS)
        }
        (_, ["login"]) => return login(admin, req).await,
        _ => {}
    }
    // HTTP/2 browsers may split cookies over several `cookie` fields.
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let cookies = Some(cookies.as_str()).filter(|c| !c.is_empty());
    let (session_id, session, new_cookie) = match admin.console.sessions.find(cookies) {
        Some((id, s)) => (id, s, None),
        None if admin.token.is_some() => {
            return if method == Method::GET {
                redirect("/ui/login")
            } else {
                forbidden(None, "Log in first.")
            };
        }
        // Open console: a session only to carry the CSRF token. A POST
        // must come with the one its form was served with.
        None if method == Method::GET => {
            let (id, s) = admin.console.sessions.create();
            let cookie = session::cookie(&id, admin.console.secure);
            (id, s, Some(cookie))
        }
        None => {
            return forbidden(
                None,
                "Your session has expired: reload the page and try again.",
            )
        }
    };
    let ctx = Ctx {
        csrf: session.csrf.clone(),
        logout: admin.token.is_some(),
    };
    let resp = if method == Method::POST {
        if !same_origin(&req, admin.console.secure) {
            tracing::warn!(path, "console POST from another site refused");
            return forbidden(
                Some(&ctx),
                "This action must come from the console's own pages.",
            );
        }
        let segs: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        match Form::read(req).await {
            Ok(form) if session.csrf_matches(form.get("csrf")) => {
                post(admin, &ctx, &session_id, &segs, &form).await
            }
            Ok(_) => {
                tracing::warn!(path, "console POST without its CSRF token refused");
                forbidden(
                    Some(&ctx),
                    "The form's security token is missing or stale: reload the page and try again.",
                )
            }
            Err(e) => error_page(Some(&ctx), e),
        }
    } else if method == Method::GET {
        get(admin, &ctx, &segs, &req).await
    } else {
        let mut resp = error_page(Some(&ctx), ApiError::MethodNotAllowed("GET, POST"));
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        resp
    };
    match new_cookie {
        Some(c) => with_cookie(resp, &c),
        None => resp,
    }
}

/// `GET`/`POST /ui/login`.
async fn login(admin: &Admin, req: Request<Incoming>) -> Html {
    let Some(token) = &admin.token else {
        // Nothing to log in to.
        return redirect("/ui/");
    };
    if req.method() == Method::GET {
        return html(StatusCode::OK, pages::login(false));
    }
    if req.method() != Method::POST {
        return error_page(None, ApiError::MethodNotAllowed("GET, POST"));
    }
    if !same_origin(&req, admin.console.secure) {
        return forbidden(None, "Log in from the console's own page.");
    }
    let form = match Form::read(req).await {
        Ok(f) => f,
        Err(e) => return error_page(None, e),
    };
    if !session::token_matches(form.get("token").as_bytes(), token) {
        tracing::warn!("console login with a wrong token");
        return html(StatusCode::UNAUTHORIZED, pages::login(true));
    }
    let (id, _) = admin.console.sessions.create();
    tracing::info!("console login");
    with_cookie(
        redirect("/ui/"),
        &session::cookie(&id, admin.console.secure),
    )
}

async fn get(admin: &Admin, ctx: &Ctx, segs: &[&str], req: &Request<Incoming>) -> Html {
    let notice = pages::notice(query_param(req, "notice").as_deref());
    let page = match segs {
        [] => overview(admin, ctx).await,
        ["destinations", name] => {
            let after = query_param(req, "dl_after").and_then(|v| v.parse().ok());
            destination(admin, ctx, name, Seq(after.unwrap_or(0)), notice).await
        }
        ["destinations", name, "replay"] => replay_confirm(admin, ctx, name, req).await,
        ["messages"] => messages(admin, ctx, req.uri().query()).await,
        ["messages", seq] => message(admin, ctx, seq, notice).await,
        _ => Err(ApiError::NotFound("page")),
    };
    match page {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(ctx), e),
    }
}

async fn post(admin: &Admin, ctx: &Ctx, session_id: &str, segs: &[String], form: &Form) -> Html {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let done = match segs.as_slice() {
        ["logout"] => {
            admin.console.sessions.remove(session_id);
            return with_cookie(redirect("/ui/login"), &session::cookie_cleared());
        }
        ["destinations", name, "pause"] => ops::set_paused(admin, name, true)
            .await
            .map(|_| format!("/ui/destinations/{name}?notice=paused")),
        ["destinations", name, "resume"] => ops::set_paused(admin, name, false)
            .await
            .map(|_| format!("/ui/destinations/{name}?notice=resumed")),
        ["destinations", name, "replay"] => replay(admin, name, form).await,
        ["destinations", name, "dead-letters", "redeliver"] => ops::redeliver_all(admin, name)
            .await
            .map(|_| format!("/ui/destinations/{name}?notice=redeliver-all")),
        ["destinations", name, "dead-letters", seq, "redeliver"] => match parse_seq(seq) {
            Ok(seq) => ops::redeliver(admin, name, seq)
                .await
                .map(|_| format!("/ui/destinations/{name}?notice=redeliver")),
            Err(e) => Err(e),
        },
        ["messages", seq, "redeliver"] => match parse_seq(seq) {
            Ok(seq) => ops::redeliver(admin, form.get("destination"), seq)
                .await
                .map(|_| format!("/ui/messages/{}?notice=redeliver", seq.0)),
            Err(e) => Err(e),
        },
        _ => Err(ApiError::NotFound("action")),
    };
    match done {
        // Post/redirect/get: a reload does not repeat the action.
        Ok(to) => redirect(&to),
        Err(e) => error_page(Some(ctx), e),
    }
}

/// Each destination's view with its deliveries per minute.
async fn dest_row(admin: &Admin, entry: &super::DestEntry) -> Result<DestRow, ApiError> {
    let view = ops::describe(admin, entry).await?;
    let delivered = entry.1.counters().0;
    let per_minute =
        admin
            .console
            .rates
            .per_minute(entry.0.name.as_str(), delivered, Instant::now());
    Ok(DestRow { view, per_minute })
}

async fn overview(admin: &Admin, ctx: &Ctx) -> Result<Markup, ApiError> {
    let mut rows = Vec::new();
    for e in admin.destinations().iter() {
        rows.push(dest_row(admin, e).await?);
    }
    let sources = ops::sources(admin);
    // sled reads file metadata for this: off the async threads. A fleet
    // has no disk of its own to show.
    let (used, first) = match admin.backend.sled() {
        Some(store) => (
            store.blocking(|s| s.size_on_disk()).await.ok(),
            store.blocking(|s| s.log().first_seq()).await.ok().flatten(),
        ),
        None => (None, None),
    };
    let disk = pages::Disk {
        used,
        budget: admin.console.budget.load(Ordering::Relaxed),
        head: admin.head_now().await,
        first,
    };
    Ok(pages::overview(ctx, &rows, &sources, &disk))
}

async fn destination(
    admin: &Admin,
    ctx: &Ctx,
    name: &str,
    dl_after: Seq,
    notice: Option<&'static str>,
) -> Result<Markup, ApiError> {
    let entry = ops::find_destination(admin, name)?;
    let row = dest_row(admin, &entry).await?;
    let dest = entry.0.name.clone();
    let attempts = match &admin.backend {
        Backend::Sled(store) => {
            store
                .blocking(move |s| s.attempts().recent(&dest, DEST_ROWS))
                .await?
        }
        Backend::Fleet(fleet) => fleet
            .recent_attempts(&dest, DEST_ROWS)
            .await
            .map_err(crate::store::StoreError::from)?,
    };
    // One more than shown says whether there is a next page.
    let mut dead = ops::dead_letters(admin, name, dl_after, DEST_ROWS + 1).await?;
    let dead_next = if dead.len() > DEST_ROWS {
        dead.truncate(DEST_ROWS);
        dead.last().map(|d| Seq(d.seq))
    } else {
        None
    };
    Ok(pages::destination(
        ctx,
        &pages::DestPage {
            row: &row,
            attempts: &attempts,
            dead: &dead,
            dead_next,
            notice,
        },
    ))
}

/// The replay form's fields, as the API's request.
fn replay_request(fields: &[(&'static str, String)]) -> Result<ops::ReplayRequest, ApiError> {
    let mut r = ops::ReplayRequest::default();
    for (k, v) in fields {
        match *k {
            "from_seq" => r.from_seq = Some(parse_seq(v)?.0),
            "to_seq" => r.to_seq = Some(parse_seq(v)?.0),
            "from_time" => r.from_time = Some(v.clone()),
            _ => {}
        }
    }
    Ok(r)
}

/// The non-empty replay fields among `get(k)`.
fn replay_fields(get: impl Fn(&str) -> String) -> Vec<(&'static str, String)> {
    ["from_seq", "from_time", "to_seq"]
        .into_iter()
        .map(|k| (k, get(k).trim().to_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// `GET …/replay?from_seq=|from_time=[&to_seq=]`: the dry run's count and
/// a form to confirm.
async fn replay_confirm(
    admin: &Admin,
    ctx: &Ctx,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Markup, ApiError> {
    let fields = replay_fields(|k| query_param(req, k).unwrap_or_default());
    let plan = ops::plan_replay(admin, name, &replay_request(&fields)?).await?;
    let (count, complete) = ops::count_replay(admin, &plan, CONFIRM_COUNT_CAP).await?;
    Ok(pages::replay_confirm(
        ctx,
        &pages::ReplayConfirm {
            destination: &plan.entry.0.name,
            from: plan.from,
            to: plan.to,
            count,
            at_most: at_most((plan.from, plan.to), count, complete, CONFIRM_COUNT_CAP),
            fields: &fields,
        },
    ))
}

/// The most messages a replay of `[from, to]` can send when its count of
/// `count` stopped at `cap` heads (`None`: the count is complete). Every
/// seq past the counted ones may count; retention gaps only make it fewer.
fn at_most((from, to): (Seq, Seq), count: u64, complete: bool, cap: usize) -> Option<u64> {
    let seqs = (to.0 + 1).saturating_sub(from.0);
    (!complete).then(|| count + seqs.saturating_sub(cap as u64))
}

/// `POST …/replay`: the confirmed replay.
async fn replay(admin: &Admin, name: &str, form: &Form) -> Result<String, ApiError> {
    let fields = replay_fields(|k| form.get(k).to_owned());
    let plan = ops::plan_replay(admin, name, &replay_request(&fields)?).await?;
    ops::apply_replay(admin, &plan).await?;
    Ok(format!("/ui/destinations/{name}?notice=replayed"))
}

async fn messages(admin: &Admin, ctx: &Ctx, query: Option<&str>) -> Result<Markup, ApiError> {
    let f = browse::Filters::parse(query);
    let sources: Vec<_> = admin
        .sources()
        .iter()
        .map(|(s, _)| s.name.clone())
        .collect();
    let dests = browse::destination_names(admin);
    let page = match browse::search(admin, &f).await {
        Ok(p) => Ok(p),
        // A filter the operator got wrong is said on the page, with the form.
        Err(ApiError::BadRequest(m)) => Err(m),
        Err(ApiError::NotFound(what)) => Err(format!("{what} not found")),
        Err(e) => return Err(e),
    };
    Ok(pages::messages(
        ctx,
        &f,
        &sources,
        &dests,
        page.as_ref().map_err(Clone::clone),
    ))
}

async fn message(
    admin: &Admin,
    ctx: &Ctx,
    seq: &str,
    notice: Option<&'static str>,
) -> Result<Markup, ApiError> {
    let seq = parse_seq(seq)?;
    let (m, deliveries) = ops::message_detail(admin, seq).await?;
    Ok(pages::message(ctx, seq, &m, &deliveries, notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_stopped_count_is_bounded_by_the_seqs_it_did_not_read() {
        assert_eq!(at_most((Seq(1), Seq(100)), 40, true, 50), None);
        // 50 of 100 seqs read, 40 routed: the other 50 may all be.
        assert_eq!(at_most((Seq(1), Seq(100)), 40, false, 50), Some(90));
        assert_eq!(at_most((Seq(51), Seq(60)), 10, false, 50), Some(10));
    }
}
