//! A source's `verify` table: which keys each scheme needs, allows and refuses.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::ctx::{Ctx, SecretKeys};
use super::raw::RawVerify;
use super::validate::{decodes_to_key, url};
use super::{HmacAlgorithm, Scheme, SigEncoding, VerifyConfig};

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

fn unverified() -> VerifyConfig {
    VerifyConfig {
        scheme: Scheme::None,
        secrets: Vec::new(),
        tolerance: DEFAULT_TOLERANCE,
        header: None,
        algorithm: HmacAlgorithm::Sha256,
        encoding: SigEncoding::Hex,
        prefix: None,
        verify_token: None,
        public_key: None,
        public_url: None,
        cert_file: None,
        webhook_id: None,
        username: None,
    }
}

/// Whether `key` (a scheme-specific key of the verify table) applies to `scheme`.
fn applies(scheme: Scheme, key: &str) -> bool {
    use Scheme::*;
    match key {
        "tolerance" => matches!(scheme, Standard | Stripe | Slack | Discord | Paypal),
        "header" => matches!(scheme, Hmac | Token),
        "algorithm" | "encoding" | "prefix" => scheme == Hmac,
        "verify_token" | "verify_token_env" | "verify_token_file" => scheme == Meta,
        "public_key" => scheme == Discord,
        "public_url" => scheme == Twilio,
        "cert_file" | "webhook_id" => scheme == Paypal,
        "username" => scheme == Basic,
        _ => false,
    }
}

/// Why a scheme takes no shared secret, or `None` when it needs one.
fn no_secret_reason(scheme: Scheme) -> Option<&'static str> {
    match scheme {
        Scheme::None => Some("nothing is verified"),
        Scheme::Discord => Some("it verifies with `public_key`"),
        Scheme::Paypal => Some("it verifies with `cert_file`"),
        _ => None,
    }
}

fn span_of<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

