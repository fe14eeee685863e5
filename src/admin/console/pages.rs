//! The console's HTML, as maud templates (checked at compile time; every
//! `(value)` is HTML-escaped, so nothing that came with a webhook can
//! become markup). Pages take views already gathered; nothing here reads
//! the store.

use maud::{html, Markup, DOCTYPE};

use super::super::ops::{DeadLetterView, DeliveryView, DestinationView, SourceView};
use super::browse::{Filters, STATUSES};
use crate::model::{DestinationName, Seq, SourceName};
use crate::store::{Attempt, BackPage, Message};

/// Changes with the assets' contents, so browsers fetch them again after
/// any change (they are cached for a day).
const ASSET_VERSION: u64 =
    fnv1a(super::CSS.as_bytes()) ^ fnv1a(super::JS.as_bytes()).rotate_left(1);

/// FNV-1a, at compile time: a cache key, not a security measure.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Largest body shown on a message page; the rest is cut (the API has it all).
const BODY_SHOWN: usize = 256 * 1024;

/// What every page needs to know about the request.
pub struct Ctx {
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// A token is configured: show the logout button.
    pub logout: bool,
}

/// Which menu entry is current.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Nav {
    Overview,
    Messages,
    None,
}

/// The frame of every page.
pub fn layout(title: &str, nav: Nav, ctx: Option<&Ctx>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hookrelay" }
                // No favicon request (and no 404 in the browser's console).
                link rel="icon" href="data:,";
                link rel="stylesheet" href={ "/ui/assets/console.css?v=" (ASSET_VERSION) };
                script src={ "/ui/assets/console.js?v=" (ASSET_VERSION) } defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "hookrelay" }
                    @if ctx.is_some() {
                        nav {
                            a.current[nav == Nav::Overview] href="/ui/" { "Overview" }
                            a.current[nav == Nav::Messages] href="/ui/messages" { "Messages" }
                        }
                    }
                    @if let Some(c) = ctx.filter(|c| c.logout) {
                        form.logout method="post" action="/ui/logout" {
                            (csrf_field(c))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// `-` for nothing.
fn or_dash<T: std::fmt::Display>(v: Option<T>) -> Markup {
    match v {
        Some(v) => html! { (v) },
        None => html! { span.muted { "–" } },
    }
}

/// Seconds as `3d 4h`, `5m 2s`, `7s`.
fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge state-" (state) } { (state) } }
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}

/// An attempt's answer: the HTTP status or `no answer`.
fn http_status(s: Option<u16>) -> Markup {
    match s {
        Some(s) => html! { span class={ "http http-" (s / 100) "xx" } { (s) } },
        None => html! { span.muted { "no answer" } },
    }
}

/// A fixed-text notice after an action (never text from the request).
pub fn notice(which: Option<&str>) -> Option<&'static str> {
    Some(match which? {
        "paused" => "Paused: nothing is delivered until you resume.",
        "resumed" => "Resumed: delivery goes on from the cursor.",
        "replayed" => "Replay started: the cursor was moved back.",
        "redeliver" => "Redelivery queued: one more attempt is made shortly.",
        "redeliver-all" => "Every dead letter is queued for one more attempt.",
        _ => return None,
    })
}

fn notice_box(text: Option<&str>) -> Markup {
    html! { @if let Some(t) = text { p.notice role="status" { (t) } } }
}

