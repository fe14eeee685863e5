//! The `signature_headers` fuzz target's logic, kept beside the schemes so it
//! reaches their parsers: every scheme's verifier on a request read from the
//! fuzzer's bytes, every header parser on raw text, and per scheme a
//! sign-then-verify round trip with fixed test secrets.
//!
//! Input: the first byte picks a scheme (or, one past the last, the raw
//! parsers); the rest is a request in a small text form, so seeds are
//! readable: header lines `name: value`, optional lines `GET`, `?query` and
//! `@now` (Unix seconds), then an empty line and the body.

use std::path::Path;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use ring::signature::Ed25519KeyPair;

use super::{common, discord, generic, hub, paypal, shopify, slack, standard, stripe, twilio};
use super::{Inbound, Verdict, Verifier, VerifyError};
use crate::config::{Config, HmacAlgorithm, Scheme, SigEncoding};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_test_secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SHOPIFY_SECRET: &str = "test_secret_key";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// Discord's key pair: the seed of the self-computed vector in `discord.rs`.
const DISCORD_SEED: [u8; 32] = [1; 32];
const DISCORD_PUBLIC_KEY: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const TWILIO_TOKEN: &str = "12345";
const TWILIO_URL: &str = "https://mycompany.com/myapp.php";
const PAYPAL_CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/verify/testdata/paypal_test_cert.pem"
);
const PAYPAL_WEBHOOK_ID: &str = "1JE4291016473214C";
const HMAC_SECRET: &str = "k";
const TOKEN_SECRET: &str = "tok-secret-value";
const BASIC_USER: &str = "u";
const BASIC_PASSWORD: &str = "pw-secret-value";

/// Secrets long enough that finding one in an error message cannot be chance.
const SECRETS: &[&str] = &[
    STANDARD_SECRET,
    STRIPE_SECRET,
    GITHUB_SECRET,
    SHOPIFY_SECRET,
    SLACK_SECRET,
    TOKEN_SECRET,
    BASIC_PASSWORD,
];

/// The id the round trip signs for `standard`.
const ROUND_TRIP_ID: &str = "msg_fuzz";