pub(super) fn verify(
    cx: &mut Ctx<'_>,
    source: &str,
    raw: Option<&Spanned<RawVerify>>,
) -> VerifyConfig {
    let Some(v) = raw else { return unverified() };
    let base = format!("{source}.verify");
    let k = |name: &str| format!("{base}.{name}");
    let r = v.get_ref();
    let Some(scheme) = r.scheme.as_ref().map(|s| *s.get_ref()) else {
        cx.missing(v.span(), &k("scheme"));
        return unverified();
    };
    let sname = scheme.as_str();

    let specific = [
        ("tolerance", span_of(&r.tolerance)),
        ("header", span_of(&r.header)),
        ("algorithm", span_of(&r.algorithm)),
        ("encoding", span_of(&r.encoding)),
        ("prefix", span_of(&r.prefix)),
        ("verify_token", span_of(&r.verify_token)),
        ("verify_token_env", span_of(&r.verify_token_env)),
        ("verify_token_file", span_of(&r.verify_token_file)),
        ("public_key", span_of(&r.public_key)),
        ("public_url", span_of(&r.public_url)),
        ("cert_file", span_of(&r.cert_file)),
        ("webhook_id", span_of(&r.webhook_id)),
        ("username", span_of(&r.username)),
    ];
    for (name, span) in specific {
        if let (Some(span), false) = (span, applies(scheme, name)) {
            cx.problem(
                span,
                &k(name),
                format!("`{name}` does not apply to scheme \"{sname}\""),
            );
        }
    }

    let mut out = unverified();
    out.scheme = scheme;
    out.secrets = secrets(cx, &base, v, scheme);

    if applies(scheme, "tolerance") {
        out.tolerance = cx.positive_duration(&r.tolerance, &k("tolerance"), DEFAULT_TOLERANCE);
    }
    match scheme {
        Scheme::Hmac | Scheme::Token => {
            out.header = r
                .header
                .as_ref()
                .and_then(|h| cx.header_name(h, &k("header")));
            if scheme == Scheme::Hmac {
                if r.header.is_none() {
                    cx.missing(v.span(), &k("header"));
                }
                out.algorithm = r
                    .algorithm
                    .as_ref()
                    .map_or(HmacAlgorithm::Sha256, |a| *a.get_ref());
                out.encoding = r
                    .encoding
                    .as_ref()
                    .map_or(SigEncoding::Hex, |e| *e.get_ref());
                out.prefix = r
                    .prefix
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .filter(|p| !p.is_empty());
            }
        }
        Scheme::Meta => {
            let keys = SecretKeys {
                prefix: "verify_token",
                one: &r.verify_token,
                many: None,
                env: &r.verify_token_env,
                many_env: None,
                file: &r.verify_token_file,
            };
            if keys.given().is_empty() {
                let msg = format!(
                    "scheme \"meta\" needs a verify token: set one of {}",
                    keys.choices()
                );
                cx.problem(v.span(), &k("verify_token"), msg);
            }
            out.verify_token = cx
                .read_secrets(&base, &keys)
                .into_iter()
                .next()
                .map(|g| g.secret);
        }
        Scheme::Discord => match &r.public_key {
            None => cx.missing(v.span(), &k("public_key")),
            Some(pk) => match decode_hex32(pk.get_ref().trim()) {
                Some(key) => out.public_key = Some(key),
                None => cx.at(
                    pk,
                    &k("public_key"),
                    "must be 64 hex characters (the application's Ed25519 public key)",
                ),
            },
        },
        Scheme::Twilio => match &r.public_url {
            None => cx.missing(v.span(), &k("public_url")),
            Some(u) => {
                out.public_url = url(cx, u, &k("public_url")).map(|_| u.get_ref().clone());
            }
        },
        Scheme::Paypal => {
            match &r.cert_file {
                None => cx.missing(v.span(), &k("cert_file")),
                Some(f) => out.cert_file = cx.existing_file(f, &k("cert_file")),
            }
            match &r.webhook_id {
                None => cx.missing(v.span(), &k("webhook_id")),
                Some(w) if w.get_ref().trim().is_empty() => {
                    cx.at(w, &k("webhook_id"), "must not be empty")
                }
                Some(w) => out.webhook_id = Some(w.get_ref().clone()),
            }
        }
        Scheme::Basic => match &r.username {
            None => cx.missing(v.span(), &k("username")),
            Some(u) if u.get_ref().is_empty() || u.get_ref().contains(':') => {
                cx.at(u, &k("username"), "must be non-empty and without `:`")
            }
            Some(u) => out.username = Some(u.get_ref().clone()),
        },
        _ => {}
    }
    out
}

/// The shared secrets: required unless the scheme takes none; for `standard`
/// each must be base64 (optionally after `whsec_`).
fn secrets(
    cx: &mut Ctx<'_>,
    base: &str,
    v: &Spanned<RawVerify>,
    scheme: Scheme,
) -> Vec<super::Secret> {
    let r = v.get_ref();
    let keys = SecretKeys {
        prefix: "secret",
        one: &r.secret,
        many: Some(&r.secrets),
        env: &r.secret_env,
        many_env: Some(&r.secrets_env),
        file: &r.secret_file,
    };
    let given = keys.given();
    let sname = scheme.as_str();
    if let Some(reason) = no_secret_reason(scheme) {
        for (name, span) in given {
            let msg = format!("scheme \"{sname}\" takes no secret ({reason})");
            cx.problem(span, &format!("{base}.{name}"), msg);
        }
        return Vec::new();
    }
    if given.is_empty() {
        let msg = format!(
            "scheme \"{sname}\" needs a secret: set one of {}",
            keys.choices()
        );
        cx.problem(v.span(), base, msg);
        return Vec::new();
    }
    let read = cx.read_secrets(base, &keys);
    if scheme == Scheme::Standard {
        for g in &read {
            let b = g.secret.expose();
            if !decodes_to_key(b.strip_prefix(b"whsec_").unwrap_or(b)) {
                let msg = "a \"standard\" secret must be base64, optionally after `whsec_`";
                cx.problem(g.span.clone(), &g.key, msg);
            }
        }
    }
    read.into_iter().map(|g| g.secret).collect()
}

/// 64 hex characters to 32 bytes.
fn decode_hex32(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(*p.first()?)? << 4 | nibble(*p.get(1)?)?))
        .collect()
}
