//! A source's `verify` table to a [`VerifySpec`]: one parser per scheme, each
//! reading only the keys its scheme takes, so a key that no parser read is
//! reported as not applying to the scheme. Keys are decoded here, once.
//!
//! Adding a scheme: a [`Scheme`] name, a [`VerifySpec`] variant, its parser
//! below (one arm in [`verify`]), and its verifier file under `src/verify/`.

use std::ops::Range;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::ctx::{Ctx, SecretKeys};
use super::raw::{RawVerify, Text};
use super::{HmacAlgorithm, Scheme, Secret, SigEncoding};
use crate::keys::{self, Ed25519PublicKey, RsaPublicKey, WhsecKey};

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// What a source's verifier needs, parsed and decoded: one variant per scheme.
/// Secrets are lists because any one matching is enough (key rotation).
#[derive(Debug, Clone)]
pub enum VerifySpec {
    /// Nothing is verified.
    None,
    /// Standard Webhooks (and Svix): `whsec_` keys.
    Standard {
        keys: Vec<WhsecKey>,
        tolerance: Duration,
    },
    Stripe {
        secrets: Vec<Secret>,
        tolerance: Duration,
    },
    Github {
        secrets: Vec<Secret>,
    },
    Shopify {
        secrets: Vec<Secret>,
    },
    Slack {
        secrets: Vec<Secret>,
        tolerance: Duration,
    },
    /// The app secret signs; the verify token answers the subscription handshake.
    Meta {
        secrets: Vec<Secret>,
        verify_token: Secret,
    },
    Discord {
        public_key: Ed25519PublicKey,
        tolerance: Duration,
    },
    /// `public_url`: the URL Twilio posts to, as Twilio signs it.
    Twilio {
        secrets: Vec<Secret>,
        public_url: String,
    },
    /// The RSA key of the configured `cert_file`.
    Paypal {
        public_key: RsaPublicKey,
        webhook_id: String,
        tolerance: Duration,
    },
    /// An HMAC of the body in a configured header.
    Hmac {
        secrets: Vec<Secret>,
        header: HeaderName,
        algorithm: HmacAlgorithm,
        encoding: SigEncoding,
        prefix: Option<String>,
    },
    /// A shared token in `header`, or `Authorization: Bearer` when `None`.
    Token {
        secrets: Vec<Secret>,
        header: Option<HeaderName>,
    },
    /// HTTP Basic with the secrets as passwords.
    Basic {
        passwords: Vec<Secret>,
        username: String,
    },
}

impl VerifySpec {
    /// The shared secrets of the schemes that take them as written (empty for
    /// `none`, `standard`, whose keys are decoded, `discord` and `paypal`).
    pub fn shared_secrets(&self) -> &[Secret] {
        match self {
            VerifySpec::Stripe { secrets, .. }
            | VerifySpec::Github { secrets }
            | VerifySpec::Shopify { secrets }
            | VerifySpec::Slack { secrets, .. }
            | VerifySpec::Meta { secrets, .. }
            | VerifySpec::Twilio { secrets, .. }
            | VerifySpec::Hmac { secrets, .. }
            | VerifySpec::Token { secrets, .. }
            | VerifySpec::Basic {
                passwords: secrets, ..
            } => secrets,
            VerifySpec::None
            | VerifySpec::Standard { .. }
            | VerifySpec::Discord { .. }
            | VerifySpec::Paypal { .. } => &[],
        }
    }

    /// The replay tolerance of the schemes that sign a timestamp.
    pub fn tolerance(&self) -> Option<Duration> {
        match self {
            VerifySpec::Standard { tolerance, .. }
            | VerifySpec::Stripe { tolerance, .. }
            | VerifySpec::Slack { tolerance, .. }
            | VerifySpec::Discord { tolerance, .. }
            | VerifySpec::Paypal { tolerance, .. } => Some(*tolerance),
            _ => None,
        }
    }

    /// The scheme's name in the config.
    pub fn scheme(&self) -> Scheme {
        match self {
            VerifySpec::None => Scheme::None,
            VerifySpec::Standard { .. } => Scheme::Standard,
            VerifySpec::Stripe { .. } => Scheme::Stripe,
            VerifySpec::Github { .. } => Scheme::Github,
            VerifySpec::Shopify { .. } => Scheme::Shopify,
            VerifySpec::Slack { .. } => Scheme::Slack,
            VerifySpec::Meta { .. } => Scheme::Meta,
            VerifySpec::Discord { .. } => Scheme::Discord,
            VerifySpec::Twilio { .. } => Scheme::Twilio,
            VerifySpec::Paypal { .. } => Scheme::Paypal,
            VerifySpec::Hmac { .. } => Scheme::Hmac,
            VerifySpec::Token { .. } => Scheme::Token,
            VerifySpec::Basic { .. } => Scheme::Basic,
        }
    }
}

