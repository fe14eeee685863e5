//! Inbound verification through the real server: every scheme's valid
//! requests are delivered, invalid ones get 401 and are never stored,
//! handshakes are answered and not forwarded, duplicates are not re-delivered
//! (also across a restart), and a bad PayPal certificate stops startup.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::StatusCode;
use sha2::{Sha256, Sha512};

use crate::support::*;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_test_secret";
const GH_SECRET: &str = "It's a Secret to Everybody";
const SHOPIFY_SECRET: &str = "test_secret_key";
pub(crate) const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub(crate) const META_SECRET: &str = "meta-app-secret";
pub(crate) const META_TOKEN: &str = "meta verify/token";
pub(crate) const TWILIO_TOKEN: &str = "12345";
pub(crate) const TWILIO_URL: &str = "https://relay.example.com/hooks/twilio";
const HMAC_SECRET: &str = "generic-hmac-secret";
const GITLAB_TOKEN: &str = "glpat-token-value";
const BASIC_PASSWORD: &str = "basic-password";
const PAYPAL_WEBHOOK_ID: &str = "1JE4291016473214C";
/// Ed25519 seed (32 x 0x01) and its public key.
const DISCORD_SEED: [u8; 32] = [1; 32];
pub(crate) const DISCORD_PUB: &str =
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";

