//! What the JSON API (`api`) and the web console (`console`) both read and
//! do, once: each query gathers a typed view, each action changes a
//! destination's state in the store and wakes its worker. The callers only
//! render (JSON or HTML) and map errors; neither repeats this logic. Every
//! read here is bounded as the API's always were. Never writes the log.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::{health, Admin, DestEntry};
use crate::backend::Backend;
use crate::config::DestinationConfig;
use crate::delivery::status::Activity;
use crate::model::{DestinationName, Seq, SourceName};
use crate::route::Decision;
use crate::store::{Message, ReplayEnd, Store, StoreError};

/// Most messages the API's dry run examines (about two seconds of reading).
pub(super) const COUNT_CAP: usize = 2_000_000;

/// The destination named `name` in the running config.
pub(super) fn find_destination(admin: &Admin, name: &str) -> Result<DestEntry, ApiError> {
    admin
        .destinations()
        .iter()
        .find(|e| e.0.name.as_str() == name)
        .cloned()
        .ok_or(ApiError::NotFound("destination"))
}

/// One source with its counters since start.
#[derive(Debug, Serialize)]
pub(super) struct SourceView {
    pub name: SourceName,
    pub path: String,
    pub scheme: &'static str,
    pub received: u64,
    pub rejected: u64,
    /// Every reason, zero or not (label values are fixed words).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub handshakes: u64,
}

/// Every configured source with its counters.
pub(super) fn sources(admin: &Admin) -> Vec<SourceView> {
    admin
        .sources()
        .iter()
        .map(|(s, st)| SourceView {
            name: s.name.clone(),
            path: s.path.clone(),
            scheme: s.verify.scheme().as_str(),
            received: st.received.load(Relaxed),
            rejected: st.rejected.load(Relaxed),
            rejected_by_reason: st
                .rejected_by_reason()
                .into_iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            duplicates: st.duplicates.load(Relaxed),
            handshakes: st.handshakes.load(Relaxed),
        })
        .collect()
}

/// The last attempt a destination's worker made (in memory, since start).
#[derive(Debug, Serialize)]
pub(super) struct LastAttemptView {
    pub at: String,
    pub seq: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A destination as operators see it: state, position and health.
#[derive(Debug, Serialize)]
pub(super) struct DestinationView {
    pub name: DestinationName,
    /// Without credentials or query (they may hold secrets).
    pub url: String,
    pub sources: Vec<SourceName>,
    pub ordering: &'static str,
    pub state: &'static str,
    pub failing_since: Option<String>,
    pub last_success_at: Option<String>,
    pub blocked_on: Option<u64>,
    pub cursor: u64,
    pub head: u64,
    pub lag: u64,
    pub oldest_pending_age_seconds: Option<u64>,
    pub in_flight: usize,
    pub retrying: bool,
    pub dead_letters: usize,
    pub last_attempt: Option<LastAttemptView>,
}

/// `scheme://host[:port]/path`, without credentials or query.
fn display_url(u: &http::Uri) -> String {
    let host = u.host().unwrap_or("");
    let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        u.scheme_str().unwrap_or("http"),
        u.path()
    )
}

/// The view of one destination (a bounded lag count, see [`health::pending`]).
pub(super) async fn describe(
    admin: &Admin,
    (d, c): &(DestinationConfig, std::sync::Arc<crate::delivery::Control>),
) -> Result<DestinationView, ApiError> {
    let head = admin.head_now().await;
    let st = admin.backend.state(&d.name).await?;
    let (cursor, pending, dead_letters, seen) = match &admin.backend {
        Backend::Sled(store) => {
            let cursor = store.cursors().get(&d.name)?;
            let pending = health::pending(store, d, cursor, head).await?;
            let seen = Seen {
                health: c.health(),
                in_flight: c.in_flight(),
                retrying: c.activity() == Activity::Retrying,
            };
            (cursor, pending, store.dead_letters().count(&d.name), seen)
        }
        Backend::Fleet(fleet) => {
            // The consumer's own figures: its lag counts every message
            // after its ack floor, of the destination's sources.
            let figures = fleet.figures(&d.name).await.map_err(StoreError::from)?;
            let dead = fleet
                .dead_letters(&d.name)
                .await
                .map_err(StoreError::from)?
                .len();
            let pending = health::Pending {
                lag: figures.lag,
                oldest_received_ms: None,
            };
            // What every relay's attempts showed, not this one's.
            let health = fleet.health(&d.name).await.map_err(StoreError::from)?;
            let seen = Seen {
                retrying: health.failing_since_ms.is_some() && figures.in_flight > 0,
                health,
                in_flight: figures.in_flight,
            };
            (figures.cursor, pending, dead, seen)
        }
    };
    let now = crate::time::now_ms();
    let h = &seen.health;
    Ok(DestinationView {
        name: d.name.clone(),
        url: display_url(&d.url),
        sources: d.sources.clone(),
        ordering: d.ordering.as_str(),
        state: health::state_word(&st, h.failing_since_ms.is_some()),
        failing_since: h.failing_since_ms.map(crate::time::rfc3339),
        last_success_at: h.last_success_ms.map(crate::time::rfc3339),
        blocked_on: st.blocked_on.map(|s| s.0),
        cursor: cursor.0,
        head: head.0,
        lag: pending.lag,
        oldest_pending_age_seconds: pending
            .oldest_received_ms
            .map(|at| now.saturating_sub(at) / 1000),
        in_flight: seen.in_flight,
        retrying: seen.retrying,
        dead_letters,
        last_attempt: h.last_attempt.as_ref().map(|(seq, a)| LastAttemptView {
            at: crate::time::rfc3339(a.at_ms),
            seq: seq.0,
            status: a.status,
            error: a.error.clone(),
        }),
    })
}