/// One verifier per scheme, in the order the selector byte indexes them.
fn verifiers() -> &'static [Verifier] {
    static ALL: OnceLock<Vec<Verifier>> = OnceLock::new();
    ALL.get_or_init(|| {
        let schemes = [
            r#"scheme = "none""#.to_string(),
            format!(r#"scheme = "standard", secret = "{STANDARD_SECRET}""#),
            format!(r#"scheme = "stripe", secret = "{STRIPE_SECRET}""#),
            format!(r#"scheme = "github", secret = "{GITHUB_SECRET}""#),
            format!(r#"scheme = "meta", secret = "{GITHUB_SECRET}", verify_token = "vt""#),
            format!(r#"scheme = "shopify", secret = "{SHOPIFY_SECRET}""#),
            format!(r#"scheme = "slack", secret = "{SLACK_SECRET}""#),
            format!(r#"scheme = "discord", public_key = "{DISCORD_PUBLIC_KEY}""#),
            format!(
                r#"scheme = "twilio", secret = "{TWILIO_TOKEN}", public_url = "{TWILIO_URL}""#
            ),
            format!(
                r#"scheme = "paypal", cert_file = "{PAYPAL_CERT}", webhook_id = "{PAYPAL_WEBHOOK_ID}""#
            ),
            format!(
                r#"scheme = "hmac", secret = "{HMAC_SECRET}", header = "x-sig", prefix = "sha256=""#
            ),
            format!(r#"scheme = "token", secret = "{TOKEN_SECRET}", header = "x-token""#),
            format!(
                r#"scheme = "basic", secret = "{BASIC_PASSWORD}", username = "{BASIC_USER}""#
            ),
        ];
        let mut text = String::new();
        for (i, verify) in schemes.iter().enumerate() {
            text.push_str(&format!(
                "[[source]]\nname = \"s{i}\"\npath = \"/s{i}\"\ndedup_header = \"x-dedup\"\nverify = {{ {verify} }}\n"
            ));
        }
        let config = Config::from_str_with_env(&text, Path::new("/nonexistent/relay.toml"), &|_| {
            None
        })
        .unwrap_or_else(|e| panic!("the fuzz verifiers' config is invalid: {e}"));
        config
            .sources
            .iter()
            .map(Verifier::new)
            .collect()
    })
}

/// A request read from the fuzzer's text form (see the module doc).
struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
    now: u64,
}

impl Request {
    fn read(data: &[u8]) -> Request {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let mut r = Request {
            method: Method::POST,
            uri: Uri::from_static("/s"),
            headers: HeaderMap::new(),
            body: body.to_vec(),
            now: 0,
        };
        for line in head.split(|&b| b == b'\n') {
            match line {
                b"GET" => r.method = Method::GET,
                [b'?', query @ ..] => {
                    if let Ok(uri) = Uri::try_from([b"/s?", query].concat()) {
                        r.uri = uri;
                    }
                }
                [b'@', now @ ..] => {
                    r.now = std::str::from_utf8(now)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                _ => {
                    let Some(colon) = line.iter().position(|&b| b == b':') else {
                        continue;
                    };
                    let value = &line[colon + 1..];
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(&line[..colon]),
                        HeaderValue::from_bytes(value),
                    ) {
                        r.headers.append(name, value);
                    }
                }
            }
        }
        r
    }

    fn inbound(&self) -> Inbound<'_> {
        Inbound {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// The fuzz entry point; see [`crate::fuzzing::signature_headers`].
pub(crate) fn signature_headers(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let all = verifiers();
    match all.get(usize::from(selector) % (all.len() + 1)) {
        Some(v) => {
            let r = Request::read(rest);
            let outcome = v.verify(&r.inbound(), r.now);
            if v.scheme() == Scheme::None {
                assert!(matches!(outcome, Ok(Verdict::Accept(_))), "{outcome:?}");
            }
            if let Err(e) = &outcome {
                assert_no_secret(e);
            }
            round_trip(v, &r.body, r.now);
        }
        None => parsers(rest),
    }
}

fn assert_no_secret(e: &VerifyError) {
    let text = format!("{e} {e:?}");
    for s in SECRETS {
        assert!(!text.contains(s), "an error shows a secret: {text}");
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    common::mac(HmacAlgorithm::Sha256, key, parts).expect("HMAC takes keys of any length")
}

/// Signs `body` the way the provider would, with the fixed secrets, and
/// checks that the verifier accepts it, and (for schemes that sign the raw
/// body) that one more byte of body is refused.
fn round_trip(v: &Verifier, body: &[u8], now: u64) {
    // parse_unix takes at most 19 digits.
    let ts = now % 10_000_000_000_000_000_000;
    let t = ts.to_string();
    let t = t.as_bytes();
    let hex = common::hex_encode;
    let headers: Vec<(&str, String)> = match v.scheme() {
        Scheme::None | Scheme::Paypal => return,
        Scheme::Standard => {
            let b64 = STANDARD_SECRET.trim_start_matches("whsec_");
            let key = B64.decode(b64).expect("the fixed secret is base64");
            let id = ROUND_TRIP_ID.as_bytes();
            let mac = hmac_sha256(&key, &[id, b".", t, b".", body]);
            vec![
                ("webhook-id", ROUND_TRIP_ID.into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", format!("v1,{}", B64.encode(mac))),
            ]
        }
        Scheme::Stripe => {
            let mac = hmac_sha256(STRIPE_SECRET.as_bytes(), &[t, b".", body]);
            vec![("stripe-signature", format!("t={ts},v1={}", hex(&mac)))]
        }
        Scheme::Github | Scheme::Meta => {
            let mac = hmac_sha256(GITHUB_SECRET.as_bytes(), &[body]);
            vec![("x-hub-signature-256", format!("sha256={}", hex(&mac)))]
        }
        Scheme::Shopify => {
            let mac = hmac_sha256(SHOPIFY_SECRET.as_bytes(), &[body]);
            vec![("x-shopify-hmac-sha256", B64.encode(mac))]
        }
        Scheme::Slack => {
            let mac = hmac_sha256(SLACK_SECRET.as_bytes(), &[b"v0:", t, b":", body]);
            vec![
                ("x-slack-request-timestamp", ts.to_string()),
                ("x-slack-signature", format!("v0={}", hex(&mac))),
            ]
        }
        Scheme::Discord => {
            let pair = Ed25519KeyPair::from_seed_unchecked(&DISCORD_SEED)
                .expect("a 32-byte seed is a key");
            let sig = pair.sign(&[t, body].concat());
            vec![
                ("x-signature-timestamp", ts.to_string()),
                ("x-signature-ed25519", hex(sig.as_ref())),
            ]
        }
        Scheme::Twilio => {
            let params = twilio::signed_params(body);
            let parts: [&[u8]; 2] = [TWILIO_URL.as_bytes(), &params];
            let mac = common::mac(HmacAlgorithm::Sha1, TWILIO_TOKEN.as_bytes(), &parts)
                .expect("HMAC takes keys of any length");
            vec![
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-twilio-signature", B64.encode(mac)),
            ]
        }
        Scheme::Hmac => {
            let mac = hmac_sha256(HMAC_SECRET.as_bytes(), &[body]);
            vec![("x-sig", format!("sha256={}", hex(&mac)))]
        }
        Scheme::Token => vec![("x-token", TOKEN_SECRET.into())],
        Scheme::Basic => {
            let credentials = B64.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"));
            vec![("authorization", format!("Basic {credentials}"))]
        }
    };
    let mut signed = Request {
        method: Method::POST,
        uri: Uri::from_static("/s"),
        headers: HeaderMap::new(),
        body: body.to_vec(),
        now: ts,
    };
    for (name, value) in headers {
        let value = HeaderValue::try_from(value).expect("signed values are visible ASCII");
        signed.headers.append(HeaderName::from_static(name), value);
    }
    let outcome = v.verify(&signed.inbound(), signed.now);
    match (v.scheme(), &outcome) {
        (Scheme::Standard, Ok(Verdict::Accept(ok))) => {
            assert_eq!(ok.idempotency_key(), Some(ROUND_TRIP_ID));
        }
        (Scheme::Slack | Scheme::Discord, Ok(_)) | (_, Ok(Verdict::Accept(_))) => {}
        (scheme, other) => panic!("{scheme:?} refused its own signature: {other:?}"),
    }
    let signs_raw_body = !matches!(v.scheme(), Scheme::Twilio | Scheme::Token | Scheme::Basic);
    if signs_raw_body {
        signed.body.push(b'!');
        let outcome = v.verify(&signed.inbound(), signed.now);
        assert_eq!(
            outcome,
            Err(VerifyError::BadSignature),
            "{:?} accepted a changed body",
            v.scheme()
        );
    }
}

/// Every header parser and setup-time parser on the raw bytes, with the
/// codecs' round trips.
fn parsers(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let s = text.as_ref();
    let _ = standard::parse_signatures(s);
    let _ = crate::keys::WhsecKey::parse(bytes);
    let _ = crate::keys::Ed25519PublicKey::from_hex(s);
    let _ = stripe::parse(s);
    let _ = hub::parse_sha256(s);
    let _ = shopify::parse(s);
    let _ = slack::parse_signature(s);
    let _ = discord::parse_signature(s);
    let _ = discord::ed25519_verify(bytes, bytes, bytes);
    let _ = twilio::parse_signature(s);
    let _ = twilio::signed_params(bytes);
    let _ = twilio::url_variants(s);
    let _ = twilio::Twilio::new(Vec::new(), s);
    let _ = paypal::parse_time(s);
    let _ = crate::keys::rsa_public_key(bytes);
    let _ = crate::keys::rsa_public_key_of_pem(bytes);
    for encoding in [SigEncoding::Hex, SigEncoding::Base64] {
        let _ = generic::parse_mac(s, Some("sha256="), encoding);
        let _ = generic::parse_mac(s, None, encoding);
    }
    let _ = generic::auth_param(s, "Bearer");
    let _ = generic::parse_basic(s);
    let _ = common::parse_unix(s);
    let _ = common::form_value(bytes, "hub.mode");
    let _ = common::bounded_key(s);
    if let Some(decoded) = common::hex_decode(s) {
        assert_eq!(common::hex_encode(&decoded), s.to_ascii_lowercase());
    }
    assert_eq!(
        common::hex_decode(&common::hex_encode(bytes)).as_deref(),
        Some(bytes)
    );
    assert_eq!(
        common::b64_decode(&B64.encode(bytes)).as_deref(),
        Some(bytes)
    );
}
