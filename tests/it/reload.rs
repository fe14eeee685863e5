//! Reload: `POST /api/v1/reload`, `hookrelay reload` and `SIGHUP` re-read
//! the config into the running relay without dropping a connection or an
//! accepted webhook; an invalid config changes nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "reload-token";

fn base(a: &Receiver) -> RelayConfig {
    RelayConfig::new()
        .token(TOKEN)
        .source(Source::new("s", "/s"))
        .destination(Dest::new("a", &a.url("/")).sources(["s"]))
}

/// Reloads while senders post without pause: every post is answered 200,
/// `a` (unchanged) gets everything, a destination added by a reload starts
/// at the head, a removed one stops, and added back it resumes at its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_nothing_and_apply_every_change() {
    let (a, b) = (Receiver::ok().await, Receiver::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_in(dir.path(), &base(&a)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..3 {
        let (url, stop, sent) = (relay.url("/s"), stop.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                let a = post(&c, &url, &[], "x").await.expect("connection kept");
                assert_eq!(a.status, StatusCode::OK, "{}", a.text());
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let reload = || async {
        let (status, v) = relay.api_post("/api/v1/reload", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    };
    let wait_sent = |n: usize| {
        let sent = sent.clone();
        async move { wait_until("more webhooks", WAIT, || sent.load(Ordering::SeqCst) >= n).await }
    };

    wait_sent(50).await;
    base(&a)
        .destination(Dest::new("b", &b.url("/")).sources(["s"]))
        .write(dir.path());
    let before_add = sent.load(Ordering::SeqCst) as u64;
    let v = reload().await;
    assert_eq!(v["added"], serde_json::json!(["destination b"]));
    wait_sent(sent.load(Ordering::SeqCst) + 50).await;

    base(&a).write(dir.path());
    let v = reload().await;
    assert_eq!(v["removed"], serde_json::json!(["destination b"]));
    let (status, _) = relay.api_get("/api/v1/destinations/b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    wait_sent(sent.load(Ordering::SeqCst) + 50).await;

    base(&a)
        .destination(Dest::new("b", &b.url("/")).sources(["s"]))
        .write(dir.path());
    reload().await;
    // Unchanged and changed at once: `a` gets a header, restarts with its cursor.
    wait_sent(sent.load(Ordering::SeqCst) + 50).await;
    base(&a)
        .edit_destination("a", |d| {
            d.set("headers", Toml::table([("x-generation", "2")]))
        })
        .destination(Dest::new("b", &b.url("/")).sources(["s"]))
        .write(dir.path());
    let v = reload().await;
    assert_eq!(v["changed"], serde_json::json!(["destination a"]));
    wait_sent(sent.load(Ordering::SeqCst) + 50).await;

    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let total = sent.load(Ordering::SeqCst) as u64;
    relay
        .wait_admin("/api/v1/destinations/a", |_, v| v["cursor"] == total)
        .await;
    relay
        .wait_admin("/api/v1/destinations/b", |_, v| v["cursor"] == total)
        .await;
    // `a` got every webhook, in order (retries after a restart may repeat one).
    let mut seqs: Vec<u64> = a.delivered().iter().map(Received::seq).collect();
    seqs.dedup();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert!(a.delivered().last().unwrap().header("x-generation") == Some("2"));
    // `b` got nothing from before it was first added (it started at the
    // head), and added back it resumed where it was: everything after its
    // first message, the time it was removed included.
    let mut b_seqs: Vec<u64> = b.delivered().iter().map(Received::seq).collect();
    b_seqs.dedup();
    let first = b_seqs[0];
    assert!(
        first > before_add,
        "b started at the head ({first} > {before_add})"
    );
    assert_eq!(b_seqs, (first..=total).collect::<Vec<_>>());
}

/// An invalid config changes nothing and is answered with every problem;
/// the CLI exits 2; a listen change is reported as needing a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_changes_nothing_and_says_why() {
    let a = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_in(dir.path(), &base(&a)).await;
    let file = dir.path().join("relay.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replace(
            "sources = [\"s\"]",
            "sources = [\"nope\"]\nfilter = \".a[\"",
        ),
    )
    .unwrap();
    let (status, v) = relay.api_post("/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown source \"nope\"")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("filter")),
        "{problems:?}"
    );

    let cli_dir = dir.path().join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    let cli = RelayConfig::new()
        .admin("listen", relay.admin.to_string())
        .token(TOKEN)
        .write(&cli_dir);
    let (code, _, err) = run_cli(["reload", "--config", cli.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown source \"nope\""), "{err}");

    // Still the old config: webhooks flow to `a`.
    post_ok(&relay.url("/s"), &[], ["after"]).await;
    a.wait_delivered(1, WAIT).await;

    let moved = good.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1);
    std::fs::write(&file, moved).unwrap();
    let (code, out, err) = run_cli(["reload", "--config", cli.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("needs a restart"), "{out}");
    post_ok(&relay.url("/s"), &[], ["still here"]).await;
    a.wait_delivered(2, WAIT).await;
}

/// `SIGHUP` reloads the real binary (it used to end it with exit 129).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_instead_of_stopping() {
    let (a, b) = (Receiver::ok().await, Receiver::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let file = base(&a).write(dir.path());
    let mut relay = RelayProcess::start(&file).await;
    base(&a)
        .destination(Dest::new("b", &b.url("/")).sources(["s"]))
        .write(dir.path());
    relay.sighup();
    wait_until("the reload is logged", WAIT, || {
        relay.logged("config reloaded")
    })
    .await;
    assert!(!relay.exited(), "still running");
    post_ok(&relay.url("/s"), &[], ["after the reload"]).await;
    let got = b.wait_delivered(1, WAIT).await;
    assert_eq!(got[0].text(), "after the reload");
    let v: Value = a.wait_delivered(1, WAIT).await[0].text().into();
    assert_eq!(v, "after the reload");
    assert_eq!(relay.terminate(), 0);
}