/// The login form (only when a token is configured).
pub fn login(failed: bool) -> Markup {
    layout(
        "Log in",
        Nav::None,
        None,
        html! {
            section.login {
                h1 { "Log in" }
                p { "Enter the admin token (" code { "[admin] token" } ", " code { "token_env" } " or " code { "token_file" } ")." }
                @if failed { p.error role="alert" { "That is not the admin token." } }
                form method="post" action="/ui/login" {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// An error page.
pub fn error(ctx: Option<&Ctx>, status: http::StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        Nav::None,
        ctx,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error role="alert" { (message) }
            p { a href="/ui/" { "Back to the overview" } }
        },
    )
}

/// A destination's row on the overview, with its rate.
pub struct DestRow {
    pub view: DestinationView,
    pub per_minute: Option<f64>,
}

fn per_minute(v: Option<f64>) -> Markup {
    match v {
        Some(r) => html! { (format!("{r:.1}")) },
        None => {
            html! { span.muted title="measured over the last minute, once the relay has run a few seconds" { "–" } }
        }
    }
}

/// Disk use against `storage.max_disk_bytes`.
pub struct Disk {
    pub used: Option<u64>,
    pub budget: u64,
    pub head: Seq,
    pub first: Option<Seq>,
}

/// `/ui/`: every destination, every source, the disk.
pub fn overview(ctx: &Ctx, dests: &[DestRow], sources: &[SourceView], disk: &Disk) -> Markup {
    layout(
        "Overview",
        Nav::Overview,
        Some(ctx),
        html! {
            h1 { "Overview" }
            section #destinations data-live {
                h2 { "Destinations" }
                table {
                    thead { tr {
                        th { "Destination" } th { "State" } th.num { "Lag" } th { "Oldest pending" }
                        th.num { "Deliveries/min" } th { "Last success" } th { "Last error" } th.num { "Dead letters" }
                    } }
                    tbody {
                        @for d in dests {
                            @let v = &d.view;
                            tr data-destination=(v.name) {
                                td { a href={ "/ui/destinations/" (v.name) } { (v.name) } }
                                td { (state_badge(v.state)) }
                                td.num { (v.lag) }
                                td { (or_dash(v.oldest_pending_age_seconds.map(age))) }
                                td.num { (per_minute(d.per_minute)) }
                                td { (or_dash(v.last_success_at.as_deref())) }
                                td.error-text {
                                    @match v.last_attempt.as_ref().filter(|a| a.error.is_some()) {
                                        Some(a) => { (http_status(a.status)) " " (a.error.as_deref().unwrap_or("")) " " span.muted { "(" (a.at) ")" } }
                                        None => { span.muted { "–" } }
                                    }
                                }
                                td.num { (v.dead_letters) }
                            }
                        }
                    }
                }
                @if dests.is_empty() { p.muted { "No destinations are configured." } }
            }
            section #sources data-live {
                h2 { "Sources" }
                table {
                    thead { tr {
                        th { "Source" } th { "Path" } th { "Scheme" } th.num { "Received" }
                        th.num { "Duplicates" } th.num { "Rejected" } th { "Rejected by reason" }
                    } }
                    tbody {
                        @for s in sources {
                            tr data-source=(s.name) {
                                td { a href={ "/ui/messages?source=" (s.name) } { (s.name) } }
                                td { code { (s.path) } }
                                td { (s.scheme) }
                                td.num { (s.received) }
                                td.num { (s.duplicates) }
                                td.num { (s.rejected) }
                                td {
                                    @let reasons: Vec<_> = s.rejected_by_reason.iter().filter(|(_, n)| **n > 0).collect();
                                    @if reasons.is_empty() { span.muted { "none" } }
                                    @for (r, n) in reasons { span.reason { (r) ": " (n) } " " }
                                }
                            }
                        }
                    }
                }
            }
            section #disk data-live {
                h2 { "Storage" }
                @match disk.used {
                    Some(used) => {
                        p {
                            (bytes(used)) " of " (bytes(disk.budget)) " (" code { "storage.max_disk_bytes" } ")"
                        }
                        meter min="0" max=(disk.budget) high=(disk.budget / 10 * 8) value=(used.min(disk.budget)) {}
                    }
                    None => { p.error { "The database size could not be read." } }
                }
                p.muted {
                    "Log head seq " (disk.head)
                    @if let Some(f) = disk.first { ", first kept seq " (f) }
                    "."
                }
            }
        },
    )
}

