//! `[[destination]]` tables to [`DestinationConfig`]: URL, sources, ordering
//! and concurrency, rate limit, headers, signing key and retry policy.

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::ctx::{show_key, unique_name, Ctx, SecretKeys, Seen};
use super::raw::{RawDestination, RawRetry, RawSigning};
use super::{units, DeliveryOrder, DestinationConfig, OnExhausted, RetryPolicy, Schedule};
use crate::keys::WhsecKey;
use crate::model::{DestinationName, SourceName};

pub(super) fn destinations(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawDestination>],
    known: &HashSet<&str>,
) -> Vec<DestinationConfig> {
    let mut names = Seen::default();
    let mut out = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let base = format!("destination[{i}]");
        if let Some(dest) = destination(cx, &mut names, &base, d, known) {
            out.push(dest);
        }
    }
    out
}

fn destination(
    cx: &mut Ctx<'_>,
    names: &mut Seen,
    base: &str,
    d: &Spanned<RawDestination>,
    known: &HashSet<&str>,
) -> Option<DestinationConfig> {
    let r = d.get_ref();
    let key = |k: &str| format!("{base}.{k}");
    let name = match &r.name {
        None => {
            cx.missing(d.span(), &key("name"));
            None
        }
        Some(n) => unique_name::<DestinationName>(cx, names, n, &key("name"), "destination"),
    };
    let url = match &r.url {
        None => {
            cx.missing(d.span(), &key("url"));
            None
        }
        Some(u) => cx.http_url(u, &key("url")),
    };
    let sources = match &r.sources {
        None => {
            cx.missing(d.span(), &key("sources"));
            None
        }
        Some(list) => dest_sources(cx, list, &key("sources"), known),
    };
    let timeout = cx.positive_duration(&r.timeout, &key("timeout"), Duration::from_secs(10));
    let ordering = r
        .ordering
        .as_ref()
        .map_or(DeliveryOrder::Strict, |o| *o.get_ref());
    let max_in_flight = max_in_flight(cx, r, ordering, &key("max_in_flight"));
    let rate_limit = r
        .rate_limit
        .as_ref()
        .and_then(|v| match units::parse_rate(v.get_ref()) {
            Ok(rl) => Some(rl),
            Err(e) => {
                cx.at(v, &key("rate_limit"), e);
                None
            }
        });
    let headers = headers(cx, r, &key("headers"));
    let forward_headers = forward_headers(cx, r, &key("forward_headers"));
    let signing = r
        .signing
        .as_ref()
        .and_then(|s| signing(cx, s, &key("signing")));
    let retry = retry(cx, r.retry.as_ref().map(Spanned::get_ref), &key("retry"));
    let on_exhausted = r
        .on_exhausted
        .as_ref()
        .map_or(OnExhausted::DeadLetter, |o| *o.get_ref());
    let ca_file = r
        .ca_file
        .as_ref()
        .and_then(|f| cx.existing_file(f, &key("ca_file")));
    let rules = rules(cx, r, base)?;
    Some(DestinationConfig {
        rules,
        name: name?,
        url: url?,
        sources: sources?,
        timeout,
        ordering,
        max_in_flight,
        rate_limit,
        headers,
        forward_headers,
        signing,
        retry,
        on_exhausted,
        ca_file,
    })
}

/// `event_types`, `filter` and `transform`; `None` after a problem.
pub(super) fn rules(
    cx: &mut Ctx<'_>,
    r: &RawDestination,
    base: &str,
) -> Option<crate::route::Rules> {
    use crate::route::{Pattern, Rules};
    let key = |k: &str| format!("{base}.{k}");
    let mut ok = true;
    let event_types = match &r.event_types {
        None => Vec::new(),
        Some(list) => {
            if list.get_ref().is_empty() {
                cx.at(
                    list,
                    &key("event_types"),
                    "give at least one pattern, or leave it out to receive every event type",
                );
                ok = false;
            }
            list.get_ref()
                .iter()
                .filter_map(|p| {
                    if p.get_ref().is_empty() {
                        cx.at(p, &key("event_types"), "a pattern cannot be empty");
                        ok = false;
                        return None;
                    }
                    Some(Pattern::new(p.get_ref()))
                })
                .collect()
        }
    };
    let mut program = |v: &Option<Spanned<String>>, k: &str| match v {
        None => None,
        Some(code) => {
            let p = cx.jq(code, &key(k));
            ok &= p.is_some();
            p
        }
    };
    let filter = program(&r.filter, "filter");
    let transform = program(&r.transform, "transform");
    ok.then_some(Rules {
        event_types,
        filter,
        transform,
    })
}

