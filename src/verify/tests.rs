//! Test helpers shared by the scheme tests; verifier-level tests (built from
//! real config text); property tests that no parser or verifier panics.

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use proptest::prelude::*;

use super::*;
use crate::config::{Config, SigEncoding};

/// An owned request for tests.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Req {
    pub(crate) fn inbound(&self) -> Inbound<'_> {
        Inbound {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// A POST to `/hook` with these headers (repeats kept) and body.
pub(crate) fn req(headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Req {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(v).unwrap());
    }
    Req {
        method: Method::POST,
        uri: Uri::from_static("/hook"),
        headers: map,
        body: body.as_ref().to_vec(),
    }
}

/// Asserts the scheme finds `r` authentic at `now`; returns the provider key.
#[track_caller]
pub(crate) fn assert_accepts(check: &dyn Check, r: &Req, now: u64) -> Option<String> {
    match check.check(&r.inbound(), now) {
        Ok(Passed::Authentic { provider_key }) => provider_key,
        Ok(Passed::Answer(reply)) => panic!("expected authentic, got a reply {reply:?}"),
        Err(e) => panic!("expected authentic, got {e:?}"),
    }
}

/// Asserts the scheme refuses `r` at `now` with `want`.
#[track_caller]
pub(crate) fn assert_rejects(check: &dyn Check, r: &Req, now: u64, want: VerifyError) {
    match check.check(&r.inbound(), now) {
        Err(e) => assert_eq!(e, want),
        Ok(_) => panic!("expected {want:?}, request was accepted"),
    }
}