/// The destination page's parts beyond its view.
pub struct DestPage<'a> {
    pub row: &'a DestRow,
    pub attempts: &'a [(Seq, Attempt)],
    pub dead: &'a [DeadLetterView],
    /// The `dl_after` of the next page of dead letters.
    pub dead_next: Option<Seq>,
    pub notice: Option<&'static str>,
}

/// `/ui/destinations/{name}`.
pub fn destination(ctx: &Ctx, p: &DestPage<'_>) -> Markup {
    let v = &p.row.view;
    let base = format!("/ui/destinations/{}", v.name);
    layout(
        v.name.as_str(),
        Nav::None,
        Some(ctx),
        html! {
            p.crumbs { a href="/ui/" { "Overview" } " / destination" }
            h1 { (v.name) " " (state_badge(v.state)) }
            (notice_box(p.notice))
            section #summary data-live {
                dl.facts {
                    dt { "State" } dd data-field="state" { (state_badge(v.state)) @if v.retrying { " retrying" } }
                    dt { "URL" } dd { code { (v.url) } }
                    dt { "Sources" } dd { @for s in &v.sources { a href={ "/ui/messages?source=" (s) } { (s) } " " } }
                    dt { "Ordering" } dd { (v.ordering) }
                    dt { "Cursor / head" } dd { (v.cursor) " / " (v.head) }
                    dt { "Lag" } dd data-field="lag" { (v.lag) }
                    dt { "Oldest pending" } dd { (or_dash(v.oldest_pending_age_seconds.map(age))) }
                    dt { "In flight" } dd { (v.in_flight) }
                    dt { "Deliveries/min" } dd { (per_minute(p.row.per_minute)) }
                    dt { "Last success" } dd { (or_dash(v.last_success_at.as_deref())) }
                    dt { "Failing since" } dd { (or_dash(v.failing_since.as_deref())) }
                    @if let Some(b) = v.blocked_on {
                        dt { "Blocked on" } dd { a href={ "/ui/messages/" (b) } { "seq " (b) } }
                    }
                    dt { "Last attempt" } dd {
                        @match &v.last_attempt {
                            Some(a) => {
                                a href={ "/ui/messages/" (a.seq) } { "seq " (a.seq) } " " (http_status(a.status))
                                @if let Some(e) = &a.error { " " span.error-text { (e) } }
                                " " span.muted { (a.at) }
                            }
                            None => { span.muted { "none since start" } }
                        }
                    }
                    dt { "Dead letters" } dd data-field="dead-letters" { (v.dead_letters) }
                }
            }
            section.actions {
                h2 { "Actions" }
                div.row {
                    @if v.state == "paused" || v.state == "blocked" {
                        form method="post" action={ (base) "/resume" } {
                            (csrf_field(ctx))
                            button #resume type="submit" { "Resume" }
                        }
                    }
                    @if v.state != "paused" {
                        form method="post" action={ (base) "/pause" } {
                            (csrf_field(ctx))
                            button #pause type="submit" { "Pause" }
                        }
                    }
                }
                form.replay method="get" action={ (base) "/replay" } {
                    fieldset {
                        legend { "Replay" }
                        p.muted { "Sends again every message of this destination's sources from a seq or a time on (optionally up to a seq). You see how many before anything happens." }
                        label { "From seq " input type="number" min="1" name="from_seq"; }
                        label { "or from time " input type="text" name="from_time" placeholder="2026-12-03T08:00:00Z"; }
                        label { "up to seq (optional) " input type="number" min="1" name="to_seq"; }
                        button type="submit" { "Count and confirm…" }
                    }
                }
            }
            section #dead-letters {
                h2 { "Dead letters (" (v.dead_letters) ")" }
                @if !p.dead.is_empty() {
                    form method="post" action={ (base) "/dead-letters/redeliver" } data-confirm={ "Redeliver all " (v.dead_letters) " dead letters of " (v.name) "?" } {
                        (csrf_field(ctx))
                        button #redeliver-all type="submit" { "Redeliver all" }
                    }
                    table {
                        thead { tr { th { "Seq" } th { "Dead since" } th.num { "Attempts" } th { "Last error" } th {} } }
                        tbody {
                            @for dl in p.dead {
                                tr data-seq=(dl.seq) {
                                    td { a href={ "/ui/messages/" (dl.seq) } { (dl.seq) } }
                                    td { (dl.at) }
                                    td.num { (dl.attempts) }
                                    td.error-text { (dl.last_error) }
                                    td {
                                        form method="post" action={ (base) "/dead-letters/" (dl.seq) "/redeliver" } {
                                            (csrf_field(ctx))
                                            button.redeliver type="submit" { "Redeliver" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(after) = p.dead_next {
                        p { a href={ (base) "?dl_after=" (after) } { "More dead letters →" } }
                    }
                } @else {
                    p.muted { "None." }
                }
            }
            section #attempts {
                h2 { "Recent attempts" }
                @if p.attempts.is_empty() { p.muted { "None recorded." } } @else {
                    (attempts_table(p.attempts.iter().map(|(s, a)| (Some(*s), a))))
                }
            }
        },
    )
}

fn attempts_table<'a>(rows: impl Iterator<Item = (Option<Seq>, &'a Attempt)>) -> Markup {
    html! {
        table.attempts {
            thead { tr { th { "Seq" } th { "At" } th { "Status" } th.num { "Latency" } th { "Error" } } }
            tbody {
                @for (seq, a) in rows {
                    tr {
                        td { @if let Some(s) = seq { a href={ "/ui/messages/" (s) } { (s) } } }
                        td { (crate::time::rfc3339(a.at_ms)) }
                        td { (http_status(a.status)) }
                        td.num { (a.latency_ms) " ms" }
                        td.error-text { (or_dash(a.error.as_deref())) }
                    }
                }
            }
        }
    }
}

/// What a replay would do, for its confirm page.
pub struct ReplayConfirm<'a> {
    pub destination: &'a DestinationName,
    pub from: Seq,
    pub to: Seq,
    /// Messages counted that will go again.
    pub count: u64,
    /// When the count stopped early: the most there can be.
    pub at_most: Option<u64>,
    /// The form fields to send again, as given.
    pub fields: &'a [(&'static str, String)],
}

