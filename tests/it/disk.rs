//! A disk that fills up: on a small file system of its own (tmpfs), the
//! relay refuses with 503 + `Retry-After` once free space falls under
//! `min_free_bytes`, never crashes or loses what it acknowledged, and
//! accepts again once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// A tmpfs mounted for one test; unmounted when dropped.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount(at: &Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs {
                dir: at.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: no mount command ({e})");
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_is_refused_with_503_and_nothing_acknowledged_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&tmp.path().join("fs"), "96m") else {
        return;
    };
    // Leave about 48 MiB free; the relay must stop at 24 MiB free.
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![0u8; 48 << 20]).unwrap();
    let rx = Receiver::ok().await;
    let config = RelayConfig::one_route(&rx.url("/"))
        .server("max_body_bytes", "128KiB")
        .storage("data_dir", fs.dir.join("data").to_str().unwrap())
        .storage("min_free_bytes", "24MiB");
    let mut relay = TestRelay::start_in(tmp.path(), &config).await;

    let c = client();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..2000u32 {
        let body: Vec<u8> = format!("{i:08}").bytes().cycle().take(64 << 10).collect();
        let a = post(&c, &relay.url("/s"), &[], body.clone()).await.unwrap();
        match a.status {
            StatusCode::OK => acked.push(body),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = Some(a);
                break;
            }
            other => panic!("unexpected {other}: {}", a.text()),
        }
    }
    let refused = refused.expect("a 503 before 2000 × 64 KiB filled 48 MiB");
    assert!(
        refused.headers.contains_key("retry-after"),
        "{:?}",
        refused.headers
    );
    assert!(refused.json["error"].is_string());
    // Checked as each batch is appended, not once a second: 24 MiB of room
    // takes at most 384 bodies of 64 KiB (plus one batch, here one body).
    assert!(
        (50..=385).contains(&acked.len()),
        "{} accepted for 24 MiB of room",
        acked.len()
    );
    // Still serving: health, and refusals are answers, not crashes.
    assert_eq!(relay.admin_probe("/healthz").await.status, StatusCode::OK);
    let again = post(&c, &relay.url("/s"), &[], vec![1u8; 1024])
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);

    // Room again: accepted within a measurement or two.
    std::fs::remove_file(&filler).unwrap();
    let mut accepted = false;
    for _ in 0..100 {
        let body = b"after the disk was freed".to_vec();
        let a = post(&c, &relay.url("/s"), &[], body.clone()).await.unwrap();
        if a.status == StatusCode::OK {
            acked.push(body);
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "accepting again once space was freed");

    // Every acknowledged webhook arrives, byte for byte, in order.
    let got = rx
        .wait_delivered(acked.len(), Duration::from_secs(60))
        .await;
    let bodies: Vec<Vec<u8>> = got.iter().map(|r| r.body.to_vec()).collect();
    assert_eq!(bodies.len(), acked.len());
    assert!(
        bodies == acked,
        "delivered bodies differ from the acknowledged ones"
    );
    relay.stop().await.unwrap();
    drop(fs);
}
