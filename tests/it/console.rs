//! The web console (`/ui/`): login and session cookies, CSRF and origin
//! checks, security headers and escaping over plain HTTP; then the real
//! binary driven by headless Chromium through WebDriver (skipped, saying
//! why, where chromium or chromedriver is missing; CI installs both).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::requests::send;
use crate::support::*;

const TOKEN: &str = "console-test-token";

/// A body and headers a hostile sender could post: each would run script
/// if the console put it in a page unescaped.
const EVIL_BODY: &str =
    r#"{"type":"<script>alert('type')</script>","note":"<img src=x onerror=alert(1)>"}"#;
const EVIL_HEADER: &str = "<script>alert('header')</script><img src=x onerror=alert(2)>";

/// Source `s` (event type from `.body.type`) routed to `d` at `url`,
/// giving up after one attempt so failures become dead letters at once.
fn config(url: &str) -> RelayConfig {
    RelayConfig::new()
        .source(Source::new("s", "/s").set("event_type", ".body.type"))
        .destination(
            Dest::new("d", url)
                .sources(["s"])
                .retry(Retry::every("10ms", "20ms").attempts(1)),
        )
}

/// A browser's view of the console over plain HTTP: one session cookie.
struct Visitor {
    admin: SocketAddr,
    cookie: Option<String>,
}

impl Visitor {
    fn new(admin: SocketAddr) -> Visitor {
        Visitor {
            admin,
            cookie: None,
        }
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        if !form.is_empty() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let a = send(&client(), req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        // Keep the session cookie as a browser would.
        if let Some(set) = a.headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or("");
            self.cookie = pair
                .split_once('=')
                .filter(|(_, v)| !v.is_empty())
                .map(|_| pair.to_owned());
        }
        a
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.request(Method::GET, path, &[], &[]).await
    }

    /// POSTs `form` as a same-origin page of the console would.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let origin = format!("http://{}", self.admin);
        let headers = [
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        self.request(Method::POST, path, &headers, form).await
    }

