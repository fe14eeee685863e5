//! A source's `reply` table (sync replies): which destination answers the
//! provider, how long the provider is kept waiting, and the fallback answer.
//! The destination is checked against the validated destinations once
//! they are known ([`check`]).

use std::time::Duration;

use bytes::Bytes;
use toml::Spanned;

use super::ctx::Ctx;
use super::raw::{RawReply, RawSource};
use super::{DeliveryOrder, DestinationConfig, ReplyConfig, SourceConfig};
use crate::model::DestinationName;

/// How long the provider waits when `timeout` is not set: under the three
/// seconds Slack and Discord allow, with room for the network.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `timeout`: an answer later than this is no provider's answer,
/// and the connection is held open meanwhile.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest fallback body (the app's own answer is bounded the same way).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// `source[i].reply`; `None` after a problem (reported).
pub(super) fn reply(cx: &mut Ctx<'_>, base: &str, raw: &Spanned<RawReply>) -> Option<ReplyConfig> {
    let r = raw.get_ref();
    let key = |k: &str| format!("{base}.reply.{k}");
    let before = cx.problems.len();
    let destination = match &r.destination {
        None => {
            cx.missing(raw.span(), &key("destination"));
            None
        }
        Some(d) => match d.get_ref().parse::<DestinationName>() {
            Ok(n) => Some(n),
            Err(e) => {
                cx.at(d, &key("destination"), e.to_string());
                None
            }
        },
    };
    let timeout = cx.positive_duration(&r.timeout, &key("timeout"), DEFAULT_TIMEOUT);
    if let (Some(v), true) = (&r.timeout, timeout > MAX_TIMEOUT) {
        cx.at(
            v,
            &key("timeout"),
            "must be at most 60s: the provider waits that long with its connection open",
        );
    }
    let status = match &r.status {
        None => http::StatusCode::OK,
        Some(s) => match u16::try_from(*s.get_ref())
            .ok()
            .filter(|n| (200..=599).contains(n))
            .and_then(|n| http::StatusCode::from_u16(n).ok())
        {
            Some(code) => code,
            None => {
                cx.at(s, &key("status"), "must be an HTTP status from 200 to 599");
                http::StatusCode::OK
            }
        },
    };
    let content_type = match &r.content_type {
        None => http::HeaderValue::from_static("text/plain; charset=utf-8"),
        Some(v) => match http::HeaderValue::from_str(v.get_ref()) {
            Ok(h) => h,
            Err(_) => {
                cx.at(v, &key("content_type"), "not a valid header value");
                http::HeaderValue::from_static("text/plain")
            }
        },
    };
    let body = r
        .body
        .as_ref()
        .map_or(String::new(), |b| b.get_ref().clone());
    let bodiless = [204, 205, 304].contains(&status.as_u16());
    if let (Some(b), true) = (&r.body, bodiless && !body.is_empty()) {
        cx.at(
            b,
            &key("body"),
            format!("status {} has no body", status.as_u16()),
        );
    }
    if let Some(b) = r
        .body
        .as_ref()
        .filter(|b| b.get_ref().len() > MAX_REPLY_BYTES)
    {
        cx.at(b, &key("body"), "longer than 1 MiB");
    }
    if cx.problems.len() > before {
        return None;
    }
    Some(ReplyConfig {
        destination: destination?,
        timeout,
        status,
        content_type,
        body: Bytes::from(body),
    })
}

/// Each reply names a destination that exists, receives that source, and
/// delivers unordered (a synchronous answer cannot wait behind a strict queue).
pub(super) fn check(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawSource>],
    sources: &[SourceConfig],
    destinations: &[DestinationConfig],
) {
    for source in sources {
        let Some(reply) = &source.reply else { continue };
        // The raw table of this (valid, so uniquely named) source, for the line.
        let found = raw.iter().enumerate().find_map(|(i, s)| {
            let r = s.get_ref();
            let named = r
                .name
                .as_ref()
                .is_some_and(|n| n.get_ref() == source.name.as_str());
            let at = r.reply.as_ref()?.get_ref().destination.as_ref()?;
            named.then_some((i, at))
        });
        let Some((i, name)) = found else { continue };
        let key = format!("source[{i}].reply.destination");
        let Some(dest) = destinations.iter().find(|d| d.name == reply.destination) else {
            let defined: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
            let msg = format!(
                "unknown destination {:?} (defined: {})",
                reply.destination.as_str(),
                defined.join(", ")
            );
            cx.at(name, &key, msg);
            continue;
        };
        if dest.ordering != DeliveryOrder::Unordered {
            let msg = format!(
                "destination {:?} must have ordering = \"unordered\": a synchronous answer cannot wait behind a strict queue",
                dest.name.as_str()
            );
            cx.at(name, &key, msg);
        }
        if !dest.sources.contains(&source.name) {
            let msg = format!(
                "destination {:?} does not list source {:?} in its sources",
                dest.name.as_str(),
                source.name.as_str()
            );
            cx.at(name, &key, msg);
        }
    }
}