/// What the attempts showed: this relay's, or with a fleet every relay's.
struct Seen {
    health: crate::store::codec::FleetHealth,
    in_flight: usize,
    retrying: bool,
}

/// How long a fleet replay waits for another relay's hold of the
/// destination (a replay or a redelivery) to end, beyond its drain.
const MOVE_QUEUE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every destination's view, in config order.
pub(super) async fn describe_all(admin: &Admin) -> Result<Vec<DestinationView>, ApiError> {
    let all = admin.destinations();
    let mut list = Vec::with_capacity(all.len());
    for d in all.iter() {
        list.push(describe(admin, d).await?);
    }
    Ok(list)
}

/// Pauses or resumes `name`; resuming also releases a block. The new view.
pub(super) async fn set_paused(
    admin: &Admin,
    name: &str,
    paused: bool,
) -> Result<DestinationView, ApiError> {
    let entry = find_destination(admin, name)?;
    let (d, c) = &*entry;
    let change = |st: &mut crate::store::DestinationState| {
        if !paused && (st.paused || st.blocked_on.is_some()) {
            // Resuming is also how an operator releases a blocked destination:
            // the blocking message, and every message whose retries the
            // pause stopped, gets a fresh run of attempts.
            st.retry_epoch = st.retry_epoch.wrapping_add(1);
            st.blocked_on = None;
        }
        st.paused = paused;
    };
    admin.backend.update_state(&d.name, change).await?;
    c.wake();
    tracing::info!(destination = %d.name, paused, "destination state changed by operator");
    describe(admin, &entry).await
}

/// What an operator asks to replay (the API's JSON body, the console's form).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    pub from_seq: Option<u64>,
    pub from_time: Option<String>,
    /// Replays only up to this seq, then resumes where the cursor was.
    pub to_seq: Option<u64>,
    /// Counts what would go again and changes nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A checked replay: the destination and the closed seq range.
pub(super) struct ReplayPlan {
    pub entry: DestEntry,
    pub from: Seq,
    pub to: Seq,
    /// `to_seq` was given: delivery jumps back to where it was after `to`.
    pub bounded: bool,
}

/// An RFC 3339 time with its offset, as Unix ms; the offset is required
/// rather than guessed to be UTC.
pub(super) fn parse_time(t: &str, what: &str) -> Result<u64, ApiError> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(t.trim(), rfc3339).map_err(|_| {
        ApiError::BadRequest(format!(
            "{what} must be RFC 3339 with its UTC offset, e.g. \
             2026-12-03T08:00:00Z or 2026-12-03T09:00:00+01:00"
        ))
    })?;
    Ok(u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

/// Checks `req` against destination `name` and the log: the range to replay.
pub(super) async fn plan_replay(
    admin: &Admin,
    name: &str,
    req: &ReplayRequest,
) -> Result<ReplayPlan, ApiError> {
    let entry = find_destination(admin, name)?;
    let from = match (req.from_seq, &req.from_time) {
        (Some(seq), None) => Seq(seq.max(1)),
        (None, Some(t)) => {
            let ms = parse_time(t, "from_time")?;
            match &admin.backend {
                Backend::Sled(store) => store.blocking(move |s| s.log().seq_at_time(ms)).await?,
                Backend::Fleet(fleet) => fleet.seq_at_time(ms).await.map_err(StoreError::from)?,
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of from_seq and from_time".into(),
            ))
        }
    };
    let head = admin.head_now().await;
    if from.0 > head.0.saturating_add(1) {
        return Err(ApiError::BadRequest(format!(
            "from_seq {} is beyond the log head {} (at most head + 1)",
            from.0, head.0
        )));
    }
    // Past the head, an end changes nothing: the range is all there is.
    let to = match req.to_seq {
        Some(to) if to < from.0 => {
            return Err(ApiError::BadRequest(format!(
                "to_seq {to} is before the replay's first seq {}",
                from.0
            )))
        }
        Some(to) => Seq(to.min(head.0)),
        None => head,
    };
    Ok(ReplayPlan {
        entry,
        from,
        to,
        bounded: req.to_seq.is_some(),
    })
}

