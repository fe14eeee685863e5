//! Sync replies through the real server, with the providers' real signing:
//! the provider gets the app's answer (Twilio's TwiML, a Discord interaction
//! response, a Slack command's text) or the configured fallback (app slow or
//! down), the message is stored and delivered either way, and handshakes stay
//! the relay's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::*;
use crate::verify::{
    discord, get_text, meta, now, send, slack, twilio, with, Call, DISCORD_PUB, META_SECRET,
    META_TOKEN, SLACK_SECRET, TWILIO_TOKEN, TWILIO_URL,
};

const TWIML_FALLBACK: &str = "<Response/>";
const DEFERRED: &str = r#"{"type":5}"#;
const SLACK_FALLBACK: &str = "Working on it…";

/// `reply = { destination = "app", timeout, content_type, body }`.
fn reply(timeout: &str, content_type: &str, body: &str) -> Toml {
    Toml::table([
        ("destination", "app"),
        ("timeout", timeout),
        ("content_type", content_type),
        ("body", body),
    ])
}

/// Twilio, Discord, Slack and Meta sources answered by unordered `app`;
/// Twilio also feeds strict `audit`.
fn config(app: &str, audit: &str, timeout: &str) -> RelayConfig {
    let sources = [
        (
            "twilio",
            Verify::new("twilio")
                .secret(TWILIO_TOKEN)
                .set("public_url", TWILIO_URL),
            reply(timeout, "text/xml", TWIML_FALLBACK),
        ),
        (
            "discord",
            Verify::new("discord").set("public_key", DISCORD_PUB),
            reply(timeout, "application/json", DEFERRED),
        ),
        (
            "slack",
            Verify::new("slack").secret(SLACK_SECRET),
            reply(timeout, "text/plain; charset=utf-8", SLACK_FALLBACK),
        ),
        (
            "meta",
            Verify::new("meta")
                .secret(META_SECRET)
                .set("verify_token", META_TOKEN),
            reply(timeout, "application/json", "{}"),
        ),
    ];
    let mut config = RelayConfig::new();
    for (name, verify, reply) in sources {
        let source = Source::new(name, &format!("/hooks/{name}"))
            .verify(verify)
            .set("reply", reply);
        config = config.source(source);
    }
    config
        .destination(
            Dest::new("app", app)
                .sources(["twilio", "discord", "slack", "meta"])
                .set("ordering", "unordered")
                .retry(Retry::patient("100ms", "300ms")),
        )
        .destination(Dest::new("audit", audit).sources(["twilio"]))
}

/// The app: answers per provider, as each expects; slow where asked to be.
fn app_answers(r: &Received) -> (StatusCode, Vec<(&'static str, String)>, Duration) {
    let text = r.text();
    // Far beyond the tests' 500ms timeout, so the fallback is first even on a loaded machine.
    let delay = if text.contains("slow") {
        Duration::from_secs(4)
    } else {
        Duration::ZERO
    };
    let content_type = match r.header("x-hookrelay-source") {
        Some("twilio") => "text/xml",
        Some("discord") => "application/json",
        _ => "text/plain",
    };
    let headers = vec![
        ("content-type", content_type.to_string()),
        ("x-app-internal", "not for the provider".to_string()),
    ];
    (StatusCode::OK, headers, delay)
}

fn app_body(r: &Received) -> Bytes {
    let text = r.text();
    match r.header("x-hookrelay-source") {
        Some("twilio") => {
            let said = form_value(&text, "Body").unwrap_or_default();
            format!("<Response><Message>You said {said}</Message></Response>").into()
        }
        Some("discord") => r#"{"type":4,"data":{"content":"pong"}}"#.into(),
        _ => {
            let city = form_value(&text, "text").unwrap_or_default();
            format!("Sunny in {city}").into()
        }
    }
}

fn form_value(body: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The app, answering each provider's webhooks as that provider expects.
async fn app() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Receiver::replying(listener, Arc::new(app_answers), Arc::new(app_body))
}

async fn relay(app: &str, audit: &str, timeout: &str) -> TestRelay {
    TestRelay::start(&config(app, audit, timeout)).await
}

/// The attempts of message `seq` at `dest` (admin API), once it has one
/// (an attempt is recorded just after its answer is passed on).
async fn attempts(relay: &TestRelay, seq: u64, dest: &str) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/messages/{seq}");
    wait_for("an attempt recorded", Duration::from_secs(10), || async {
        let m = relay.admin_get(&path).await;
        let tried = m["destinations"][dest]["attempts"].as_array()?.clone();
        (!tried.is_empty()).then_some(tried)
    })
    .await
}

