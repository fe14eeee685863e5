//! The command line as an operator types it: where `--config` may go, what
//! client commands need from the config, and what `check` prints.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// `hookrelay ARGS` with `env` set; (exit code, stdout, stderr).
fn hookrelay(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.args(args).env_remove("HOOKRELAY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hookrelay");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn config_goes_before_or_after_the_command_or_in_hookrelay_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = RelayConfig::one_route("http://127.0.0.1:9/").write(dir.path());
    let path = file.to_str().unwrap();
    let ok = format!("{path}: ok (1 source, 1 destination)");
    for args in [
        vec!["--config", path, "check"],
        vec!["check", "--config", path],
    ] {
        let (code, stdout, stderr) = hookrelay(&args, &[]);
        assert_eq!(
            (code, stdout.trim()),
            (0, ok.as_str()),
            "{args:?}: {stderr}"
        );
    }
    let (code, stdout, stderr) = hookrelay(&["check"], &[("HOOKRELAY_CONFIG", &file)]);
    assert_eq!((code, stdout.trim()), (0, ok.as_str()), "{stderr}");
    // The option wins over the variable.
    let elsewhere = Path::new("/nonexistent/relay.toml");
    let (code, stdout, _) = hookrelay(
        &["check", "--config", path],
        &[("HOOKRELAY_CONFIG", elsewhere)],
    );
    assert_eq!((code, stdout.trim()), (0, ok.as_str()));
}

/// `status` on a systemd host runs without the service's environment: it
/// reads the admin table and never resolves a source's or destination's secret.
#[tokio::test]
async fn client_commands_need_no_source_or_destination_secret() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let file = RelayConfig::new()
        .source(
            Source::new("gh", "/gh")
                .verify(Verify::new("github").set("secret_env", "IT_CLI_GH_SECRET")),
        )
        .destination(
            Dest::new("app", &rx.url("/"))
                .sources(["gh"])
                .set("signing", Toml::table([("secret_env", "IT_CLI_SIGNING")])),
        )
        .write(dir.path());
    let relay = RelayProcess::command(&file)
        .env("IT_CLI_GH_SECRET", "s3cret")
        .env("IT_CLI_SIGNING", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .start()
        .await;
    // The admin listen address is port 0 in the file: point a copy at the
    // real one, as an operator's config names a fixed port.
    let text = std::fs::read_to_string(&file).unwrap();
    let client_file = dir.path().join("client.toml");
    let admin_line = format!("listen = \"{}\"", relay.admin);
    let text = text.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1);
    let text = text.replacen("listen = \"127.0.0.1:0\"", &admin_line, 1);
    std::fs::write(&client_file, text).unwrap();
    let path = client_file.to_str().unwrap();
    let (code, stdout, stderr) = hookrelay(&["status", "--config", path], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("app"), "{stdout}");
    let (code, stdout, stderr) = hookrelay(&["--config", path, "pause", "app"], &[]);
    assert_eq!((code, stdout.trim()), (0, "app: paused"), "{stderr}");
    // The same file still needs every secret to serve or check.
    let (code, _, stderr) = hookrelay(&["check", "--config", path], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("IT_CLI_GH_SECRET is not set"), "{stderr}");
}

#[test]
fn check_prefixes_every_problem_and_warns_about_what_is_probably_not_meant() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[source]]\nname = \"a\"\npath = \"a\"\n\n[[source]]\nname = \"b\"\npath = \"b\"\n";
    let file = write_file(dir.path(), "relay.toml", text);
    let path = file.to_str().unwrap();
    let (code, _, stderr) = hookrelay(&["check", "--config", path], &[]);
    assert_eq!(code, 2);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.iter().all(|l| l.starts_with("hookrelay: ")),
        "{stderr}"
    );

    let text = "[admin]\nlisten = \"127.0.0.1:7\"\n[server]\nlisten = \"0.0.0.0:7\"\n";
    let file = write_file(dir.path(), "relay.toml", text);
    let (code, _, stderr) = hookrelay(&["check", "--config", path], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(":2: admin.listen: 127.0.0.1:7 clashes with server.listen 0.0.0.0:7"),
        "{stderr}"
    );

    let file_ok = write_file(
        dir.path(),
        "relay.toml",
        "[[source]]\nname = \"a\"\npath = \"/a\"\n",
    );
    assert_eq!(file, file_ok);
    let (code, stdout, stderr) = hookrelay(&["check", "--config", path], &[]);
    assert_eq!(
        (code, stdout.trim()),
        (0, format!("{path}: ok (1 source, 0 destinations)").as_str())
    );
    assert!(
        stderr.contains("hookrelay: warning:") && stderr.contains("no [[destination]]"),
        "{stderr}"
    );
    assert!(stderr.contains("has no token"), "{stderr}");
}

/// `dead-letters` lists what a destination gave up on; `redeliver --all`
/// sends each once more, and `--seq` one. (The in-process relay serves the
/// command from the runtime's other thread.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redelivered_from_the_command_line() {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rx = Receiver::gated(&open, http::StatusCode::BAD_REQUEST).await;
    let config = RelayConfig::one_route(&rx.url("/"))
        .token("cli-token")
        .edit_destination("d", |d| d.retry(Retry::default().attempts(1)));
    let relay = TestRelay::start(&config).await;
    post_ok(&relay.url("/s"), &[], ["one", "two", "three"]).await;
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v.as_array().is_some_and(|a| a.len() == 3)
        })
        .await;
    // Client commands need only the [admin] table.
    let dir = tempfile::tempdir().unwrap();
    let admin = format!(
        "[admin]\nlisten = \"{}\"\ntoken = \"cli-token\"\n",
        relay.admin
    );
    let file = write_file(dir.path(), "client.toml", admin);
    let path = file.to_str().unwrap();

    let (code, stdout, stderr) = hookrelay(&["--config", path, "dead-letters", "d"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three dead letters: {stdout}");
    assert!(lines[0].starts_with("SEQ  AT"), "{stdout}");
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("400"),
        "{stdout}"
    );

    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let (code, stdout, stderr) =
        hookrelay(&["--config", path, "redeliver", "d", "--seq", "2"], &[]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "d: seq 2 queued for redelivery"),
        "{stderr}"
    );
    let got = rx
        .wait_delivered(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(got[0].seq(), 2);
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let (code, stdout, stderr) = hookrelay(&["--config", path, "redeliver", "d", "--all"], &[]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "d: 2 dead letters queued for redelivery"),
        "{stderr}"
    );
    let got = rx
        .wait_delivered(3, std::time::Duration::from_secs(10))
        .await;
    let mut seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3]);
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            *v == serde_json::json!([])
        })
        .await;
    let (code, _, stderr) = hookrelay(&["--config", path, "redeliver", "d"], &[]);
    assert_eq!(code, 2, "--seq or --all is required: {stderr}");
}