/// The keys (besides `scheme`) a scheme takes: what its parser reads.
pub(super) fn keys_of(scheme: Scheme) -> Vec<&'static str> {
    let raw = RawVerify::default();
    let mut cx = Ctx::new("", std::path::Path::new(""), &|_| None);
    let mut t = Table {
        cx: &mut cx,
        raw: &raw,
        span: 0..0,
        base: String::new(),
        scheme,
        read: Vec::new(),
        refused: Vec::new(),
    };
    let _ = parse_scheme(&mut t);
    t.read
}

/// "`scheme`, `secret`, ...": every key a verify table of this scheme may
/// hold, for messages about the others.
pub(super) fn takes(scheme: Scheme) -> String {
    let keys: Vec<String> = std::iter::once("scheme")
        .chain(keys_of(scheme))
        .map(|k| format!("`{k}`"))
        .collect();
    keys.join(", ")
}

/// Parses `source[i].verify`; no table means `none`. `None` when a problem
/// was recorded.
pub(super) fn verify(
    cx: &mut Ctx<'_>,
    source: &str,
    raw: Option<&Spanned<RawVerify>>,
) -> Option<VerifySpec> {
    let Some(v) = raw else {
        return Some(VerifySpec::None);
    };
    let base = format!("{source}.verify");
    let Some(scheme) = v.get_ref().scheme.as_ref().map(|s| *s.get_ref()) else {
        cx.missing(v.span(), &format!("{base}.scheme"));
        return None;
    };
    let mut t = Table {
        cx,
        raw: v.get_ref(),
        span: v.span(),
        base,
        scheme,
        read: Vec::new(),
        refused: Vec::new(),
    };
    let spec = parse_scheme(&mut t);
    t.finish();
    spec
}

/// Runs the scheme's parser: one arm per scheme.
fn parse_scheme(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    match t.scheme {
        Scheme::None => t
            .no_secret("nothing is verified")
            .then_some(VerifySpec::None),
        Scheme::Standard => standard(t),
        Scheme::Stripe => Some(VerifySpec::Stripe {
            tolerance: t.tolerance(),
            secrets: t.secrets(),
        }),
        Scheme::Github => Some(VerifySpec::Github {
            secrets: t.secrets(),
        }),
        Scheme::Shopify => Some(VerifySpec::Shopify {
            secrets: t.secrets(),
        }),
        Scheme::Slack => Some(VerifySpec::Slack {
            tolerance: t.tolerance(),
            secrets: t.secrets(),
        }),
        Scheme::Meta => meta(t),
        Scheme::Discord => discord(t),
        Scheme::Twilio => twilio(t),
        Scheme::Paypal => paypal(t),
        Scheme::Hmac => hmac(t),
        Scheme::Token => token(t),
        Scheme::Basic => basic(t),
    }
}

fn standard(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let tolerance = t.tolerance();
    let keys = t.cx_secrets(|cx, g| {
        let key = WhsecKey::parse(g.secret.expose());
        if key.is_none() {
            let msg = "a \"standard\" secret must be base64, optionally after `whsec_`";
            cx.problem(g.span.clone(), &g.key, msg);
        }
        key
    })?;
    Some(VerifySpec::Standard { keys, tolerance })
}

fn meta(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let secrets = t.secrets();
    t.read
        .extend(["verify_token", "verify_token_env", "verify_token_file"]);
    let r = t.raw;
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
        t.cx.problem(t.span.clone(), &t.key("verify_token"), msg);
        return None;
    }
    let verify_token = t.cx.read_secrets(&t.base, &keys).into_iter().next()?.secret;
    Some(VerifySpec::Meta {
        secrets,
        verify_token,
    })
}

fn discord(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    t.no_secret("it verifies with `public_key`");
    let tolerance = t.tolerance();
    let public_key = t.parsed(
        "public_key",
        |s| Ed25519PublicKey::from_hex(s.trim()).ok_or(()),
        |()| "must be 64 hex characters (the application's Ed25519 public key)".into(),
    )?;
    Some(VerifySpec::Discord {
        public_key,
        tolerance,
    })
}

