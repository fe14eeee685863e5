//! Routing: event types, `event_types`, jq filters and transforms, decided
//! when a message is delivered, with the rules in force then.

use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

fn stripe_event(ty: &str, livemode: bool, amount: u64) -> String {
    json!({"id": format!("evt_{ty}_{amount}"), "type": ty, "livemode": livemode,
           "data": {"object": {"amount": amount}}})
    .to_string()
}

/// Source `stripe` (event type from `.body.type`), `gh` and `sms`, and one
/// destination per rule, each with its own receiver.
struct Setup {
    billing: Receiver,
    live: Receiver,
    chat: Receiver,
    ci: Receiver,
    stop: Receiver,
    key: [u8; 32],
    config: RelayConfig,
}

async fn setup() -> Setup {
    let (billing, live, chat, ci, stop) = (
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
    );
    let key: [u8; 32] = rand::random();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let config = RelayConfig::new()
        .source(Source::new("stripe", "/stripe").set("event_type", ".body.type"))
        .source(Source::new("gh", "/gh").set("event_type", r#".headers["x-github-event"]"#))
        .source(Source::new("sms", "/sms"))
        .destination(
            Dest::new("billing", &billing.url("/"))
                .sources(["stripe"])
                .set("event_types", ["invoice.*"]),
        )
        .destination(
            Dest::new("live", &live.url("/"))
                .sources(["stripe"])
                .set("filter", ".body.livemode"),
        )
        .destination(
            Dest::new("chat", &chat.url("/"))
                .sources(["stripe"])
                .set("event_types", ["invoice.paid"])
                .set(
                    "transform",
                    r#"{text: "\(.event_type): \(.body.data.object.amount) (seq \(.seq))"}"#,
                )
                .set("signing", Toml::table([("secret", secret.as_str())])),
        )
        .destination(
            Dest::new("ci", &ci.url("/"))
                .sources(["gh"])
                .set("event_types", ["push"])
                .set("filter", r#".body.ref == "refs/heads/main""#),
        )
        .destination(
            Dest::new("stop", &stop.url("/"))
                .sources(["sms"])
                .set("filter", r#".body.Body | ascii_downcase == "stop""#),
        );
    Setup {
        billing,
        live,
        chat,
        ci,
        stop,
        key,
        config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_receives_what_its_rules_let_through() {
    let s = setup().await;
    let relay = TestRelay::start(&s.config).await;
    let json_ct = [("content-type", "application/json")];
    let stripe = [
        stripe_event("invoice.paid", true, 100),     // 1
        stripe_event("charge.failed", true, 200),    // 2
        stripe_event("invoice.created", false, 300), // 3
        stripe_event("invoice.paid", false, 400),    // 4
    ];
    post_ok(&relay.url("/stripe"), &json_ct, stripe.clone()).await;
    let push = |r: &str| json!({"ref": r}).to_string();
    for (event, body) in [
        ("push", push("refs/heads/main")),    // 5
        ("push", push("refs/heads/feature")), // 6
        ("issues", push("refs/heads/main")),  // 7
    ] {
        let h = [
            ("content-type", "application/json"),
            ("x-github-event", event),
        ];
        post_ok(&relay.url("/gh"), &h, [body]).await;
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    post_ok(
        &relay.url("/sms"),
        &form,
        [
            "From=%2B14155550100&Body=STOP",
            "From=%2B14155550100&Body=hello",
        ],
    )
    .await; // 8, 9

    let seqs = |rx: &Receiver| -> Vec<u64> { rx.delivered().iter().map(Received::seq).collect() };
    s.billing.wait_delivered(3, WAIT).await;
    s.live.wait_delivered(2, WAIT).await;
    s.chat.wait_delivered(2, WAIT).await;
    s.ci.wait_delivered(1, WAIT).await;
    s.stop.wait_delivered(1, WAIT).await;
    // Every destination has passed every message (skipped ones included).
    for d in ["billing", "live", "chat"] {
        relay
            .wait_admin(&format!("/api/v1/destinations/{d}"), |_, v| {
                v["cursor"] == 9
            })
            .await;
    }
    for d in ["ci", "stop"] {
        relay
            .wait_admin(&format!("/api/v1/destinations/{d}"), |_, v| {
                v["cursor"] == 9
            })
            .await;
    }
    assert_eq!(seqs(&s.billing), [1, 3, 4], "invoice.* only");
    assert_eq!(seqs(&s.live), [1, 2], "livemode only");
    assert_eq!(seqs(&s.ci), [5], "push on main only");
    assert_eq!(seqs(&s.stop), [8], "the STOP form field");
    assert_eq!(
        s.stop.delivered()[0].text(),
        "From=%2B14155550100&Body=STOP"
    );
    assert_eq!(
        s.billing.delivered()[0].text(),
        stripe[0],
        "untransformed: byte for byte"
    );

    // The transform replaces the body, and the signature covers what was sent.
    let chat = s.chat.delivered();
    let texts: Vec<Value> = chat
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            json!({"text": "invoice.paid: 100 (seq 1)"}),
            json!({"text": "invoice.paid: 400 (seq 4)"})
        ]
    );
    for r in &chat {
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.verify_standard(&s.key);
    }

    // Shown where messages are shown: event types, skipped, and the metric.
    let m = relay.admin_get("/api/v1/messages/2").await;
    assert_eq!(m["event_type"], "charge.failed");
    assert_eq!(m["destinations"]["billing"]["status"], "skipped");
    assert_eq!(m["destinations"]["billing"]["attempts"], json!([]));
    assert_eq!(m["destinations"]["live"]["status"], "delivered");
    let invoices = relay
        .admin_get("/api/v1/messages?event_type=invoice.paid")
        .await;
    let listed: Vec<u64> = invoices
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 4]);
    let metrics = relay.admin_probe("/metrics").await.text();
    assert!(
        metrics
            .contains(r#"hookrelay_deliveries_total{destination="billing",outcome="skipped"} 1"#),
        "{metrics}"
    );
}

/// A filter or transform that fails, has no output, or never ends is a
/// failed delivery: dead-lettered (or blocking) with its reason, at once;
/// the worker goes on, and other destinations are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_endless_programs_dead_letter_or_block_without_stalling() {
    let (ok, never) = (Receiver::ok().await, Receiver::ok().await);
    let config = RelayConfig::new()
        .source(Source::new("s", "/s"))
        .destination(Dest::new("ok", &ok.url("/")).sources(["s"]))
        .destination(
            Dest::new("endless", &never.url("/"))
                .sources(["s"])
                .set("transform", "def f: f; f"),
        )
        .destination(
            Dest::new("huge", &never.url("/"))
                .sources(["s"])
                .set("filter", "last(range(1e12)) > 0"),
        )
        .destination(
            Dest::new("empty", &never.url("/"))
                .sources(["s"])
                .set("transform", ".body.missing | select(. != null)"),
        )
        .destination(
            Dest::new("blocked", &never.url("/"))
                .sources(["s"])
                .set("filter", r#"error("no such field")"#)
                .set("on_exhausted", "block"),
        );
    let relay = TestRelay::start(&config).await;
    let started = std::time::Instant::now();
    post_ok(
        &relay.url("/s"),
        &[("content-type", "application/json")],
        [r#"{"a":1}"#, r#"{"a":2}"#],
    )
    .await;
    ok.wait_delivered(2, WAIT).await;
    for (dest, reason) in [
        ("endless", "work budget"),
        ("huge", "work budget"),
        ("empty", "transform: no output"),
    ] {
        let path = format!("/api/v1/destinations/{dest}/dead-letters");
        let dead = relay
            .wait_admin(&path, |_, v| v.as_array().is_some_and(|a| a.len() == 2))
            .await;
        let error = dead[0]["last_error"].as_str().unwrap();
        assert!(error.contains(reason), "{dest}: {error}");
    }
    let blocked = relay
        .wait_admin("/api/v1/destinations/blocked", |_, v| {
            v["state"] == "blocked"
        })
        .await;
    assert!(
        blocked["last_attempt"]["error"]
            .as_str()
            .unwrap()
            .contains("no such field"),
        "{blocked}"
    );
    assert_eq!(never.arrivals(), 0, "nothing was sent for a failed program");
    // Bounded work: two endless programs per message did not take seconds.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Routing is decided at delivery time: after a restart with new rules, a
/// replay delivers what today's rules let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_uses_the_rules_in_force() {
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let with_types = |types: &[&str]| {
        RelayConfig::new()
            .token("t")
            .source(Source::new("stripe", "/stripe").set("event_type", ".body.type"))
            .destination(
                Dest::new("d", &rx.url("/"))
                    .sources(["stripe"])
                    .set("event_types", types.to_vec()),
            )
    };
    let mut relay = TestRelay::start_in(dir.path(), &with_types(&["invoice.*"])).await;
    let bodies = [
        stripe_event("invoice.paid", true, 1),
        stripe_event("charge.failed", true, 2),
    ];
    post_ok(&relay.url("/stripe"), &[], bodies).await;
    relay
        .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 2)
        .await;
    assert_eq!(rx.delivered().len(), 1);
    relay.stop().await.unwrap();

    let relay = TestRelay::start_in(dir.path(), &with_types(&["charge.*"])).await;
    let (status, _) = relay
        .api_post(
            "/api/v1/destinations/d/replay",
            Some(json!({"from_seq": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    relay
        .wait_admin("/api/v1/destinations/d", |_, v| v["cursor"] == 2)
        .await;
    let seqs: Vec<u64> = rx
        .wait_delivered(2, WAIT)
        .await
        .iter()
        .map(Received::seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 2],
        "seq 1 under the old rules, seq 2 under the new"
    );
}

/// `hookrelay route`: against the running relay (`--seq`) and offline from
/// the config alone (`--body`), which needs no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_command_shows_deliver_skip_or_error() {
    let s = setup().await;
    // A secret that is not set: client commands must not need it.
    let config = s.config.clone().source(
        Source::new("locked", "/locked")
            .verify(Verify::new("github").set("secret_env", "IT_ROUTE_UNSET")),
    );
    let relay = TestRelay::start(&s.config).await;
    post_ok(
        &relay.url("/stripe"),
        &[("content-type", "application/json")],
        [
            stripe_event("invoice.paid", true, 7),
            stripe_event("charge.failed", true, 8),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = config
        .clone()
        .admin("listen", relay.admin.to_string())
        .write(dir.path());
    let cfg = file.to_str().unwrap();

    let (code, out, err) = run_cli(["route", "chat", "--seq", "1", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "deliver\n{\"text\":\"invoice.paid: 7 (seq 1)\"}"
    );
    let (code, out, _) = run_cli(["route", "billing", "--seq", "2", "--config", cfg]);
    assert_eq!((code, out.trim()), (0, "skip"));

    let sample = write_file(
        dir.path(),
        "sample.json",
        stripe_event("invoice.paid", false, 9),
    );
    let sample = sample.to_str().unwrap();
    let offline = |dest: &str, extra: &[&str]| {
        let mut args = vec!["route", dest, "--body", sample, "--config", cfg];
        args.extend_from_slice(extra);
        run_cli(args)
    };
    let (code, out, err) = offline("chat", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "deliver\n{\"text\":\"invoice.paid: 9 (seq 0)\"}"
    );
    assert_eq!(offline("live", &[]).1.trim(), "skip", "livemode false");
    let (code, out, _) = offline(
        "ci",
        &["--header", "X-GitHub-Event: push", "--source", "gh"],
    );
    assert_eq!((code, out.trim()), (0, "skip"), "not refs/heads/main");

    let broken = config
        .clone()
        .edit_destination("live", |d| d.set("filter", r#"error("bad filter")"#));
    let file = broken.write(dir.path());
    let (code, out, _) = run_cli([
        "route",
        "live",
        "--body",
        sample,
        "--config",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        (code, out.trim()),
        (1, "error: filter: jq error: bad filter")
    );
}

/// A jq syntax error is a config error naming file, line, key and the
/// position in the program; `check` reports it with the other problems.
#[test]
fn jq_syntax_errors_are_config_errors_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = RelayConfig::new()
        .source(Source::new("s", "/s").set("event_type", ".body.type |"))
        .destination(
            Dest::new("d", "http://127.0.0.1:9/")
                .sources(["s"])
                .set("filter", ".body.a[")
                .set("transform", "nosuch(1)")
                .set("event_types", Vec::<String>::new()),
        )
        .write(dir.path());
    let (code, _, err) = run_cli(["check", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "source[0].event_type: invalid jq program: syntax error",
        "destination[0].filter: invalid jq program: syntax error: expected closing bracket at character 9",
        "destination[0].transform: invalid jq program: undefined filter \"nosuch\" at character 1",
        "destination[0].event_types: give at least one pattern",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(err.lines().all(|l| l.starts_with("hookrelay: ")), "{err}");
}