fn dest_sources(
    cx: &mut Ctx<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
    known: &HashSet<&str>,
) -> Option<Vec<SourceName>> {
    if list.get_ref().is_empty() {
        cx.at(list, key, "must name at least one source");
        return None;
    }
    let mut out: Vec<SourceName> = Vec::new();
    let mut ok = true;
    for (i, v) in list.get_ref().iter().enumerate() {
        let k = format!("{key}[{i}]");
        let n = v.get_ref();
        if !known.contains(n.as_str()) {
            let mut defined: Vec<&str> = known.iter().copied().collect();
            defined.sort_unstable();
            let msg = format!("unknown source {n:?} (defined: {})", defined.join(", "));
            cx.at(v, &k, msg);
            ok = false;
            continue;
        }
        match n.parse::<SourceName>() {
            // An invalid name was already reported at the source itself.
            Err(_) => ok = false,
            Ok(name) if out.contains(&name) => {
                cx.at(v, &k, format!("source {n:?} is listed twice"));
                ok = false;
            }
            Ok(name) => out.push(name),
        }
    }
    ok.then_some(out)
}

/// Upper bound of `max_in_flight`: bounds memory and the saved window record.
const MAX_IN_FLIGHT: usize = 1024;

fn max_in_flight(
    cx: &mut Ctx<'_>,
    r: &RawDestination,
    ordering: DeliveryOrder,
    key: &str,
) -> usize {
    let Some(v) = &r.max_in_flight else { return 1 };
    let n = *v.get_ref();
    if n < 1 {
        cx.at(v, key, "must be at least 1");
        return 1;
    }
    if n > MAX_IN_FLIGHT as i64 {
        cx.at(
            v,
            key,
            format!("must be at most {MAX_IN_FLIGHT} (each in-flight message is held in memory)"),
        );
        return 1;
    }
    if ordering == DeliveryOrder::Strict && n != 1 {
        cx.at(
            v,
            key,
            "ordering \"strict\" allows only max_in_flight = 1 (set ordering = \"unordered\" for concurrent deliveries)",
        );
        return 1;
    }
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn reserved(cx: &mut Ctx<'_>, name: &http::HeaderName, v: &Spanned<String>, key: &str) -> bool {
    use crate::model::{HOP_BY_HOP_HEADERS, RELAY_HEADERS};
    // Other `proxy-*` names may be listed (forwarding drops them anyway).
    const PROXY: &[&str] = &[
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    let n = name.as_str();
    if HOP_BY_HOP_HEADERS.contains(&n) || RELAY_HEADERS.contains(&n) || PROXY.contains(&n) {
        cx.at(
            v,
            key,
            format!("header {name} is set by the relay or hop-by-hop; it cannot be configured"),
        );
        true
    } else {
        false
    }
}

fn headers(
    cx: &mut Ctx<'_>,
    r: &RawDestination,
    key: &str,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
    let Some(map) = &r.headers else { return out };
    for (k, v) in map.get_ref() {
        let hkey = format!("{key}.{}", show_key(k.get_ref()));
        let Some(name) = cx.header_name(k, &hkey) else {
            continue;
        };
        if reserved(cx, &name, k, &hkey) {
            continue;
        }
        if out.iter().any(|(n, _)| n == name) {
            cx.at(k, &hkey, format!("header {name} is set twice"));
            continue;
        }
        match http::HeaderValue::from_str(v.get_ref()) {
            Ok(mut value) => {
                // Often a credential (Authorization, API keys): Debug prints it as "Sensitive".
                value.set_sensitive(true);
                out.push((name, value));
            }
            Err(_) => cx.at(
                v,
                &hkey,
                "invalid HTTP header value (control characters or non-ASCII)",
            ),
        }
    }
    out
}

fn forward_headers(cx: &mut Ctx<'_>, r: &RawDestination, key: &str) -> Vec<http::HeaderName> {
    let mut out: Vec<http::HeaderName> = Vec::new();
    let Some(list) = &r.forward_headers else {
        return out;
    };
    for (i, v) in list.get_ref().iter().enumerate() {
        let k = format!("{key}[{i}]");
        let Some(name) = cx.header_name(v, &k) else {
            continue;
        };
        if reserved(cx, &name, v, &k) {
            continue;
        }
        if out.contains(&name) {
            cx.at(v, &k, format!("header {name} is listed twice"));
            continue;
        }
        out.push(name);
    }
    out
}

fn signing(cx: &mut Ctx<'_>, s: &Spanned<RawSigning>, key: &str) -> Option<WhsecKey> {
    let r = s.get_ref();
    for (k, v) in [("secrets", &r.secrets), ("secrets_env", &r.secrets_env)] {
        if let Some(v) = v {
            let msg = "signing takes a single secret: use `secret`, `secret_env` or `secret_file`";
            cx.at(v, &format!("{key}.{k}"), msg);
        }
    }
    let keys = SecretKeys {
        prefix: "secret",
        one: &r.secret,
        many: None,
        env: &r.secret_env,
        many_env: None,
        file: &r.secret_file,
    };
    if keys.given().is_empty() {
        if r.secrets.is_none() && r.secrets_env.is_none() {
            let msg = format!("missing secret: set one of {}", keys.choices());
            cx.problem(s.span(), key, msg);
        }
        return None;
    }
    let given = cx.read_secrets(key, &keys).into_iter().next()?;
    let exposed = given.secret.expose();
    let parsed = exposed
        .starts_with(b"whsec_")
        .then(|| WhsecKey::parse(exposed))
        .flatten();
    if parsed.is_none() {
        let msg = "signing secret must be `whsec_` followed by base64 (e.g. from `openssl rand -base64 32`)";
        cx.problem(given.span, &given.key, msg);
    }
    parsed
}

fn retry(cx: &mut Ctx<'_>, raw: Option<&RawRetry>, key: &str) -> RetryPolicy {
    let default = RetryPolicy {
        schedule: Schedule::Exponential,
        initial: Duration::from_secs(1),
        max_interval: Duration::from_secs(600),
        max_attempts: 20,
        max_age: Duration::from_secs(72 * 3600),
    };
    let Some(r) = raw else { return default };
    let k = |name: &str| format!("{key}.{name}");
    let schedule = r
        .schedule
        .as_ref()
        .map_or(default.schedule, |s| *s.get_ref());
    let initial = cx.positive_duration(&r.initial, &k("initial"), default.initial);
    let max_interval =
        cx.positive_duration(&r.max_interval, &k("max_interval"), default.max_interval);
    let max_age = cx.positive_duration(&r.max_age, &k("max_age"), default.max_age);
    let max_attempts = match &r.max_attempts {
        None => default.max_attempts,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                cx.at(
                    v,
                    &k("max_attempts"),
                    format!("must be between 1 and {}", u32::MAX),
                );
                default.max_attempts
            }
        },
    };
    if schedule == Schedule::Exponential && initial > max_interval {
        let (span, which) = match (&r.initial, &r.max_interval) {
            (Some(v), _) => (v.span(), "initial"),
            (None, Some(v)) => (v.span(), "max_interval"),
            (None, None) => (0..0, "initial"),
        };
        cx.problem(
            span,
            &k(which),
            "retry.initial must not exceed retry.max_interval",
        );
    }
    RetryPolicy {
        schedule,
        initial,
        max_interval,
        max_attempts,
        max_age,
    }
}
