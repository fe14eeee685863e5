//! The shipped systemd unit (`dist/hookrelay.service`).

use std::process::Command;

const UNIT: &str = include_str!("../../dist/hookrelay.service");

#[test]
fn the_systemd_unit_is_bounded_and_verifies_clean() {
    for directive in [
        "Type=notify",
        "MemoryMax=",
        "TasksMax=",
        "SystemCallFilter=~@privileged @resources",
        "ExecReload=/usr/local/bin/hookrelay reload --config /etc/hookrelay/relay.toml",
    ] {
        assert!(UNIT.contains(directive), "the unit sets {directive}");
    }
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    // The unit names the installed path; verify checks that it is executable.
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/hookrelay", env!("CARGO_BIN_EXE_hookrelay"));
    let path = dir.path().join("hookrelay.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