fn twilio(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let secrets = t.secrets();
    let v = t.required("public_url")?;
    let key = t.key("public_url");
    t.cx.http_url(v, &key)?;
    Some(VerifySpec::Twilio {
        secrets,
        public_url: v.get_ref().clone(),
    })
}

fn paypal(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    t.no_secret("it verifies with `cert_file`");
    let tolerance = t.tolerance();
    let public_key = t.required("cert_file").and_then(|f| {
        let key = t.key("cert_file");
        let path = t.cx.existing_file(f, &key)?;
        let shown = path.display();
        let key_of = std::fs::read(&path)
            .map_err(|e| format!("cannot read {shown}: {e}"))
            .and_then(|pem| keys::rsa_public_key_of_pem(&pem).map_err(|e| format!("{shown}: {e}")));
        key_of.map_err(|msg| t.cx.at(f, &key, msg)).ok()
    });
    let webhook_id = t.required("webhook_id").and_then(|w| {
        if w.get_ref().trim().is_empty() {
            let key = t.key("webhook_id");
            t.cx.at(w, &key, "must not be empty");
            return None;
        }
        Some(w.get_ref().clone())
    });
    Some(VerifySpec::Paypal {
        public_key: public_key?,
        webhook_id: webhook_id?,
        tolerance,
    })
}

fn hmac(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let secrets = t.secrets();
    let header = t.header(true);
    t.read.extend(["algorithm", "encoding", "prefix"]);
    let r = t.raw;
    Some(VerifySpec::Hmac {
        secrets,
        header: header?,
        algorithm: r
            .algorithm
            .as_ref()
            .map_or(HmacAlgorithm::Sha256, |a| *a.get_ref()),
        encoding: r
            .encoding
            .as_ref()
            .map_or(SigEncoding::Hex, |e| *e.get_ref()),
        prefix: r
            .prefix
            .as_ref()
            .map(|p| p.get_ref().clone())
            .filter(|p| !p.is_empty()),
    })
}

fn token(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let secrets = t.secrets();
    let given = t.raw.header.is_some();
    let header = t.header(false);
    if given && header.is_none() {
        return None;
    }
    Some(VerifySpec::Token { secrets, header })
}

fn basic(t: &mut Table<'_, '_, '_>) -> Option<VerifySpec> {
    let passwords = t.secrets();
    let u = t.required("username")?;
    if u.get_ref().is_empty() || u.get_ref().contains(':') {
        let key = t.key("username");
        t.cx.at(u, &key, "must be non-empty and without `:`");
        return None;
    }
    Some(VerifySpec::Basic {
        passwords,
        username: u.get_ref().clone(),
    })
}

/// One `verify` table being parsed: remembers which keys the scheme's parser
/// read, so [`Table::finish`] can report the others.
struct Table<'c, 'a, 'r> {
    cx: &'c mut Ctx<'a>,
    raw: &'r RawVerify,
    span: Range<usize>,
    /// `source[i].verify`.
    base: String,
    scheme: Scheme,
    read: Vec<&'static str>,
    /// Keys the scheme refuses with its own reason (no secret for `discord`).
    refused: Vec<&'static str>,
}

/// The secret keys of a verify table.
const SECRET_KEYS: [&str; 5] = [
    "secret",
    "secrets",
    "secret_env",
    "secrets_env",
    "secret_file",
];