/// The first source of a config holding just `source` (TOML lines of a `[[source]]`).
fn source(lines: &str) -> SourceConfig {
    let text = format!("[[source]]\nname = \"s\"\npath = \"/s\"\n{lines}\n");
    let mut c = Config::from_str(&text, Path::new("/nonexistent/relay.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    c.sources.remove(0)
}

fn verifier(lines: &str) -> Verifier {
    Verifier::new(&source(lines))
}

/// One verifier per scheme, each with `dedup_header = "x-dedup"`.
fn every_scheme() -> &'static [Verifier] {
    static ALL: OnceLock<Vec<Verifier>> = OnceLock::new();
    ALL.get_or_init(|| {
        let pk = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
        let cert = paypal::tests::CERT;
        let id = paypal::tests::WEBHOOK_ID;
        [
            r#"scheme = "none""#.to_string(),
            r#"scheme = "standard", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw""#.into(),
            r#"scheme = "stripe", secret = "whsec_test_secret""#.into(),
            r#"scheme = "github", secret = "It's a Secret to Everybody""#.into(),
            r#"scheme = "meta", secret = "app", verify_token = "vt""#.into(),
            r#"scheme = "shopify", secret = "test_secret_key""#.into(),
            r#"scheme = "slack", secret = "8f742231b10e8888abcd99yyyzzz85a5""#.into(),
            format!(r#"scheme = "discord", public_key = "{pk}""#),
            r#"scheme = "twilio", secret = "12345", public_url = "https://example.com/t""#.into(),
            format!(r#"scheme = "paypal", cert_file = "{cert}", webhook_id = "{id}""#),
            r#"scheme = "hmac", secret = "k", header = "x-sig", prefix = "sha256=""#.into(),
            r#"scheme = "token", secret = "tok-secret-value", header = "x-token""#.into(),
            r#"scheme = "basic", secret = "pw-secret-value", username = "u""#.into(),
        ]
        .iter()
        .map(|v| verifier(&format!("dedup_header = \"x-dedup\"\nverify = {{ {v} }}")))
        .collect()
    })
}

#[test]
fn every_scheme_builds_from_config() {
    let schemes: Vec<_> = every_scheme().iter().map(|v| v.scheme().as_str()).collect();
    assert_eq!(schemes.len(), 13);
    assert!(every_scheme()
        .iter()
        .all(|v| v.answers_get() == (v.scheme() == Scheme::Meta)));
}

#[test]
fn dedup_header_is_the_fallback_key() {
    let v = verifier("dedup_header = \"x-request-id\"");
    let verdict = v
        .verify(&req(&[("X-Request-Id", "r-1")], "x").inbound(), 0)
        .unwrap();
    assert_eq!(
        verdict,
        Verdict::Accept(Verified {
            idempotency_key: Some("r-1".into())
        })
    );
    let verdict = v.verify(&req(&[], "x").inbound(), 0).unwrap();
    assert_eq!(
        verdict,
        Verdict::Accept(Verified {
            idempotency_key: None
        })
    );
    // No dedup_header: no key.
    let v = verifier("");
    let r = req(&[("X-Request-Id", "r-1")], "x");
    match v.verify(&r.inbound(), 0).unwrap() {
        Verdict::Accept(verified) => assert_eq!(verified.idempotency_key(), None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_provider_id_wins_over_the_dedup_header() {
    let v = verifier(
        "dedup_header = \"x-request-id\"\nverify = { scheme = \"github\", secret = \"It's a Secret to Everybody\" }",
    );
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let with_delivery = req(
        &[
            ("x-hub-signature-256", sig),
            ("x-github-delivery", "d-1"),
            ("x-request-id", "r-1"),
        ],
        "Hello, World!",
    );
    let key = |r: &Req| match v.verify(&r.inbound(), 0).unwrap() {
        Verdict::Accept(verified) => verified.into_idempotency_key(),
        other => panic!("{other:?}"),
    };
    assert_eq!(key(&with_delivery).as_deref(), Some(":d-1"));
    let without = req(
        &[("x-hub-signature-256", sig), ("x-request-id", "r-1")],
        "Hello, World!",
    );
    assert_eq!(key(&without).as_deref(), Some("r-1"));
}

#[test]
fn credential_headers_are_named() {
    let tok =
        verifier("verify = { scheme = \"token\", secret = \"t\", header = \"x-gitlab-token\" }");
    assert_eq!(
        tok.credential_header().map(|h| h.as_str()),
        Some("x-gitlab-token")
    );
    let bearer = verifier("verify = { scheme = \"token\", secret = \"t\" }");
    assert_eq!(
        bearer.credential_header(),
        Some(&http::header::AUTHORIZATION)
    );
    let basic = verifier("verify = { scheme = \"basic\", secret = \"t\", username = \"u\" }");
    assert_eq!(
        basic.credential_header(),
        Some(&http::header::AUTHORIZATION)
    );
    assert_eq!(verifier("").credential_header(), None);
}

#[test]
fn reasons_are_fixed_and_distinct() {
    let all = VerifyError::every_kind();
    let mut reasons: Vec<_> = all.iter().map(VerifyError::reason).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
    assert!(reasons
        .iter()
        .all(|r| r.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')));
}

/// Secrets, tokens and signature values used below; none may appear in an error.
const SENSITIVE: &[&str] = &[
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_test_secret",
    "It's a Secret",
    "test_secret_key",
    "8f742231b10e",
    "12345",
    "tok-secret-value",
    "pw-secret-value",
    "757107ea0eb2",
    "deadbeef",
];

#[test]
fn errors_never_contain_secrets_or_signatures() {
    let values = [
        "sha256=757107ea0eb2deadbeef",
        "v1,deadbeef",
        "t=1,v1=deadbeef",
        "Bearer tok-secret-value",
        "Basic dTpwdy1zZWNyZXQtdmFsdWU=",
        "deadbeef",
    ];
    let names = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "stripe-signature",
        "x-hub-signature-256",
        "x-shopify-hmac-sha256",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-signature-ed25519",
        "x-signature-timestamp",
        "x-twilio-signature",
        "paypal-transmission-sig",
        "x-sig",
        "x-token",
        "authorization",
    ];
    for v in every_scheme() {
        for value in values {
            let headers: Vec<_> = names.iter().map(|n| (*n, value)).collect();
            let r = req(&headers, "deadbeef 12345");
            if let Err(e) = v.verify(&r.inbound(), 0) {
                let text = format!("{e} {e:?} {}", e.reason());
                for s in SENSITIVE {
                    assert!(!text.contains(s), "{:?}: {text}", v.scheme());
                }
            }
        }
    }
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,200}",
        "(v1,|v1a,|v0=|v1=|t=|ts=|sha256=|sha1=|Bearer |Basic |whsec_)?[A-Za-z0-9+/=,.;: ]{0,150}",
        "(t=[0-9]{0,12},)?(v1=[0-9a-f]{0,70},?){0,4}",
        "[0-9]{0,25}",
    ]
}

fn encoding() -> impl Strategy<Value = SigEncoding> {
    prop_oneof![Just(SigEncoding::Hex), Just(SigEncoding::Base64)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_header_parser_panics(s in any_text(), bytes in any::<Vec<u8>>(), enc in encoding()) {
        let _ = standard::parse_signatures(&s);
        let _ = crate::keys::WhsecKey::parse(&bytes);
        let _ = crate::keys::WhsecKey::parse(s.as_bytes());
        let _ = stripe::parse(&s);
        let _ = hub::parse_sha256(&s);
        let _ = shopify::parse(&s);
        let _ = slack::parse_signature(&s);
        let _ = discord::parse_signature(&s);
        let _ = twilio::parse_signature(&s);
        let _ = twilio::signed_params(&bytes);
        let _ = twilio::signed_params(s.as_bytes());
        let _ = twilio::url_variants(&s);
        let _ = paypal::parse_time(&s);
        let _ = crate::keys::rsa_public_key(&bytes);
        let _ = generic::parse_mac(&s, Some("sha256="), enc);
        let _ = generic::parse_mac(&s, None, enc);
        let _ = generic::auth_param(&s, "Bearer");
        let _ = generic::parse_basic(&s);
        let _ = common::parse_unix(&s);
        let _ = common::hex_decode(&s);
        let _ = common::b64_decode(&s);
        let _ = common::form_pairs(&bytes);
        let _ = common::form_value(s.as_bytes(), "hub.mode");
        let _ = common::bounded_key(&s);
    }

    #[test]
    fn der_walk_never_panics_on_mutated_certificates(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        static DER: OnceLock<Vec<u8>> = OnceLock::new();
        let der = DER.get_or_init(|| {
            let pem = std::fs::read(paypal::tests::CERT).unwrap();
            let cert = rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap();
            cert.as_ref().to_vec()
        });
        let mut d = der.clone();
        for (i, b) in flips {
            let i = i.index(d.len());
            d[i] = b;
        }
        d.truncate(cut.index(d.len() + 1));
        let _ = crate::keys::rsa_public_key(&d);
    }

    /// Any request to any verifier: no panic, and nothing random is authentic
    /// (except under `none`).
    #[test]
    fn no_verifier_panics_or_accepts_forgeries(
        headers in prop::collection::vec(
            (prop::sample::select(FUZZ_HEADERS), prop_oneof![any_text().prop_map(String::into_bytes), any::<Vec<u8>>()]),
            0..10,
        ),
        body in prop_oneof![any::<Vec<u8>>(), any_text().prop_map(String::into_bytes), Just(br#"{"type":1}"#.to_vec())],
        query in prop::option::of("[ -~]{0,80}"),
        get in any::<bool>(),
        now in any::<u64>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(name), v);
            }
        }
        let uri: Uri = match query {
            Some(q) => format!("/s?{q}").parse().unwrap_or(Uri::from_static("/s")),
            None => Uri::from_static("/s"),
        };
        let method = if get { Method::GET } else { Method::POST };
        let r = Inbound { method: &method, uri: &uri, headers: &map, body: &body };
        for v in every_scheme() {
            let out = v.verify(&r, now);
            if v.scheme() != Scheme::None {
                prop_assert!(out.is_err(), "{:?} accepted a random request: {:?}", v.scheme(), out);
            }
        }
    }
}

const FUZZ_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "stripe-signature",
    "x-hub-signature-256",
    "x-github-delivery",
    "x-github-hook-id",
    "x-shopify-hmac-sha256",
    "shopify-hmac-sha256",
    "x-shopify-event-id",
    "x-shopify-webhook-id",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-twilio-signature",
    "content-type",
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-auth-algo",
    "authorization",
    "x-sig",
    "x-token",
    "x-dedup",
];