/// How many messages of the plan's range the destination would get again,
/// and whether the count is complete: it reads at most `cap` messages'
/// heads ([`COUNT_CAP`] for the API's dry run).
pub(super) async fn count_replay(
    admin: &Admin,
    plan: &ReplayPlan,
    cap: usize,
) -> Result<(u64, bool), ApiError> {
    let sources = plan.entry.0.sources.clone();
    let (from, to) = (plan.from, plan.to);
    let store = match &admin.backend {
        Backend::Sled(store) => store,
        // Every message of the range, routed here or not: the fleet keeps
        // no index of sources to count by.
        Backend::Fleet(_) => return Ok(((to.0 + 1).saturating_sub(from.0), true)),
    };
    Ok(store
        .blocking(move |s| {
            s.log()
                .count_routed(from, to, |src| sources.contains(src), cap)
        })
        .await?)
}

/// Rewinds the destination's cursor to just before the plan's range; the
/// new cursor.
pub(super) async fn apply_replay(admin: &Admin, plan: &ReplayPlan) -> Result<Seq, ApiError> {
    let (d, c) = &*plan.entry;
    let cursor = Seq(plan.from.0 - 1);
    let (to, bounded) = (plan.to, plan.bounded);
    let name = d.name.clone();
    let store = match &admin.backend {
        Backend::Sled(store) => store,
        Backend::Fleet(fleet) => {
            let shape = crate::delivery::fleet_shape(d);
            // Held until nothing is in flight anywhere (a strict
            // destination must never have the old run's delivery beside the
            // replay's), then the consumer starts at the range, and a new
            // epoch gives every message of it a fresh run of attempts. In a
            // task of its own: a client that stops waiting must not leave it
            // half done.
            let drain = crate::delivery::fleet_drain(d);
            let (fleet, name, from) = (fleet.clone(), d.name.clone(), plan.from);
            let moving = tokio::spawn(async move {
                fleet
                    .move_consumer(
                        &name,
                        // Another replay's move (or a bounded one's end)
                        // is waited for: it lasts at most its drain.
                        (from, &shape, drain, drain + MOVE_QUEUE),
                        |_| true,
                        |st, floor| {
                            // A bounded replay ends where delivery really
                            // was once drained: past one still in progress,
                            // that one's resume point.
                            let resume = st.replay_end.map_or(floor, |e| e.resume.max(floor));
                            let end = Some(ReplayEnd { to, resume })
                                .filter(|e| bounded && e.to < e.resume);
                            st.blocked_on = None;
                            st.replay_end = end;
                            st.retry_epoch = st.retry_epoch.wrapping_add(1);
                        },
                    )
                    .await
            });
            let moved = moving
                .await
                .map_err(StoreError::from)?
                .map_err(StoreError::from)?;
            if moved == crate::fleet::Moved::Busy {
                return Err(ApiError::Conflict(
                    "another replay of this destination is under way; try again once it is done",
                ));
            }
            c.wake();
            tracing::info!(destination = %d.name, cursor = cursor.0, to_seq = bounded.then_some(to.0), "replay requested by operator");
            return Ok(cursor);
        }
    };
    let end = store
        .blocking(move |s| {
            let end = std::cell::Cell::new(None);
            s.cursors()
                .rewind(s.destinations(), &name, cursor, |st, before| {
                    // Resume where delivery really was: past a bounded replay
                    // still in progress, that one's resume point.
                    let resume = st.replay_end.map_or(before, |e| e.resume.max(before));
                    // Only an end below it needs a jump back: up to there
                    // everything was delivered, after it all is pending anyway.
                    let new_end =
                        Some(ReplayEnd { to, resume }).filter(|e| bounded && e.to < e.resume);
                    end.set(new_end);
                    st.blocked_on = None;
                    st.replay_end = new_end;
                    // Every message of the range gets a fresh run of attempts.
                    st.retry_epoch = st.retry_epoch.wrapping_add(1);
                })?;
            Ok(end.get())
        })
        .await?;
    c.wake();
    tracing::info!(destination = %d.name, cursor = cursor.0, to_seq = end.map(|e| e.to.0), "replay requested by operator");
    Ok(cursor)
}

