//! Inbound TLS on both listeners (`tls_cert_file` / `tls_key_file`): webhooks
//! over HTTPS with HTTP/1.1 and h2 (ALPN) delivered to a plain receiver, the
//! admin API over HTTPS, plain HTTP and silent peers on a TLS port, and
//! `check` on unusable certificate files.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "tls-test-token";

/// One route `s` → `d` at `url`, with TLS on both listeners from a leaf of
/// `pki` written in `dir`; that leaf.
fn tls_config(pki: &TestPki, dir: &Path, url: &str) -> (RelayConfig, Leaf) {
    let leaf = pki.leaf("hookrelay test server");
    let (cert, key) = leaf.write(dir, "relay");
    let config = RelayConfig::one_route(url)
        .server("tls_cert_file", cert.as_path())
        .server("tls_key_file", key.as_path())
        .admin("tls_cert_file", cert.as_path())
        .admin("tls_key_file", key.as_path())
        .token(TOKEN);
    (config, leaf)
}

fn request(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Writes `bytes` on a new TCP connection and reads until the relay closes
/// it (end of stream or reset); what was read and when it ended.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        tcp.write_all(bytes).await.unwrap();
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the relay keeps the connection open: {got:?}");
    (got, started.elapsed())
}

#[tokio::test]
async fn webhooks_over_https_with_http1_and_h2_are_delivered_to_a_plain_receiver() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, leaf) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start(&config).await;

    for (proto, alpn, body) in [
        (Proto::Http1, &b"http/1.1"[..], r#"{"n":1}"#),
        (Proto::H2, &b"h2"[..], r#"{"n":2}"#),
    ] {
        let got = https_send(&pki, relay.ingest, proto, request("POST", "/s", body))
            .await
            .unwrap();
        assert_eq!(
            got.answer.status,
            StatusCode::OK,
            "{proto:?}: {}",
            got.answer.text()
        );
        assert_eq!(got.alpn.as_deref(), Some(alpn), "{proto:?}");
        assert_eq!(got.served, leaf.der);
        assert_eq!(got.answer.json["duplicate"], false);
    }
    let delivered = rx.wait_delivered(2, Duration::from_secs(10)).await;
    let bodies: Vec<String> = delivered.iter().map(|r| r.text()).collect();
    assert_eq!(bodies, [r#"{"n":1}"#, r#"{"n":2}"#]);
}

#[tokio::test]
async fn the_admin_api_answers_over_https() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, leaf) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start(&config).await;

    for proto in [Proto::Http1, Proto::H2] {
        let health = https_send(&pki, relay.admin, proto, request("GET", "/healthz", ""))
            .await
            .unwrap();
        assert_eq!(health.answer.status, StatusCode::OK, "{proto:?}");
        assert_eq!(health.served, leaf.der);
        let dests = https_send(
            &pki,
            relay.admin,
            proto,
            request("GET", "/api/v1/destinations", ""),
        )
        .await
        .unwrap();
        assert_eq!(dests.answer.status, StatusCode::OK, "{proto:?}");
        assert!(
            dests.answer.text().contains(r#""d""#),
            "{}",
            dests.answer.text()
        );
    }
    let mut no_token = request("GET", "/api/v1/destinations", "");
    no_token.headers_mut().remove("authorization");
    let refused = https_send(&pki, relay.admin, Proto::H2, no_token)
        .await
        .unwrap();
    assert_eq!(refused.answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_refused_and_tls_clients_are_still_served() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, _) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start(&config).await;

    let plain = b"POST /s HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    for addr in [relay.ingest, relay.admin] {
        let (got, _) = raw_exchange(addr, plain).await;
        assert!(
            !got.starts_with(b"HTTP/"),
            "answered in plain HTTP: {got:?}"
        );
    }
    // And through an HTTP client: an error, not an answer.
    for url in [relay.url("/s"), relay.admin_url("/healthz")] {
        let sent = post(&client(), &url, &[], "{}").await;
        assert!(sent.is_err(), "{url}: {sent:?}");
    }

    // Still serving TLS clients, and nothing plain was stored or delivered.
    let got = https_send(
        &pki,
        relay.ingest,
        Proto::Http1,
        request("POST", "/s", "{}"),
    )
    .await
    .unwrap();
    assert_eq!(got.answer.status, StatusCode::OK);
    assert_eq!(got.answer.json["seq"], 1);
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    let health = https_send(&pki, relay.admin, Proto::H2, request("GET", "/healthz", ""))
        .await
        .unwrap();
    assert_eq!(health.answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_connection_that_never_handshakes_is_closed_after_request_timeout() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, _) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start(&config.server("request_timeout", "1s")).await;

    // Nothing at all: no ClientHello.
    let silent = tokio::spawn(raw_exchange(relay.ingest, b""));
    // Half a ClientHello: a TLS record header promising more than follows.
    let stalled = tokio::spawn(raw_exchange(
        relay.ingest,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
    ));
    // A finished handshake and then nothing: the same deadline covers the
    // first HTTP bytes.
    let started = Instant::now();
    let mut quiet = pki.connect(relay.ingest, &[b"h2"]).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a TLS connection that sends no request stays open"
    );
    let quiet_for = started.elapsed();

    for (what, task) in [("silent", silent), ("stalled", stalled)] {
        let (_, took) = task.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what} closed after {took:?}"
        );
    }
    assert!(quiet_for >= Duration::from_millis(900) && quiet_for < Duration::from_secs(5));

    let got = https_send(&pki, relay.ingest, Proto::H2, request("POST", "/s", "{}"))
        .await
        .unwrap();
    assert_eq!(got.answer.status, StatusCode::OK);
}