impl<'r> Table<'_, '_, 'r> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.base)
    }

    fn secret_keys(&self) -> SecretKeys<'r> {
        let r = self.raw;
        SecretKeys {
            prefix: "secret",
            one: &r.secret,
            many: Some(&r.secrets),
            env: &r.secret_env,
            many_env: Some(&r.secrets_env),
            file: &r.secret_file,
        }
    }

    /// The shared secrets, required.
    fn secrets(&mut self) -> Vec<Secret> {
        self.cx_secrets(|_, g| Some(g.secret.clone()))
            .unwrap_or_default()
    }

    /// The shared secrets, each passed through `decode` (which reports its
    /// own problems); `None` when any is missing or does not decode.
    fn cx_secrets<T>(
        &mut self,
        decode: impl Fn(&mut Ctx<'_>, &super::ctx::GivenSecret) -> Option<T>,
    ) -> Option<Vec<T>> {
        self.read.extend(SECRET_KEYS);
        let keys = self.secret_keys();
        if keys.given().is_empty() {
            let msg = format!(
                "scheme \"{}\" needs a secret: set one of {}",
                self.scheme.as_str(),
                keys.choices()
            );
            self.cx.problem(self.span.clone(), &self.base, msg);
            return None;
        }
        let read = self.cx.read_secrets(&self.base, &keys);
        let decoded: Vec<Option<T>> = read.iter().map(|g| decode(self.cx, g)).collect();
        decoded.into_iter().collect()
    }

    /// For schemes without a shared secret: each secret key given is a
    /// problem that says why. True when none was given.
    fn no_secret(&mut self, reason: &str) -> bool {
        self.refused.extend(SECRET_KEYS);
        let given = self.secret_keys().given();
        for (name, span) in &given {
            let msg = format!(
                "scheme \"{}\" takes no secret ({reason})",
                self.scheme.as_str()
            );
            let key = self.key(name);
            self.cx.problem(span.clone(), &key, msg);
        }
        given.is_empty()
    }

    fn tolerance(&mut self) -> Duration {
        self.read.push("tolerance");
        let key = self.key("tolerance");
        self.cx
            .positive_duration(&self.raw.tolerance, &key, DEFAULT_TOLERANCE)
    }

    /// `header` as a header name; a problem when `required` and absent.
    fn header(&mut self, required: bool) -> Option<HeaderName> {
        let v = if required {
            self.required("header")?
        } else {
            self.optional("header")?
        };
        let key = self.key("header");
        self.cx.header_name(v, &key)
    }

    /// A text key, when given.
    fn optional(&mut self, name: &'static str) -> Option<&'r Spanned<String>> {
        self.read.push(name);
        text_field(self.raw, name).as_ref()
    }

    /// A text key that must be given.
    fn required(&mut self, name: &'static str) -> Option<&'r Spanned<String>> {
        let v = self.optional(name);
        if v.is_none() {
            let key = self.key(name);
            self.cx.missing(self.span.clone(), &key);
        }
        v
    }

    /// A required text key through `parse`; its error through `explain`.
    fn parsed<T, E>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
        explain: impl FnOnce(E) -> String,
    ) -> Option<T> {
        let v = self.required(name)?;
        match parse(v.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                let key = self.key(name);
                self.cx.at(v, &key, explain(e));
                None
            }
        }
    }

    /// Reports every key that was given but that the scheme did not read.
    fn finish(self) {
        for (name, span) in given_keys(self.raw) {
            if !self.read.contains(&name) && !self.refused.contains(&name) {
                let msg = format!(
                    "`{name}` does not apply to scheme \"{}\" (it takes {})",
                    self.scheme.as_str(),
                    takes(self.scheme)
                );
                self.cx.problem(span, &self.key(name), msg);
            }
        }
    }
}

/// The text-valued keys of a verify table, by name.
fn text_field<'r>(r: &'r RawVerify, name: &str) -> &'r Text {
    match name {
        "tolerance" => &r.tolerance,
        "header" => &r.header,
        "prefix" => &r.prefix,
        "public_key" => &r.public_key,
        "public_url" => &r.public_url,
        "cert_file" => &r.cert_file,
        "webhook_id" => &r.webhook_id,
        "username" => &r.username,
        _ => &None,
    }
}

/// Every key given in a verify table (but `scheme`), with its span.
fn given_keys(r: &RawVerify) -> Vec<(&'static str, Range<usize>)> {
    fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
        v.as_ref().map(Spanned::span)
    }
    let all = [
        ("secret", span(&r.secret)),
        ("secrets", span(&r.secrets)),
        ("secret_env", span(&r.secret_env)),
        ("secrets_env", span(&r.secrets_env)),
        ("secret_file", span(&r.secret_file)),
        ("tolerance", span(&r.tolerance)),
        ("header", span(&r.header)),
        ("algorithm", span(&r.algorithm)),
        ("encoding", span(&r.encoding)),
        ("prefix", span(&r.prefix)),
        ("verify_token", span(&r.verify_token)),
        ("verify_token_env", span(&r.verify_token_env)),
        ("verify_token_file", span(&r.verify_token_file)),
        ("public_key", span(&r.public_key)),
        ("public_url", span(&r.public_url)),
        ("cert_file", span(&r.cert_file)),
        ("webhook_id", span(&r.webhook_id)),
        ("username", span(&r.username)),
    ];
    all.into_iter()
        .filter_map(|(name, span)| Some((name, span?)))
        .collect()
}