/// One dead letter of a destination.
#[derive(Debug, Serialize)]
pub(super) struct DeadLetterView {
    pub seq: u64,
    pub at: String,
    pub attempts: u32,
    pub last_error: String,
}

/// Up to `limit` dead letters of `name` after `after`, oldest first.
pub(super) async fn dead_letters(
    admin: &Admin,
    name: &str,
    after: Seq,
    limit: usize,
) -> Result<Vec<DeadLetterView>, ApiError> {
    let entry = find_destination(admin, name)?;
    let dest = entry.0.name.clone();
    let list = match &admin.backend {
        Backend::Sled(store) => {
            store
                .blocking(move |s| s.dead_letters().list(&dest, after, limit))
                .await?
        }
        Backend::Fleet(fleet) => {
            let all = fleet.dead_letters(&dest).await.map_err(StoreError::from)?;
            all.into_iter()
                .filter(|(seq, _)| *seq > after)
                .take(limit)
                .collect()
        }
    };
    Ok(list
        .into_iter()
        .map(|(seq, dl)| DeadLetterView {
            seq: seq.0,
            at: crate::time::rfc3339(dl.at_ms),
            attempts: dl.attempts,
            last_error: dl.last_error,
        })
        .collect())
}

/// Queues one more delivery of dead letter `seq` at `name`.
pub(super) async fn redeliver(
    admin: &Admin,
    name: &str,
    seq: Seq,
) -> Result<DestinationName, ApiError> {
    let entry = find_destination(admin, name)?;
    let (d, c) = &*entry;
    if admin.backend.dead_letter(&d.name, seq).await?.is_none() {
        return Err(ApiError::NotFound("dead letter"));
    }
    if admin.backend.message(seq).await?.is_none() {
        return Err(ApiError::NotFound("message"));
    }
    c.request_redelivery(seq);
    tracing::info!(destination = %d.name, seq = seq.0, "redelivery requested by operator");
    Ok(d.name.clone())
}

/// Every dead letter of `name` again, oldest first (each one attempt, as a
/// single redelivery is); how many were queued.
pub(super) async fn redeliver_all(
    admin: &Admin,
    name: &str,
) -> Result<(DestinationName, usize), ApiError> {
    let entry = find_destination(admin, name)?;
    let (d, c) = &*entry;
    let dest = d.name.clone();
    let seqs = match &admin.backend {
        Backend::Sled(store) => {
            store
                .blocking(move |s| s.dead_letters().seqs(&dest))
                .await?
        }
        Backend::Fleet(fleet) => {
            let all = fleet.dead_letters(&dest).await.map_err(StoreError::from)?;
            all.into_iter().map(|(seq, _)| seq).collect()
        }
    };
    let queued = c.request_redeliveries(seqs);
    tracing::info!(destination = %d.name, queued, "redelivery of every dead letter requested by operator");
    Ok((d.name.clone(), queued))
}

/// Where message `seq` stands at destination `d` (whose cursor is `cursor`):
/// `dead`, `skipped` (by today's rules: what a delivery or a replay would do
/// now), `delivered` or `pending`. One point read at most. Blocking.
pub(super) fn delivery_status(
    store: &Store,
    d: &DestinationConfig,
    cursor: Seq,
    seq: Seq,
    m: &Message,
) -> Result<&'static str, StoreError> {
    Ok(if store.dead_letters().get(&d.name, seq)?.is_some() {
        "dead"
    } else if !d.rules.is_empty() && d.rules.decide(seq, m) == Decision::Skip {
        "skipped"
    } else if cursor >= seq {
        "delivered"
    } else {
        "pending"
    })
}