fn testdata(name: &str) -> String {
    format!("{}/src/verify/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One source per scheme at `/hooks/<name>`, and `plain` without one, all
/// routed to `app` at `url`.
fn config(url: &str) -> RelayConfig {
    let cert = testdata("paypal_test_cert.pem");
    let sw_secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", SW_SECRET];
    let verified = [
        ("sw", Verify::new("standard").set("secrets", sw_secrets)),
        ("stripe", Verify::new("stripe").secret(STRIPE_SECRET)),
        ("github", Verify::new("github").secret(GH_SECRET)),
        ("shopify", Verify::new("shopify").secret(SHOPIFY_SECRET)),
        ("slack", Verify::new("slack").secret(SLACK_SECRET)),
        (
            "discord",
            Verify::new("discord").set("public_key", DISCORD_PUB),
        ),
        (
            "meta",
            Verify::new("meta")
                .secret(META_SECRET)
                .set("verify_token", META_TOKEN),
        ),
        (
            "twilio",
            Verify::new("twilio")
                .secret(TWILIO_TOKEN)
                .set("public_url", TWILIO_URL),
        ),
        (
            "paypal",
            Verify::new("paypal")
                .set("cert_file", cert)
                .set("webhook_id", PAYPAL_WEBHOOK_ID),
        ),
        (
            "generic",
            Verify::new("hmac")
                .secret(HMAC_SECRET)
                .set("header", "x-signature")
                .set("algorithm", "sha512")
                .set("encoding", "base64")
                .set("prefix", "sha512="),
        ),
        (
            "gitlab",
            Verify::new("token")
                .secret(GITLAB_TOKEN)
                .set("header", "x-gitlab-token"),
        ),
        (
            "basic",
            Verify::new("basic")
                .set("username", "relay")
                .secret(BASIC_PASSWORD),
        ),
    ];
    let mut names = Vec::new();
    let mut config = RelayConfig::new();
    for (name, verify) in verified {
        let mut source = Source::new(name, &format!("/hooks/{name}")).verify(verify);
        if name == "gitlab" {
            source = source.set("dedup_header", "idempotency-key");
        }
        config = config.source(source);
        names.push(name);
    }
    names.push("plain");
    config
        .source(Source::new("plain", "/hooks/plain").set("dedup_header", "x-request-id"))
        .destination(Dest::new("app", url).sources(names).set(
            "forward_headers",
            ["x-gitlab-token", "authorization", "x-twilio-signature"],
        ))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request: path, headers, body.
pub(crate) type Call = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn standard(id: &str, ts: u64, body: &str) -> Call {
    let key = B64.decode(SW_SECRET.trim_start_matches("whsec_")).unwrap();
    let t = ts.to_string();
    let mac = hmac256(
        &key,
        &[id.as_bytes(), b".", t.as_bytes(), b".", body.as_bytes()],
    );
    let sig = format!("v1,{}", B64.encode(mac));
    let headers = vec![
        ("webhook-signature", sig),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", t),
        ("content-type", "application/json".to_string()),
    ];
    ("/hooks/sw", headers, body.as_bytes().to_vec())
}

fn stripe(ts: u64, body: &str) -> Call {
    let t = ts.to_string();
    let mac = hmac256(
        STRIPE_SECRET.as_bytes(),
        &[t.as_bytes(), b".", body.as_bytes()],
    );
    let header = format!("t={t},v1={},v0={}", hex(&mac), "ab".repeat(32));
    (
        "/hooks/stripe",
        vec![("stripe-signature", header)],
        body.as_bytes().to_vec(),
    )
}

fn github(delivery: &str, body: &str) -> Call {
    let mac = hmac256(GH_SECRET.as_bytes(), &[body.as_bytes()]);
    let headers = vec![
        ("x-hub-signature-256", format!("sha256={}", hex(&mac))),
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-github-hook-id", "4242".to_string()),
    ];
    ("/hooks/github", headers, body.as_bytes().to_vec())
}

fn shopify(body: &str) -> Call {
    let mac = hmac256(SHOPIFY_SECRET.as_bytes(), &[body.as_bytes()]);
    let headers = vec![
        ("x-shopify-hmac-sha256", B64.encode(mac)),
        ("x-shopify-topic", "orders/create".to_string()),
        (
            "x-shopify-webhook-id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_string(),
        ),
    ];
    ("/hooks/shopify", headers, body.as_bytes().to_vec())
}

pub(crate) fn slack(ts: u64, body: &str) -> Call {
    let t = ts.to_string();
    let mac = hmac256(
        SLACK_SECRET.as_bytes(),
        &[b"v0:", t.as_bytes(), b":", body.as_bytes()],
    );
    let headers = vec![
        ("x-slack-signature", format!("v0={}", hex(&mac))),
        ("x-slack-request-timestamp", t),
    ];
    ("/hooks/slack", headers, body.as_bytes().to_vec())
}

pub(crate) fn discord(ts: u64, body: &str) -> Call {
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&DISCORD_SEED).unwrap();
    let sig = kp.sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("x-signature-ed25519", hex(sig.as_ref())),
        ("x-signature-timestamp", ts.to_string()),
    ];
    ("/hooks/discord", headers, body.as_bytes().to_vec())
}

pub(crate) fn meta(body: &str) -> Call {
    let mac = hmac256(META_SECRET.as_bytes(), &[body.as_bytes()]);
    let headers = vec![("x-hub-signature-256", format!("sha256={}", hex(&mac)))];
    ("/hooks/meta", headers, body.as_bytes().to_vec())
}

/// Twilio's form POST; the signature covers the public URL plus sorted params.
pub(crate) fn twilio(form: &[(&str, &str)]) -> Call {
    let mut sorted = form.to_vec();
    sorted.sort();
    let mut signed = TWILIO_URL.as_bytes().to_vec();
    for (k, v) in &sorted {
        signed.extend_from_slice(k.as_bytes());
        signed.extend_from_slice(v.as_bytes());
    }
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    m.update(&signed);
    let sig = B64.encode(m.finalize().into_bytes());
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect();
    let headers = vec![
        ("x-twilio-signature", sig),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    ("/hooks/twilio", headers, body.join("&").into_bytes())
}

fn paypal(id: &str, ts: u64, body: &str) -> Call {
    let pem = std::fs::read(testdata("paypal_test_key.pem")).unwrap();
    let key = match rustls_pemfile::read_one(&mut pem.as_slice()).unwrap() {
        Some(rustls_pemfile::Item::Pkcs8Key(k)) => k,
        _ => panic!("the test key is PKCS#8"),
    };
    let kp = ring::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).unwrap();
    let time = httpdate_rfc3339(ts);
    let msg = format!(
        "{id}|{time}|{PAYPAL_WEBHOOK_ID}|{}",
        crc32fast::hash(body.as_bytes())
    );
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        msg.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let headers = vec![
        ("paypal-transmission-sig", B64.encode(sig)),
        ("paypal-transmission-id", id.to_string()),
        ("paypal-transmission-time", time),
        ("paypal-auth-algo", "SHA256withRSA".to_string()),
    ];
    ("/hooks/paypal", headers, body.as_bytes().to_vec())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn httpdate_rfc3339(ts: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(ts);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn generic(body: &str) -> Call {
    let mut m = Hmac::<Sha512>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    m.update(body.as_bytes());
    let sig = format!("sha512={}", B64.encode(m.finalize().into_bytes()));
    (
        "/hooks/generic",
        vec![("x-signature", sig)],
        body.as_bytes().to_vec(),
    )
}

fn gitlab(token: &str, key: &str, body: &str) -> Call {
    let headers = vec![
        ("x-gitlab-token", token.to_string()),
        ("x-gitlab-event", "Push Hook".to_string()),
        ("idempotency-key", key.to_string()),
    ];
    ("/hooks/gitlab", headers, body.as_bytes().to_vec())
}

fn basic(user: &str, password: &str, body: &str) -> Call {
    let auth = format!("Basic {}", B64.encode(format!("{user}:{password}")));
    (
        "/hooks/basic",
        vec![("authorization", auth)],
        body.as_bytes().to_vec(),
    )
}

pub(crate) async fn send(relay: &TestRelay, call: &Call) -> Answer {
    let (path, headers, body) = call;
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(&client(), &relay.url(path), &h, body.clone())
        .await
        .unwrap()
}

/// A copy of `call` with its body changed after signing.
fn tampered(call: &Call) -> Call {
    let mut c = call.clone();
    c.2.push(b' ');
    c
}

/// A copy of `call` without header `name`.
fn without(call: &Call, name: &str) -> Call {
    let mut c = call.clone();
    c.1.retain(|(k, _)| *k != name);
    c
}

/// A copy of `call` with header `name` set to `value`.
pub(crate) fn with(call: &Call, name: &'static str, value: &str) -> Call {
    let mut c = without(call, name);
    c.1.push((name, value.to_string()));
    c
}

#[tokio::test]
async fn every_scheme_delivers_valid_requests_and_refuses_the_rest() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/in"))).await;
    let t = now();

    let valid: Vec<Call> = vec![
        standard("msg_valid_1", t, r#"{"type":"user.created"}"#),
        stripe(t, r#"{"id":"evt_1","object":"event"}"#),
        github("d-1", r#"{"zen":"Keep it logically awesome."}"#),
        shopify(r#"{"id":820982911946154508}"#),
        slack(t, r#"{"type":"event_callback","event_id":"Ev1"}"#),
        discord(t, r#"{"type":2,"id":"i1"}"#),
        meta(r#"{"object":"page","entry":[]}"#),
        twilio(&[
            ("From", "+14158675309"),
            ("Body", "hello there"),
            ("MessageSid", "SM1"),
        ]),
        paypal(
            "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
            t,
            r#"{"id":"WH-1"}"#,
        ),
        generic(r#"{"generic":true}"#),
        gitlab(GITLAB_TOKEN, "k-1", r#"{"object_kind":"push"}"#),
        basic("relay", BASIC_PASSWORD, "basic body"),
    ];

    let mut refused: Vec<(Call, StatusCode, &str)> = Vec::new();
    let unauthorized = StatusCode::UNAUTHORIZED;
    for call in &valid {
        let bad_sig = if call.0 == "/hooks/gitlab" || call.0 == "/hooks/basic" {
            "bad_credentials"
        } else {
            "bad_signature"
        };
        if call.0 != "/hooks/gitlab" && call.0 != "/hooks/basic" {
            refused.push((tampered(call), unauthorized, bad_sig));
        }
        // Drop or spoil the signature header: the first header of every call.
        // (A garbage token is simply the wrong token.)
        let garbage = if call.0 == "/hooks/gitlab" {
            "bad_credentials"
        } else {
            "malformed_header"
        };
        refused.push((without(call, call.1[0].0), unauthorized, "missing_header"));
        refused.push((with(call, call.1[0].0, "garbage"), unauthorized, garbage));
    }
    refused.extend([
        (
            standard("msg_stale", t - 3600, "{}"),
            unauthorized,
            "stale_timestamp",
        ),
        (
            standard("msg_future", t + 3600, "{}"),
            unauthorized,
            "stale_timestamp",
        ),
        (stripe(t - 3600, "{}"), unauthorized, "stale_timestamp"),
        (slack(t - 3600, "{}"), unauthorized, "stale_timestamp"),
        (discord(t - 3600, "{}"), unauthorized, "stale_timestamp"),
        (
            paypal("stale", t - 3600, "{}"),
            unauthorized,
            "stale_timestamp",
        ),
        (
            gitlab("wrong", "k-2", "{}"),
            unauthorized,
            "bad_credentials",
        ),
        (
            basic("relay", "wrong", "x"),
            unauthorized,
            "bad_credentials",
        ),
        (
            basic("root", BASIC_PASSWORD, "x"),
            unauthorized,
            "bad_credentials",
        ),
    ]);

    for (call, status, reason) in &refused {
        let a = send(&relay, call).await;
        assert_eq!(a.status, *status, "{} {:?}", call.0, a.json);
        assert_eq!(a.json["reason"], *reason, "{} {:?}", call.0, a.json);
        assert!(a.json["error"].is_string());
        assert!(a.json.get("seq").is_none());
        let text = a.json.to_string();
        for secret in [
            GH_SECRET,
            STRIPE_SECRET,
            GITLAB_TOKEN,
            BASIC_PASSWORD,
            "MfKQ9r8G",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    let a = send(&relay, &basic("relay", "wrong", "x")).await;
    assert!(a.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));

    for (i, call) in valid.iter().enumerate() {
        let a = send(&relay, call).await;
        assert_eq!(a.status, StatusCode::OK, "{} {:?}", call.0, a.json);
        assert_eq!(a.json["duplicate"], false);
        assert_eq!(a.json["seq"], i as u64 + 1, "nothing refused was stored");
    }

    let got = rx
        .wait_delivered(valid.len(), Duration::from_secs(20))
        .await;
    // Give a stray delivery a moment to show up; there must be none.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.delivered().len(), valid.len());
    for (r, call) in got.iter().zip(&valid) {
        assert_eq!(r.body.as_ref(), call.2.as_slice(), "{}", call.0);
        assert_eq!(
            Some(&call.0[7..]),
            r.header("x-hookrelay-source"),
            "in order, one per source"
        );
    }
    // The shared token and Basic credentials are never stored, so never forwarded.
    let gitlab = got
        .iter()
        .find(|r| r.header("x-hookrelay-source") == Some("gitlab"));
    assert_eq!(gitlab.unwrap().header("x-gitlab-token"), None);
    let basic = got
        .iter()
        .find(|r| r.header("x-hookrelay-source") == Some("basic"));
    assert_eq!(basic.unwrap().header("authorization"), None);
    // Signature headers are stored and forwarded when asked for.
    let tw = got
        .iter()
        .find(|r| r.header("x-hookrelay-source") == Some("twilio"));
    assert!(tw.unwrap().header("x-twilio-signature").is_some());

    // Each scheme's default event type, stored with the message.
    let listed = relay.admin_get("/api/v1/messages").await;
    let types: Vec<(&str, Option<&str>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["source"].as_str().unwrap(), m["event_type"].as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("sw", Some("user.created")),
            ("stripe", None), // the sample has no `type`
            ("github", Some("push")),
            ("shopify", Some("orders/create")),
            ("slack", Some("event_callback")),
            ("discord", Some("interaction.2")),
            ("meta", Some("page")),
            ("twilio", None),
            ("paypal", None),
            ("generic", None),
            ("gitlab", None),
            ("basic", None),
        ]
    );
}

pub(crate) async fn get_text(
    url: &str,
    method: http::Method,
) -> (StatusCode, http::HeaderMap, String) {
    let a = call(method, url).await;
    let text = a.text();
    (a.status, a.headers, text)
}

#[tokio::test]
async fn handshakes_are_answered_by_the_relay_and_not_forwarded() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/in"))).await;
    let t = now();

    // Slack url_verification, signed.
    let challenge = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let a = send(&relay, &slack(t, challenge)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json,
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    // ... and refused unsigned.
    let a = send(&relay, &tampered(&slack(t, challenge))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Discord PING, signed; a forged one is 401 (Discord probes with those).
    let a = send(&relay, &discord(t, r#"{"type":1}"#)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json, serde_json::json!({"type": 1}));
    let mut forged = discord(t, r#"{"type":1}"#);
    forged.1[0].1 = "00".repeat(64);
    assert_eq!(send(&relay, &forged).await.status, StatusCode::UNAUTHORIZED);

    // Meta's subscription GET.
    let token = META_TOKEN.replace(' ', "+").replace('/', "%2F");
    let url = relay.url(&format!(
        "/hooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
    ));
    let (status, headers, body) = get_text(&url, http::Method::GET).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "1158201444");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let wrong = relay.url("/hooks/meta?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1");
    let (status, _, body) = get_text(&wrong, http::Method::GET).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains(META_TOKEN));
    let (status, _, _) = get_text(&relay.url("/hooks/meta"), http::Method::GET).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Other methods on a Meta source, and GET elsewhere, stay 405.
    let (status, headers, _) = get_text(&url, http::Method::PUT).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    let (status, _, _) = get_text(&relay.url("/hooks/github"), http::Method::GET).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Nothing above was stored: the next message is seq 1, and is the only delivery.
    let a = send(&relay, &meta(r#"{"object":"page"}"#)).await;
    assert_eq!(
        (a.status, a.json["seq"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let got = rx.wait_delivered(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.delivered().len(), 1);
    assert_eq!(got[0].body.as_ref(), br#"{"object":"page"}"#);
}

#[tokio::test]
async fn duplicates_are_not_redelivered_even_after_a_restart() {
    let rx = Receiver::ok().await;
    let relay = TestRelay::start(&config(&rx.url("/in"))).await;
    let t = now();

    // One original per kind of key.
    let originals = [
        standard("msg_dup", t, r#"{"n":1}"#),
        stripe(t, r#"{"id":"evt_dup","object":"event"}"#),
        github("d-dup", r#"{"n":3}"#),
        with(&shopify(r#"{"n":4}"#), "x-shopify-event-id", "e-dup"),
        gitlab(GITLAB_TOKEN, "k-dup", r#"{"n":5}"#),
        with(
            &("/hooks/plain", vec![], b"plain".to_vec()),
            "x-request-id",
            "r-dup",
        ),
    ];
    let mut first = Vec::new();
    for call in &originals {
        let a = send(&relay, call).await;
        assert_eq!(
            (a.status, &a.json["duplicate"]),
            (StatusCode::OK, &serde_json::json!(false))
        );
        first.push((a.json["id"].clone(), a.json["seq"].clone()));
    }

    // The providers' retries: same key, re-signed later, even with another body.
    let retries = |t: u64| {
        vec![
            standard("msg_dup", t + 7, r#"{"n":1}"#),
            stripe(t + 7, r#"{"id":"evt_dup","object":"event","retry":true}"#),
            github("d-dup", r#"{"n":3}"#),
            with(&shopify(r#"{"n":4}"#), "x-shopify-event-id", "e-dup"),
            gitlab(GITLAB_TOKEN, "k-dup", r#"{"n":5}"#),
            with(
                &("/hooks/plain", vec![], b"plain".to_vec()),
                "x-request-id",
                "r-dup",
            ),
        ]
    };
    let check = |a: &Answer, i: usize| {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        assert_eq!(a.json["duplicate"], true, "{i}: {:?}", a.json);
        assert_eq!((a.json["id"].clone(), a.json["seq"].clone()), first[i]);
    };
    for (i, call) in retries(t).iter().enumerate() {
        check(&send(&relay, call).await, i);
    }
    // The same GitHub delivery for another hook is another key.
    let other_hook = with(&github("d-dup", r#"{"n":3}"#), "x-github-hook-id", "9999");
    let a = send(&relay, &other_hook).await;
    assert_eq!(a.json["duplicate"], false);
    // A forged request reusing a known key is refused, not reported as duplicate.
    let forged = tampered(&standard("msg_dup", t, r#"{"n":1}"#));
    assert_eq!(send(&relay, &forged).await.status, StatusCode::UNAUTHORIZED);

    rx.wait_delivered(originals.len() + 1, Duration::from_secs(20))
        .await;
    let relay = relay.restart().await;
    for (i, call) in retries(now()).iter().enumerate() {
        check(&send(&relay, call).await, i);
    }
    let a = send(&relay, &standard("msg_after_restart", now(), "{}")).await;
    assert_eq!(a.json["duplicate"], false);
    let n = originals.len() + 2;
    assert_eq!(a.json["seq"], n as u64);
    rx.wait_delivered(n, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.delivered().len(), n, "no duplicate was delivered");
}

#[test]
fn an_unusable_paypal_certificate_is_a_config_error_that_check_reports() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    write_file(dir.path(), "cert.pem", pem);
    let file = RelayConfig::new()
        .source(
            Source::new("paypal", "/hooks/paypal").verify(
                Verify::new("paypal")
                    .set("cert_file", "cert.pem")
                    .set("webhook_id", "W"),
            ),
        )
        .write(dir.path());
    for command in ["check", "serve"] {
        let (code, _, stderr) = run_cli([command.as_ref(), "--config".as_ref(), file.as_os_str()]);
        assert_eq!(code, 2, "{command}: {stderr}");
        let at = format!("{}:", file.display());
        assert!(
            stderr.contains(&at)
                && stderr.contains(": source[0].verify.cert_file: ")
                && stderr.contains("cert.pem: not an X.509 certificate"),
            "{command}: {stderr}"
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing started");
}