/// The replay's confirm page: the dry run's count, then a POST.
pub fn replay_confirm(ctx: &Ctx, r: &ReplayConfirm<'_>) -> Markup {
    let base = format!("/ui/destinations/{}", r.destination);
    layout(
        "Confirm replay",
        Nav::None,
        Some(ctx),
        html! {
            p.crumbs { a href="/ui/" { "Overview" } " / " a href=(base) { (r.destination) } " / replay" }
            h1 { "Replay to " (r.destination) "?" }
            @match r.at_most {
                None => p.confirm-count {
                    strong #replay-count { (r.count) }
                    " message(s) of seqs " (r.from) " to " (r.to) " will be sent again."
                },
                Some(most) => p.confirm-count {
                    "At least " strong #replay-count { (r.count) } " and at most " strong { (most) }
                    " message(s) of seqs " (r.from) " to " (r.to) " will be sent again: the count stopped early, "
                    "to keep this page fast on a long range (the API's dry run counts them all)."
                },
            }
            p.muted { "The destination's cursor moves back to seq " (r.from.0.saturating_sub(1)) ". With an end seq, messages after it that were already delivered are not sent again." }
            form method="post" action={ (base) "/replay" } {
                (csrf_field(ctx))
                @for (k, v) in r.fields { input type="hidden" name=(k) value=(v); }
                button #confirm-replay type="submit" { "Replay seqs " (r.from) " to " (r.to) }
                " "
                a href=(base) { "Cancel" }
            }
        },
    )
}