#[test]
fn check_rejects_a_key_that_is_not_the_certificates_and_a_missing_key_file() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let (server, other) = (pki.leaf("server"), pki.leaf("other"));
    server.write(tmp.path(), "server");
    other.write(tmp.path(), "other");
    let text = "\
[server]
listen = \"127.0.0.1:0\"
tls_cert_file = \"server.crt\"
tls_key_file = \"other.key\"

[admin]
listen = \"127.0.0.1:0\"
tls_cert_file = \"server.crt\"
tls_key_file = \"missing.key\"
";
    let path = write_file(tmp.path(), "relay.toml", text);
    let (code, stdout, stderr) = run_cli(["check".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "no `ok` line: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    let shown = path.display();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("hookrelay: {shown}:4: server.tls_key_file: ")),
        "{stderr}"
    );
    assert!(
        lines[0].contains("does not match the certificate"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "hookrelay: {shown}:9: admin.tls_key_file: cannot read key file "
        )),
        "{stderr}"
    );
    // No key material, whatever went wrong.
    for key in [&server.key_pem, &other.key_pem] {
        let body = key.lines().nth(1).unwrap();
        assert!(!stderr.contains(body));
    }
}

/// Client commands reach an HTTPS admin API, trusting exactly the
/// certificate in `tls_cert_file` (the listen address need not be in it),
/// and never read the key.
#[tokio::test]
async fn client_commands_talk_https_pinning_the_configured_certificate() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, _) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start(&config).await;
    pki.leaf("another").write(tmp.path(), "another");

    // As an operator's client config: the real admin address, no key file.
    let client_file = |cert: &str| {
        let text = format!(
            "[admin]\nlisten = \"{}\"\ntoken = \"{TOKEN}\"\ntls_cert_file = \"{cert}\"\ntls_key_file = \"no-such.key\"\n",
            relay.admin
        );
        write_file(tmp.path(), "client.toml", text)
    };
    let cli = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || run_cli(args))
            .await
            .unwrap()
    };
    let path = client_file("relay.crt").display().to_string();
    let (code, stdout, stderr) = cli(vec!["status".into(), "--config".into(), path.clone()]).await;
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("d"));
    assert!(row.is_some_and(|r| r.contains("active")), "{stdout}");
    let (code, stdout, stderr) = cli(vec![
        "--config".into(),
        path.clone(),
        "pause".into(),
        "d".into(),
    ])
    .await;
    assert_eq!((code, stdout.trim()), (0, "d: paused"), "{stderr}");

    // Another certificate, even from the same CA, is refused.
    let path = client_file("another.crt").display().to_string();
    let (code, _, stderr) = cli(vec!["status".into(), "--config".into(), path]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("serves a certificate other than the one in"),
        "{stderr}"
    );
    // An unreadable certificate file is a config problem.
    let path = client_file("missing.crt").display().to_string();
    let (code, _, stderr) = cli(vec!["status".into(), "--config".into(), path]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot use admin.tls_cert_file"),
        "{stderr}"
    );
}

/// A reload re-reads the certificate files: new connections get the new
/// certificate on both listeners, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate() {
    let pki = TestPki::new();
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::ok().await;
    let (config, old) = tls_config(&pki, tmp.path(), &rx.url("/in"));
    let relay = TestRelay::start_in(tmp.path(), &config).await;
    let pki = &pki;
    let served = |addr| async move {
        https_send(pki, addr, Proto::Http1, request("GET", "/healthz", ""))
            .await
            .unwrap()
            .served
    };
    assert_eq!(served(relay.admin).await, old.der);

    let renewed = pki.leaf("hookrelay renewed");
    renewed.write(tmp.path(), "relay");
    let reload = request("POST", "/api/v1/reload", "");
    let answer = https_send(pki, relay.admin, Proto::Http1, reload)
        .await
        .unwrap()
        .answer;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(served(relay.admin).await, renewed.der);
    let got = https_send(pki, relay.ingest, Proto::H2, request("POST", "/s", "{}"))
        .await
        .unwrap();
    assert_eq!(
        (got.answer.status, got.served),
        (StatusCode::OK, renewed.der)
    );
}
