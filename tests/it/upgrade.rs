//! A data dir of format 1 (the committed fixture `tests/fixtures/format1`,
//! written by the release before format 2) under the current relay: it is
//! migrated at start, and delivery resumes at the destination's cursor.

use std::path::Path;
use std::time::Duration;

use http::StatusCode;

use crate::support::config::{Dest, RelayConfig, Source};
use crate::support::process::RelayProcess;
use crate::support::receiver::Receiver;
use crate::support::requests::{client, post, post_ok};
use crate::support::store::StoreView;

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_is_migrated_and_delivery_resumes_at_its_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture(&tmp.path().join("data"));
    let rx = Receiver::ok().await;
    // The fixture's messages are from 2026-01-01: a retention that keeps them.
    let config = RelayConfig::new()
        .storage("retention", "36500d")
        .source(Source::new("s", "/s").set("dedup_header", "idempotency-key"))
        .source(Source::new("t", "/t"))
        .destination(Dest::new("d", &rx.url("/")).sources(["s", "t"]))
        .write(tmp.path());
    let mut relay = RelayProcess::command(&config).start().await;

    // The cursor was at 2: 3, 4 and 5 go out, in order, whole.
    let got = rx.wait_delivered(3, Duration::from_secs(30)).await;
    let seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    let three: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(got[0].body.as_ref(), three.as_slice());
    assert_eq!(got[1].text(), "{\"n\":4}");
    assert_eq!(got[2].text(), "{\"n\":5}");
    assert_eq!(got[1].header("content-type"), Some("application/json"));

    // The dedup entry came along: a retry of seq 1's request is a duplicate.
    let again = post(
        &client(),
        &relay.url("/s"),
        &[("idempotency-key", "evt-1")],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["duplicate"], true, "{}", again.json);
    assert_eq!(again.json["seq"], 1);
    // New messages continue the seqs.
    let new = post_ok(&relay.url("/t"), &[], ["six"]).await;
    assert_eq!(new[0].json["seq"], 6);
    let got = rx.wait_delivered(4, Duration::from_secs(30)).await;
    assert_eq!((got[3].seq(), got[3].text().as_str()), (6, "six"));

    assert!(
        relay.logged("migrating data dir from format 1 to 2: 5 messages"),
        "{}",
        relay.tail(20)
    );
    assert_eq!(relay.terminate(), 0);
    relay.assert_no_panics("after the migration");

    let store = StoreView::open(&tmp.path().join("data"));
    assert_eq!(store.last_seq(), 6);
    assert_eq!(store.cursor("d"), 6);
    assert!(store.has_message(1) && store.has_message(2));
    let dead = store
        .dead_letter("d", 2)
        .expect("the dead letter came along");
    assert_eq!(dead.last_error, "HTTP 500");
    assert_eq!(store.attempt_count("d", 2), 1);
    assert_eq!(rx.count(), 4, "nothing at or below the cursor went again");
}