/// `/ui/messages`: the filter form and one page of results.
pub fn messages(
    ctx: &Ctx,
    f: &Filters,
    sources: &[SourceName],
    destinations: &[DestinationName],
    result: Result<&BackPage, String>,
) -> Markup {
    layout(
        "Messages",
        Nav::Messages,
        Some(ctx),
        html! {
            h1 { "Messages" }
            form.filters method="get" action="/ui/messages" {
                label { "Source " select name="source" {
                    option value="" { "any" }
                    @for s in sources { option value=(s) selected[f.source == s.as_str()] { (s) } }
                } }
                label { "Event type " input type="text" name="event_type" value=(f.event_type); }
                label { "Destination " select name="destination" {
                    option value="" { "any" }
                    @for d in destinations { option value=(d) selected[f.destination == d.as_str()] { (d) } }
                } }
                label { "Status there " select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES { option value=(s) selected[f.status == s] { (s) } }
                } }
                label { "Seq from " input type="number" min="0" name="from_seq" value=(f.from_seq); }
                label { "to " input type="number" min="0" name="to_seq" value=(f.to_seq); }
                label { "Time from " input type="text" name="from_time" placeholder="RFC 3339" value=(f.from_time); }
                label { "to " input type="text" name="to_time" placeholder="RFC 3339" value=(f.to_time); }
                label { "Body contains " input type="text" name="body" value=(f.body); }
                button #search type="submit" { "Search" }
                " " a href="/ui/messages" { "Clear" }
            }
            @match result {
                Err(e) => { p.error role="alert" { (e) } }
                Ok(page) => {
                    @if page.found.is_empty() {
                        p.muted #no-messages { "No message matches in the part of the log searched." }
                    } @else {
                        table #message-list {
                            thead { tr { th { "Seq" } th { "Received" } th { "Source" } th { "Event type" } th { "Content type" } th.num { "Bytes" } } }
                            tbody {
                                @for m in &page.found {
                                    tr data-seq=(m.seq) {
                                        td { a href={ "/ui/messages/" (m.seq) } { (m.seq) } }
                                        td { (crate::time::rfc3339(m.received_at_ms)) }
                                        td { (m.source) }
                                        td.event-type { (or_dash(m.event_type.as_deref())) }
                                        td { (or_dash(m.content_type.as_deref())) }
                                        td.num { (m.body_bytes) }
                                    }
                                }
                            }
                        }
                    }
                    p.muted {
                        "Looked at " (page.examined) " message(s) for this page."
                        @if let Some(next) = page.next_before {
                            " " a #older href={ "/ui/messages?" (f.query_before(next)) } { "Older →" }
                        }
                    }
                }
            }
        },
    )
}

/// The body as shown: pretty JSON when it parses, else text (invalid
/// UTF-8 replaced), cut at [`BODY_SHOWN`]; whether it was cut.
fn body_text(body: &[u8]) -> (String, &'static str, bool) {
    if let Some(pretty) = pretty_json(body) {
        let was_cut = pretty.len() > BODY_SHOWN;
        return (cut(pretty), "JSON, pretty-printed", was_cut);
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SHOWN)]).into_owned();
    let what = if std::str::from_utf8(body).is_ok() {
        "text"
    } else {
        "not UTF-8: invalid bytes shown as �"
    };
    (text, what, body.len() > BODY_SHOWN)
}