    /// Logs in with `token`; the answer.
    async fn login(&mut self, token: &str) -> Answer {
        self.post("/ui/login", &[("token", token)]).await
    }
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("the page has a form with a CSRF token");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn location(a: &Answer) -> &str {
    a.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// POSTs the hostile webhook to `relay`'s source `s`; its seq.
async fn post_evil(relay: &TestRelay) -> u64 {
    let a = post(
        &client(),
        &relay.url("/s?q=%3Cscript%3Ealert('query')%3C/script%3E"),
        &[
            ("content-type", "application/json"),
            ("x-evil", EVIL_HEADER),
        ],
        EVIL_BODY,
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    a.json["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn login_sets_a_strict_http_only_session_cookie_and_the_token_stays_out_of_pages() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/")).token(TOKEN)).await;
    let mut v = Visitor::new(relay.admin);

    let root = v.get("/").await;
    assert_eq!(
        (root.status, location(&root)),
        (StatusCode::SEE_OTHER, "/ui/")
    );
    let ui = v.get("/ui/").await;
    assert_eq!(
        (ui.status, location(&ui)),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert!(v.cookie.is_none(), "no session before logging in");
    let form = v.get("/ui/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text().contains(r#"type="password""#));

    let wrong = v.login("not-the-token").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(v.cookie.is_none());

    let ok = v.login(TOKEN).await;
    assert_eq!((ok.status, location(&ok)), (StatusCode::SEE_OTHER, "/ui/"));
    let set = ok.headers["set-cookie"].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token");

    let page = v.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    let h = &page.headers;
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let text = page.text();
    assert!(text.contains(r#"data-destination="d""#));
    assert!(!text.contains(TOKEN));
    assert!(
        !text.contains("<script>") && !text.contains(" onclick="),
        "no inline script: {text}"
    );
    let js = v.get("/ui/assets/console.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    // Logging out ends the session on the server, not only in the browser.
    let session = v.cookie.clone();
    let out = v.post("/ui/logout", &[("csrf", &csrf_of(&text))]).await;
    assert_eq!(
        (out.status, location(&out)),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    v.cookie = session;
    assert_eq!(v.get("/ui/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn webhook_body_headers_query_and_event_type_are_escaped_in_every_page() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    let seq = post_evil(&relay).await;
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    let mut v = Visitor::new(relay.admin);

    let msg = v.get(&format!("/ui/messages/{seq}")).await;
    assert_eq!(msg.status, StatusCode::OK);
    let list = v.get("/ui/messages").await;
    let by_type = v
        .get("/ui/messages?event_type=%3Cscript%3Ealert('type')%3C%2Fscript%3E")
        .await;
    for (what, page) in [("message", &msg), ("list", &list), ("by type", &by_type)] {
        let text = page.text();
        assert!(!text.contains("<script>alert"), "{what}: {text}");
        assert!(!text.contains("<img src=x"), "{what}: {text}");
        assert!(
            text.contains("&lt;script&gt;alert(&#39;type&#39;)&lt;/script&gt;")
                || text.contains("&lt;script&gt;alert('type')&lt;/script&gt;"),
            "{what}: the event type is shown, escaped: {text}"
        );
    }
    let text = msg.text();
    // The header, the body (pretty-printed JSON, as text) and the query.
    assert!(
        text.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{text}"
    );
    assert!(
        text.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{text}"
    );
    // The query is kept as it came, percent-encoded (a raw `<` is not
    // valid in a request line), and shown so.
    assert!(
        text.contains("q=%3Cscript%3Ealert('query')%3C/script%3E"),
        "{text}"
    );
    assert!(
        text.contains("\n  &quot;note&quot;: "),
        "pretty-printed: {text}"
    );
    // The search filled back into the form stays an attribute value.
    assert!(
        by_type.text().contains(r#"data-seq=""#),
        "found by its type"
    );
}

#[tokio::test]
async fn actions_need_the_session_csrf_token_and_a_same_origin_request() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    // The console is open without a token, but still hands out a session.
    let mut v = Visitor::new(relay.admin);
    let page = v.get("/ui/destinations/d").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        v.cookie.is_some(),
        "an open console sets a session cookie for CSRF"
    );
    let csrf = csrf_of(&page.text());
    let paused = || async {
        let (_, d) = relay.api_get("/api/v1/destinations/d").await;
        d["state"] == "paused"
    };

    let no_token = v.post("/ui/destinations/d/pause", &[]).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let wrong = v
        .post("/ui/destinations/d/pause", &[("csrf", "0123")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross_site = v
        .request(
            Method::POST,
            "/ui/destinations/d/pause",
            &[("sec-fetch-site", "cross-site")],
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let other_origin = v
        .request(
            Method::POST,
            "/ui/destinations/d/pause",
            &[("origin", "http://evil.example")],
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(other_origin.status, StatusCode::FORBIDDEN);
    // Another visitor's session does not take this one's token.
    let mut other = Visitor::new(relay.admin);
    other.get("/ui/").await;
    let stolen = other
        .post("/ui/destinations/d/pause", &[("csrf", &csrf)])
        .await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);
    assert!(!paused().await, "no refused POST changed anything");

    let ok = v.post("/ui/destinations/d/pause", &[("csrf", &csrf)]).await;
    assert_eq!(
        (ok.status, location(&ok)),
        (StatusCode::SEE_OTHER, "/ui/destinations/d?notice=paused")
    );
    assert!(paused().await);
    let ok = v
        .post("/ui/destinations/d/resume", &[("csrf", &csrf)])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(!paused().await);
    // A GET changes nothing.
    let get = v.get("/ui/destinations/d/pause").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn replay_shows_the_dry_run_count_before_the_post_that_sends_again() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    let bodies = (0..5).map(|i| format!(r#"{{"type":"t{i}"}}"#));
    post_ok(
        &relay.url("/s"),
        &[("content-type", "application/json")],
        bodies,
    )
    .await;
    rx.wait_delivered(5, Duration::from_secs(10)).await;
    let mut v = Visitor::new(relay.admin);

    let confirm = v.get("/ui/destinations/d/replay?from_seq=2&to_seq=4").await;
    assert_eq!(confirm.status, StatusCode::OK);
    let text = confirm.text();
    assert!(
        text.contains(r#"<strong id="replay-count">3</strong>"#),
        "{text}"
    );
    assert_eq!(rx.count(), 5, "the confirm page sends nothing");
    let bad = v.get("/ui/destinations/d/replay?from_seq=99").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("beyond the log head"));

    let csrf = csrf_of(&text);
    let done = v
        .post(
            "/ui/destinations/d/replay",
            &[("csrf", &csrf), ("from_seq", "2"), ("to_seq", "4")],
        )
        .await;
    assert_eq!(
        (done.status, location(&done)),
        (StatusCode::SEE_OTHER, "/ui/destinations/d?notice=replayed")
    );
    let got = rx.wait_delivered(8, Duration::from_secs(10)).await;
    let again: Vec<u64> = got[5..].iter().map(|r| r.seq()).collect();
    assert_eq!(again, vec![2, 3, 4]);
}

#[tokio::test]
async fn the_message_browser_filters_newest_first_and_pages_on() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/"))).await;
    // 120 messages: types a and b alternate; every tenth says "needle".
    let bodies = (1..=120).map(|i| {
        let t = if i % 2 == 0 { "b" } else { "a" };
        let word = if i % 10 == 0 { "needle" } else { "hay" };
        format!(r#"{{"type":"{t}","n":{i},"w":"{word}"}}"#)
    });
    post_ok(
        &relay.url("/s"),
        &[("content-type", "application/json")],
        bodies,
    )
    .await;
    rx.wait_delivered(120, Duration::from_secs(20)).await;
    let mut v = Visitor::new(relay.admin);
    let seqs = |a: &Answer| -> Vec<u64> {
        let text = a.text();
        text.split(r#"<tr data-seq=""#)
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect()
    };

    let page1 = v.get("/ui/messages").await;
    let first = seqs(&page1);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], 120, "newest first");
    assert!(first.windows(2).all(|w| w[0] > w[1]));
    // The "Older" link goes on below the last one shown.
    let text = page1.text();
    let at = text.find(r#"id="older" href=""#).expect("an Older link");
    let href = &text[at + r#"id="older" href=""#.len()..];
    let href = href[..href.find('"').unwrap()].replace("&amp;", "&");
    assert_eq!(seqs(&v.get(&href).await)[0], 70);

    let b = seqs(
        &v.get("/ui/messages?event_type=b&from_seq=11&to_seq=20")
            .await,
    );
    assert_eq!(b, vec![20, 18, 16, 14, 12]);
    let needles = seqs(&v.get("/ui/messages?body=needle").await);
    assert_eq!(needles, (1..=12).rev().map(|i| i * 10).collect::<Vec<_>>());
    let delivered = seqs(
        &v.get("/ui/messages?destination=d&status=delivered&to_seq=3")
            .await,
    );
    assert_eq!(delivered, vec![3, 2, 1]);
    let dead = seqs(&v.get("/ui/messages?destination=d&status=dead").await);
    assert!(dead.is_empty());
    let wrong = v.get("/ui/messages?status=dead").await;
    assert!(wrong.text().contains("a status filter needs a destination"));
    let future = "2999-01-01T00:00:00Z";
    let none = seqs(&v.get(&format!("/ui/messages?from_time={future}")).await);
    assert!(none.is_empty());
}

// ---------------------------------------------------------------------------
// The browser test.

/// `chromedriver` on an ephemeral port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `cmd --version` runs.
fn runs(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Chromium binary, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| runs(c))
}

/// Starts chromedriver and waits until it answers `/status` (no fixed
/// sleep). The port is free when asked and taken right after; should
/// another process take it in between, chromedriver exits and the next
/// try asks for another port.
async fn start_driver() -> Driver {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let req = Request::get(&status).body(Full::new(Bytes::new())).unwrap();
            if matches!(send(&client(), req).await, Ok(a) if a.status == StatusCode::OK) {
                return driver;
            }
            if driver.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("chromedriver did not come up on any of three ports");
}

/// chromedriver's browser log (`POST /session/{id}/se/log`), which holds
/// the page's console errors, CSP violations and failed loads.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The browser log's entries at level SEVERE (errors), as text.
async fn severe_logs(b: &fantoccini::Client) -> Vec<String> {
    let log = b.issue_cmd(BrowserLog).await.expect("the browser log");
    log.as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the page ran its script without errors and logged none.
async fn assert_clean(b: &fantoccini::Client, when: &str) {
    let root = b.find(fantoccini::Locator::Css("html")).await.unwrap();
    // The script is deferred: wait for it to have run.
    let mut ready = None;
    for _ in 0..200 {
        ready = root.attr("data-js").await.unwrap();
        if ready.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "{when}: the console script ran"
    );
    let errors = root.attr("data-js-errors").await.unwrap();
    let last = root.attr("data-js-last-error").await.unwrap();
    assert_eq!(errors, None, "{when}: script errors, last {last:?}");
    let severe = severe_logs(b).await;
    assert!(severe.is_empty(), "{when}: browser errors {severe:?}");
}

/// The text of `css`, read again if the page's refresh replaced the
/// element between finding it and reading it.
async fn text_of(b: &fantoccini::Client, css: &str) -> String {
    wait_for(
        &format!("the text of {css}"),
        Duration::from_secs(10),
        || async {
            b.find(fantoccini::Locator::Css(css))
                .await
                .ok()?
                .text()
                .await
                .ok()
        },
    )
    .await
}

/// Polls: reloads the page until `css` has text `want` (the relay works
/// in the background; the page shows what is there when loaded).
async fn wait_text(b: &fantoccini::Client, css: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match b.find(fantoccini::Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.trim() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} never read {want:?} (last {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.refresh().await.unwrap();
    }
}

/// Writes a screenshot to `$HOOKRELAY_SCREENSHOTS/console-NAME.png` when
/// that variable names a directory (`HOOKRELAY_SCREENSHOTS=docs` from the
/// repository's root refreshes the README's pictures).
async fn screenshot(b: &fantoccini::Client, name: &str) {
    let Some(dir) = std::env::var_os("HOOKRELAY_SCREENSHOTS") else {
        return;
    };
    let png = b.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("console-{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_logs_in_redelivers_a_dead_letter_pauses_resumes_and_searches() {
    // CI installs both (.ci/run): there, a missing browser is a failure,
    // not a silent skip of the console's only browser test.
    let skip = |why: &str| {
        assert!(std::env::var_os("CI").is_none(), "CI=true but {why}");
        eprintln!("skipped: {why}");
    };
    let Some(chrome) = chromium() else {
        skip("no chromium on PATH (apt-get install chromium chromium-driver)");
        return;
    };
    if !runs("chromedriver") {
        skip("no chromedriver on PATH (apt-get install chromium-driver)");
        return;
    }
    let open = Arc::new(AtomicBool::new(false));
    let rx = Receiver::gated(&open, StatusCode::SERVICE_UNAVAILABLE).await;
    // A second destination that takes everything, so the overview (and
    // its screenshot) shows a healthy one beside the failing one.
    let audit = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file = config(&rx.url("/hook"))
        .source(Source::new("other", "/other").set("event_type", ".body.type"))
        .destination(Dest::new("audit", &audit.url("/audit")).sources(["s", "other"]))
        .token(TOKEN)
        .write(dir.path());
    let relay = RelayProcess::start(&file).await;
    let c = client();
    let json = [("content-type", "application/json")];
    // One webhook the destination refuses (a dead letter after one
    // attempt), and a few of two types to search.
    let headers = [json[0], ("x-evil", EVIL_HEADER)];
    let evil = post(
        &c,
        &format!("{}?q=%3Cb%3E", relay.url("/s")),
        &headers,
        EVIL_BODY,
    )
    .await
    .unwrap();
    assert_eq!(evil.status, StatusCode::OK);
    let dead_seq = evil.json["seq"].as_u64().unwrap();
    wait_for("the dead letter", Duration::from_secs(20), || async {
        let a = json_request(
            Method::GET,
            &relay.admin_url("/api/v1/destinations/d"),
            None,
            Some(TOKEN),
        )
        .await;
        (a.1["dead_letters"] == 1).then_some(())
    })
    .await;
    for t in ["invoice.paid", "invoice.paid", "customer.created"] {
        let body = format!(r#"{{"type":"{t}","amount":42}}"#);
        post(&c, &relay.url("/other"), &json, body).await.unwrap();
    }

    let driver = start_driver().await;
    let mut caps = serde_json::Map::new();
    let binary = which(chrome);
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    caps.insert(
        "goog:loggingPrefs".into(),
        serde_json::json!({ "browser": "ALL" }),
    );
    let b =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a WebDriver session with headless Chromium");
    let ui = |p: &str| relay.admin_url(&format!("/ui{p}"));
    use fantoccini::Locator::{Css, Id};

    // Log in.
    b.goto(&relay.admin_url("/")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/ui/login"));
    assert_clean(&b, "login page").await;
    b.find(Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.find(Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Css("#destinations")).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/ui/");

    // The overview shows the destination failing, with its last error.
    wait_text(&b, r#"tr[data-destination="d"] .badge"#, "failing").await;
    let row = text_of(&b, r#"tr[data-destination="d"]"#).await;
    assert!(row.contains("503"));
    assert_clean(&b, "overview").await;
    screenshot(&b, "overview").await;
    // The script refreshes the counters in place: one more webhook shows
    // up without a reload.
    let received = r#"tr[data-source="other"] td.num"#;
    assert_eq!(text_of(&b, received).await, "3");
    let body = r#"{"type":"customer.created"}"#;
    post(&c, &relay.url("/other"), &json, body).await.unwrap();
    wait_for(
        "the received count to refresh",
        Duration::from_secs(20),
        || async {
            let cell = b.find(Css(received)).await.ok()?;
            (cell.text().await.ok()? == "4").then_some(())
        },
    )
    .await;
    let root = b.find(Css("html")).await.unwrap();
    assert!(root.attr("data-refreshed").await.unwrap().is_some());

    // Its page lists the dead letter; open it.
    b.find(Css(r#"tr[data-destination="d"] a"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Css("#dead-letters")).await.unwrap();
    let dl = format!(r#"#dead-letters tr[data-seq="{dead_seq}"] a"#);
    assert_clean(&b, "destination").await;
    screenshot(&b, "destination").await;
    // "Redeliver all" asks first (the script's confirm); saying no sends nothing.
    b.find(Id("redeliver-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = b.get_alert_text().await.unwrap();
    assert_eq!(question, "Redeliver all 1 dead letters of d?");
    b.dismiss_alert().await.unwrap();
    assert!(b
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/ui/destinations/d"));
    assert_eq!(rx.count(), 1, "only the first attempt reached the receiver");
    b.find(Css(&dl)).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#deliveries")).await.unwrap();
    let status = r#"article[data-destination="d"] .badge"#;
    assert_eq!(text_of(&b, status).await, "dead");
    // What the webhook carried is text on the page, never markup.
    let body = b.find(Id("body")).await.unwrap().text().await.unwrap();
    assert!(body.contains("<img src=x onerror=alert(1)>"), "{body}");
    assert_eq!(
        b.find(Id("event-type"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "<script>alert('type')</script>"
    );
    assert!(b
        .find_all(Css("main img, main script"))
        .await
        .unwrap()
        .is_empty());
    assert_clean(&b, "message").await;
    screenshot(&b, "message").await;

    // The destination comes back; redeliver, and see it delivered.
    open.store(true, Ordering::SeqCst);
    b.find(Css("button.redeliver"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Css("p.notice")).await.unwrap();
    wait_text(&b, status, "delivered").await;
    let got = rx.wait_delivered(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].seq(), dead_seq);
    assert_clean(&b, "message after the redelivery").await;

    // Pause, then resume.
    b.goto(&ui("/destinations/d")).await.unwrap();
    b.find(Id("pause")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Id("resume")).await.unwrap();
    let state = r#"dd[data-field="state"] .badge"#;
    assert_eq!(text_of(&b, state).await, "paused");
    b.find(Id("resume")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Id("pause")).await.unwrap();
    assert_eq!(text_of(&b, state).await, "active");
    assert_clean(&b, "destination after pause and resume").await;

    // Search by event type.
    b.find(Css("header nav a[href='/ui/messages']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Css("form.filters")).await.unwrap();
    b.find(Css("input[name=event_type]"))
        .await
        .unwrap()
        .send_keys("invoice.paid")
        .await
        .unwrap();
    b.find(Id("search")).await.unwrap().click().await.unwrap();
    // The unfiltered page has a list too: wait for the search's own page.
    wait_for("the search's page", Duration::from_secs(20), || async {
        let url = b.current_url().await.ok()?;
        url.query()
            .is_some_and(|q| q.contains("event_type=invoice.paid"))
            .then_some(())
    })
    .await;
    b.wait().for_element(Css("#message-list")).await.unwrap();
    let cells = b
        .find_all(Css("#message-list td.event-type"))
        .await
        .unwrap();
    let mut types = Vec::new();
    for c in &cells {
        types.push(c.text().await.unwrap());
    }
    assert_eq!(types, vec!["invoice.paid", "invoice.paid"]);
    let all = b.find_all(Css("#message-list tr[data-seq]")).await.unwrap();
    assert_eq!(all.len(), 2, "the other types are left out");
    assert_clean(&b, "message search").await;

    b.close().await.unwrap();
    drop(driver);
    let mut relay = relay;
    relay.assert_no_panics("after the browser test");
    assert_eq!(relay.terminate(), 0);
}

/// The absolute path of `cmd` on PATH (chromedriver wants a path).
fn which(cmd: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(cmd))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| cmd.to_owned())
}