/// Waits until `dest`'s cursor is at `seq`: nothing up to it is sent again.
async fn wait_cursor(relay: &TestRelay, dest: &str, seq: u64) {
    let path = format!("/api/v1/destinations/{dest}");
    wait_for(
        "the cursor to pass the messages",
        Duration::from_secs(10),
        || async {
            let d = relay.admin_get(&path).await;
            (d["cursor"].as_u64()? >= seq).then_some(())
        },
    )
    .await
}

fn content_type(a: &Answer) -> &str {
    a.headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn form(call: Call) -> Call {
    with(&call, "content-type", "application/x-www-form-urlencoded")
}

#[tokio::test]
async fn twilio_gets_the_apps_twiml_and_the_other_destinations_keep_their_order() {
    let app = app().await;
    let audit = Receiver::ok().await;
    let relay = relay(&app.url("/"), &audit.url("/audit"), "5s").await;
    let mut seqs = Vec::new();
    for said in ["hello", "again", "bye"] {
        let a = send(&relay, &twilio(&[("From", "+15550001"), ("Body", said)])).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(content_type(&a), "text/xml");
        assert_eq!(
            a.text(),
            format!("<Response><Message>You said {said}</Message></Response>")
        );
        assert!(
            a.headers.get("x-app-internal").is_none(),
            "only status, content-type and body pass"
        );
        seqs.push(app.delivered().last().unwrap().seq());
    }
    let got = audit.wait_delivered(3, Duration::from_secs(10)).await;
    let order: Vec<u64> = got.iter().map(Received::seq).collect();
    assert_eq!(order, seqs, "the strict destination gets them in order");
    assert_eq!(app.count(), 3, "each delivered to the app once");
    wait_cursor(&relay, "app", *seqs.iter().max().unwrap()).await;
    assert_eq!(
        app.count(),
        3,
        "still once each, now that the app's cursor is past them"
    );
    for seq in seqs {
        let tried = attempts(&relay, seq, "app").await;
        assert_eq!(
            tried.len(),
            1,
            "the answer was its first attempt: {tried:?}"
        );
        assert_eq!(tried[0]["status"], 200);
    }
}

#[tokio::test]
async fn discord_gets_the_interaction_response_or_the_deferred_fallback_when_the_app_is_slow() {
    let app = app().await;
    let audit = Receiver::ok().await;
    let relay = relay(&app.url("/"), &audit.url("/"), "500ms").await;
    let t = now();

    let a = send(
        &relay,
        &discord(t, r#"{"type":2,"id":"i1","data":{"name":"ping"}}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(content_type(&a), "application/json");
    assert_eq!(
        a.json,
        serde_json::json!({"type": 4, "data": {"content": "pong"}})
    );

    let a = send(
        &relay,
        &discord(t, r#"{"type":2,"id":"i2","data":{"name":"slow"}}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json, serde_json::json!({"type": 5}));
    assert_eq!(content_type(&a), "application/json");
    assert_eq!(
        app.count(),
        1,
        "the fallback went out before the app answered"
    );
    // The app's late 200 still counts: delivered on that first attempt.
    let got = app.wait_delivered(2, Duration::from_secs(10)).await;
    assert!(got[1].text().contains("slow"));
    let tried = attempts(&relay, got[1].seq(), "app").await;
    assert_eq!(tried.len(), 1, "{tried:?}");

    // A PING is still the relay's to answer, and is not forwarded.
    let a = send(&relay, &discord(t, r#"{"type":1}"#)).await;
    assert_eq!(a.json, serde_json::json!({"type": 1}));
    assert_eq!(app.arrivals(), 2);
}

#[tokio::test]
async fn a_slack_command_is_answered_with_the_apps_text_and_handshakes_stay_the_relays() {
    let app = app().await;
    let audit = Receiver::ok().await;
    let relay = relay(&app.url("/"), &audit.url("/"), "5s").await;
    let t = now();
    let command = "token=x&team_id=T1&command=%2Fweather&text=Paris&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1";
    let a = send(&relay, &form(slack(t, command))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(content_type(&a), "text/plain");
    assert_eq!(a.text(), "Sunny in Paris");
    assert_eq!(
        app.delivered()[0].text(),
        command,
        "the form as Slack sent it"
    );

    let challenge = r#"{"token":"t","challenge":"c-123","type":"url_verification"}"#;
    let a = send(&relay, &slack(t, challenge)).await;
    assert_eq!(a.json, serde_json::json!({"challenge": "c-123"}));
    let token = META_TOKEN.replace(' ', "+").replace('/', "%2F");
    let url = relay.url(&format!(
        "/hooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42"
    ));
    let (status, _, body) = get_text(&url, http::Method::GET).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
    // A signed Meta event goes to the app, whose answer Meta gets.
    let a = send(&relay, &meta(r#"{"object":"page","entry":[]}"#)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(app.arrivals(), 2, "handshakes are never forwarded");
}

#[tokio::test]
async fn an_app_that_is_down_gets_the_fallback_then_everything_once_it_is_back_across_a_restart() {
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = placeholder.local_addr().unwrap();
    drop(placeholder);
    let audit = Receiver::ok().await;
    let relay = relay(&format!("http://{addr}/"), &audit.url("/"), "20s").await;

    let started = Instant::now();
    let a = send(&relay, &twilio(&[("From", "+1"), ("Body", "first")])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(content_type(&a), "text/xml");
    assert_eq!(a.text(), TWIML_FALLBACK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused attempt answers with the fallback at once, not at the timeout"
    );
    // The fallback is no delivery: stored, and still owed to the app.
    let first = audit.wait_delivered(1, Duration::from_secs(10)).await[0].seq();
    let failed = attempts(&relay, first, "app").await;
    assert!(
        !failed.is_empty() && failed[0]["status"].is_null(),
        "{failed:?}"
    );

    // The relay restarts between the fallback and the app's return.
    let relay = relay.restart().await;
    let a = send(&relay, &twilio(&[("From", "+1"), ("Body", "second")])).await;
    assert_eq!(a.text(), TWIML_FALLBACK);

    let listener = TcpListener::bind(addr).await.unwrap();
    let app = Receiver::replying(listener, Arc::new(app_answers), Arc::new(app_body));
    let got = app.wait_delivered(2, Duration::from_secs(20)).await;
    let mut said: Vec<String> = got
        .iter()
        .filter_map(|r| form_value(&r.text(), "Body"))
        .collect();
    said.sort();
    assert_eq!(said, ["first", "second"]);
    // Once back, the provider gets the app's answer again.
    let a = send(&relay, &twilio(&[("From", "+1"), ("Body", "third")])).await;
    assert_eq!(
        a.text(),
        "<Response><Message>You said third</Message></Response>"
    );
    let third = app.delivered().last().unwrap().seq();
    wait_cursor(&relay, "app", third).await;
    assert_eq!(app.count(), 3, "each delivered once");
}

#[tokio::test]
async fn a_paused_reply_destination_means_the_fallback_at_once_and_delivery_on_resume() {
    let app = app().await;
    let audit = Receiver::ok().await;
    let relay = relay(&app.url("/"), &audit.url("/"), "20s").await;
    let (status, _) = relay.api_post("/api/v1/destinations/app/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    let started = Instant::now();
    let a = send(&relay, &discord(now(), r#"{"type":2,"id":"p1"}"#)).await;
    assert_eq!(a.json, serde_json::json!({"type": 5}));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not at the timeout"
    );
    assert_eq!(app.arrivals(), 0);
    let (status, _) = relay
        .api_post("/api/v1/destinations/app/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = app.wait_delivered(1, Duration::from_secs(10)).await;
    assert!(got[0].text().contains("p1"));
}

#[tokio::test]
async fn a_reply_starts_at_once_beside_a_full_window_and_is_not_sent_again_after_a_restart() {
    // The app refuses "hold" until the gate opens; `max_in_flight` is 1, so
    // its retries fill the window.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let script = move |r: &Received| {
        let (status, headers, delay) = app_answers(r);
        let held = r.text().contains("hold") && !gate.load(std::sync::atomic::Ordering::SeqCst);
        let status = if held {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        (status, headers, delay)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Receiver::replying(listener, Arc::new(script), Arc::new(app_body));
    let audit = Receiver::ok().await;
    let relay = relay(&app.url("/"), &audit.url("/"), "5s").await;

    let a = send(&relay, &twilio(&[("From", "+1"), ("Body", "hold")])).await;
    assert_eq!(a.text(), TWIML_FALLBACK, "a 503 is no answer");
    let a = send(&relay, &twilio(&[("From", "+1"), ("Body", "now")])).await;
    assert_eq!(
        a.text(),
        "<Response><Message>You said now</Message></Response>",
        "not held up behind the retrying message"
    );
    let now_seq = app.delivered()[0].seq();

    let relay = relay.restart().await;
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_cursor(&relay, "app", now_seq).await;
    let said: Vec<String> = app
        .delivered()
        .iter()
        .filter_map(|r| form_value(&r.text(), "Body"))
        .collect();
    assert_eq!(
        said,
        ["now", "hold"],
        "each delivered once, the early one not again"
    );
}