/// `body` re-indented when it is valid JSON, keeping its keys' order and
/// its numbers as written (parsing into a map would sort the keys and could
/// round numbers): checked by serde_json, then re-spaced token by token.
fn pretty_json(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // Indentation can make a small body huge (a 1 MiB body nested 128
        // deep would take 130 MB): no more than is shown is built.
        if out.len() > BODY_SHOWN {
            break;
        }
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on its line.
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if let Some(&close @ ('}' | ']')) = chars.peek() {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn cut(mut s: String) -> String {
    if s.len() > BODY_SHOWN {
        let mut at = BODY_SHOWN;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// `/ui/messages/{seq}`.
pub fn message(
    ctx: &Ctx,
    seq: Seq,
    m: &Message,
    deliveries: &[DeliveryView],
    notice: Option<&'static str>,
) -> Markup {
    let (body, kind, was_cut) = body_text(&m.body);
    layout(
        &format!("Message {seq}"),
        Nav::Messages,
        Some(ctx),
        html! {
            p.crumbs { a href="/ui/messages" { "Messages" } " / " (seq) }
            h1 { "Message " (seq) }
            (notice_box(notice))
            dl.facts {
                dt { "Id" } dd { code { (m.id) } }
                dt { "Source" } dd { a href={ "/ui/messages?source=" (m.source) } { (m.source) } }
                dt { "Received" } dd { (crate::time::rfc3339(m.received_at_ms)) }
                dt { "Event type" } dd #event-type { (or_dash(m.event_type.as_deref())) }
                dt { "Content type" } dd { (or_dash(m.content_type.as_deref())) }
                dt { "Idempotency key" } dd { (or_dash(m.idempotency_key.as_deref())) }
                dt { "Query" } dd #query { (or_dash(m.query.as_deref())) }
                dt { "Body" } dd { (m.body.len()) " bytes" }
            }
            section #deliveries {
                h2 { "Destinations" }
                @if deliveries.is_empty() { p.muted { "No destination takes this message's source." } }
                @for d in deliveries {
                    article.delivery data-destination=(d.destination) {
                        h3 {
                            a href={ "/ui/destinations/" (d.destination) } { (d.destination) }
                            " " (status_badge(d.status))
                        }
                        @if d.status == "dead" {
                            form method="post" action={ "/ui/messages/" (seq) "/redeliver" } {
                                (csrf_field(ctx))
                                input type="hidden" name="destination" value=(d.destination);
                                button.redeliver type="submit" { "Redeliver to " (d.destination) }
                            }
                        }
                        @if d.attempts.is_empty() { p.muted { "No attempts recorded." } } @else {
                            table.attempts {
                                thead { tr { th { "At" } th { "Status" } th.num { "Latency" } th { "Error" } } }
                                tbody {
                                    @for a in &d.attempts {
                                        tr {
                                            td { (a.at) }
                                            td { (http_status(a.status)) }
                                            td.num { (a.latency_ms) " ms" }
                                            td.error-text { (or_dash(a.error.as_deref())) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section #headers {
                h2 { "Headers" }
                @if m.headers.is_empty() { p.muted { "None kept." } }
                table {
                    tbody {
                        @for (k, v) in &m.headers {
                            tr { th { code { (k) } } td { code { (String::from_utf8_lossy(v)) } } }
                        }
                    }
                }
            }
            section {
                h2 { "Body " span.muted { "(" (kind) ")" } }
                pre #body { (body) }
                @if was_cut { p.muted { "Cut at " (bytes(BODY_SHOWN as u64)) "; the API has the whole body." } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_reindented_keeping_key_order_numbers_and_strings() {
        let body = br#"{"z":1,"a":[1.50,{}, [ ]],"s":"a,b:{\"c\"}","n":null}"#;
        let want = "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    {},\n    []\n  ],\n  \"s\": \"a,b:{\\\"c\\\"}\",\n  \"n\": null\n}";
        assert_eq!(pretty_json(body).unwrap(), want);
        assert_eq!(pretty_json(b"  7 ").unwrap(), "7");
        assert_eq!(pretty_json(b"{\"a\":"), None, "not JSON");
        assert_eq!(pretty_json(b"<b>hi</b>"), None);
        // Deep nesting: indentation would multiply the size; no more than
        // is shown is built, and the page says it is cut.
        let mut deep = "[".repeat(100);
        deep.push_str(&"0,".repeat(100_000));
        deep.push('0');
        deep.push_str(&"]".repeat(100));
        let (text, _, was_cut) = body_text(deep.as_bytes());
        assert!(was_cut && text.len() <= BODY_SHOWN);
        let (text, kind, _) = body_text(b"<b>hi</b>");
        assert_eq!((text.as_str(), kind), ("<b>hi</b>", "text"));
    }
}