/// Whether message `seq` stands as `want` at `d` ([`delivery_status`]'s
/// words), trying the cheap tests first: the cursor, then one point read,
/// and the routing rules (a body parse) only when nothing else decides.
/// Blocking.
pub(super) fn has_delivery_status(
    store: &Store,
    d: &DestinationConfig,
    (cursor, seq, m): (Seq, Seq, &Message),
    want: &str,
) -> Result<bool, StoreError> {
    let past = cursor >= seq;
    let cursor_says = match want {
        "pending" => !past,
        "delivered" => past,
        _ => true,
    };
    if !cursor_says {
        return Ok(false);
    }
    let dead = store.dead_letters().get(&d.name, seq)?.is_some();
    if want == "dead" || dead {
        return Ok(want == "dead" && dead);
    }
    let skipped = !d.rules.is_empty() && d.rules.decide(seq, m) == Decision::Skip;
    Ok(skipped == (want == "skipped"))
}

/// One recorded delivery attempt.
#[derive(Debug, Serialize)]
pub(super) struct AttemptView {
    pub at: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

impl From<crate::store::Attempt> for AttemptView {
    fn from(a: crate::store::Attempt) -> AttemptView {
        AttemptView {
            at: crate::time::rfc3339(a.at_ms),
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

/// A message at one destination it is routed to.
#[derive(Debug, Serialize)]
pub(super) struct DeliveryView {
    #[serde(skip)]
    pub destination: DestinationName,
    pub status: &'static str,
    pub attempts: Vec<AttemptView>,
}

/// Stored message `seq` and where it stands at each destination of its source.
pub(super) async fn message_detail(
    admin: &Admin,
    seq: Seq,
) -> Result<(Message, Vec<DeliveryView>), ApiError> {
    let backend = &admin.backend;
    let m = backend
        .message(seq)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let mut out = Vec::new();
    for entry in admin.destinations().iter() {
        let (d, _) = &**entry;
        if !d.sources.contains(&m.source) {
            continue;
        }
        let (status, attempts) = match backend {
            Backend::Sled(store) => {
                let cursor = store.cursors().get(&d.name)?;
                let status = delivery_status(store, d, cursor, seq, &m)?;
                let name = d.name.clone();
                let attempts = store
                    .blocking(move |s| s.attempts().list(&name, seq))
                    .await?;
                (status, attempts)
            }
            Backend::Fleet(fleet) => {
                // Past the ack floor means finished (delivered, dead or
                // skipped); unordered messages acked above it show as pending.
                let (floor, _) = fleet.position(&d.name).await.map_err(StoreError::from)?;
                let dead = backend.dead_letter(&d.name, seq).await?.is_some();
                let status = if dead {
                    "dead"
                } else if !d.rules.is_empty() && d.rules.decide(seq, &m) == Decision::Skip {
                    "skipped"
                } else if floor >= seq {
                    "delivered"
                } else {
                    "pending"
                };
                (status, backend.attempts(&d.name, seq).await?)
            }
        };
        out.push(DeliveryView {
            destination: d.name.clone(),
            status,
            attempts: attempts.into_iter().map(AttemptView::from).collect(),
        });
    }
    Ok((m, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{message, open};
    use crate::store::DeadLetter;

    /// The cheap-first test of one status answers as the full status does,
    /// for every status and every kind of message (dead, skipped, before and
    /// after the cursor).
    #[test]
    fn the_status_filter_agrees_with_the_status() {
        let text = r#"
[[source]]
name = "s"
path = "/s"
[[destination]]
name = "d"
url = "http://127.0.0.1:1/"
sources = ["s"]
event_types = ["keep"]
"#;
        let cfg =
            crate::config::Config::from_str(text, std::path::Path::new("relay.toml")).unwrap();
        let d = &cfg.destinations[0];
        let (_dir, store) = open();
        let dead = DeadLetter {
            at_ms: 1,
            attempts: 1,
            last_error: "x".into(),
        };
        store.dead_letters().add(&d.name, Seq(2), &dead).unwrap();
        store.dead_letters().add(&d.name, Seq(6), &dead).unwrap();
        let cursor = Seq(4);
        for seq in 1..=8u64 {
            let mut m = message("s", seq, vec![]);
            m.event_type = Some(if seq % 3 == 0 { "drop" } else { "keep" }.into());
            let seq = Seq(seq);
            let status = delivery_status(&store, d, cursor, seq, &m).unwrap();
            for want in ["pending", "delivered", "dead", "skipped"] {
                let got = has_delivery_status(&store, d, (cursor, seq, &m), want).unwrap();
                assert_eq!(
                    got,
                    status == want,
                    "seq {} is {status}, asked {want}",
                    seq.0
                );
            }
        }
    }
}
