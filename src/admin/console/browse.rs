//! The message browser's query: filters from the page's form, turned into
//! one bounded, newest-first walk of the log
//! ([`Log::list_messages_back`](crate::store::Log::list_messages_back)).
//! Times become seqs by binary search, so a range costs nothing to find;
//! a page examines at most [`SCAN_CAP`] messages and says where to go on.

use super::super::api::ApiError;
use super::super::{ops, Admin};
use crate::model::{DestinationName, Seq, SourceName};
use crate::store::BackPage;

/// Messages shown per page.
pub const PAGE: usize = 50;
/// Most messages one page looks at (heads, and whole messages where a
/// body or status filter needs them): tens of milliseconds on a big log.
pub const SCAN_CAP: usize = 20_000;
/// The status words a destination filter takes (see [`ops::delivery_status`]).
pub const STATUSES: [&str; 4] = ["pending", "delivered", "dead", "skipped"];

/// The browser's filters as typed in (kept to fill the form again), each
/// empty when not given.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub source: String,
    pub event_type: String,
    pub destination: String,
    pub status: String,
    pub from_seq: String,
    pub to_seq: String,
    pub from_time: String,
    pub to_time: String,
    pub body: String,
    /// The page: messages below this seq (the previous page's last).
    pub before: String,
}

impl Filters {
    /// From a query string; unknown keys are ignored (a bookmark from an
    /// older version still opens).
    pub fn parse(query: Option<&str>) -> Filters {
        let mut f = Filters::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.trim().to_owned();
            match k.as_ref() {
                "source" => f.source = v,
                "event_type" => f.event_type = v,
                "destination" => f.destination = v,
                "status" => f.status = v,
                "from_seq" => f.from_seq = v,
                "to_seq" => f.to_seq = v,
                "from_time" => f.from_time = v,
                "to_time" => f.to_time = v,
                "body" => f.body = v,
                "before" => f.before = v,
                _ => {}
            }
        }
        f
    }

    /// The query string of these filters with `before` replaced.
    pub fn query_before(&self, before: Seq) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("source", &self.source),
            ("event_type", &self.event_type),
            ("destination", &self.destination),
            ("status", &self.status),
            ("from_seq", &self.from_seq),
            ("to_seq", &self.to_seq),
            ("from_time", &self.from_time),
            ("to_time", &self.to_time),
            ("body", &self.body),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &before.0.to_string());
        q.finish()
    }
}

/// A number field, or `None` when empty.
fn number(v: &str, what: &str) -> Result<Option<u64>, ApiError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| ApiError::BadRequest(format!("{what} must be a non-negative integer")))
}

/// One page of messages matching `f`, newest first.
pub async fn search(admin: &Admin, f: &Filters) -> Result<BackPage, ApiError> {
    let source: Option<SourceName> = match f.source.as_str() {
        "" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::BadRequest("source is not a valid name".into()))?,
        ),
    };
    let dest = match f.destination.as_str() {
        "" => None,
        d => Some(ops::find_destination(admin, d)?),
    };
    let status = match f.status.as_str() {
        "" => None,
        s => Some(
            STATUSES
                .into_iter()
                .find(|w| *w == s)
                .ok_or_else(|| ApiError::BadRequest("unknown status".into()))?,
        ),
    };
    if status.is_some() && dest.is_none() {
        return Err(ApiError::BadRequest(
            "a status filter needs a destination".into(),
        ));
    }
    let event_type = Some(f.event_type.clone()).filter(|t| !t.is_empty());
    let needle = Some(f.body.clone().into_bytes()).filter(|b| !b.is_empty());
    let head = admin.head_now().await;
    let mut floor = Seq(number(&f.from_seq, "from seq")?.unwrap_or(0));
    // Exclusive.
    let mut ceiling = head.next();
    if let Some(to) = number(&f.to_seq, "to seq")? {
        ceiling = ceiling.min(Seq(to).next());
    }
    if let Some(before) = number(&f.before, "before")? {
        ceiling = ceiling.min(Seq(before));
    }
    let (from_ms, to_ms) = (
        Some(&f.from_time).filter(|t| !t.is_empty()),
        Some(&f.to_time).filter(|t| !t.is_empty()),
    );
    let from_ms = from_ms
        .map(|t| ops::parse_time(t, "from time"))
        .transpose()?;
    let to_ms = to_ms.map(|t| ops::parse_time(t, "to time")).transpose()?;
    let store = match &admin.backend {
        crate::backend::Backend::Sled(store) => store,
        crate::backend::Backend::Fleet(fleet) => {
            let want = Want {
                source,
                event_type,
                dest: dest.map(|e| e.0.clone()),
                status,
                needle,
            };
            return fleet_search(admin, fleet, (floor, ceiling), (from_ms, to_ms), want).await;
        }
    };
    let (by_time_floor, by_time_ceiling) = store
        .blocking(move |s| {
            let log = s.log();
            let lo = from_ms.map(|ms| log.seq_at_time(ms)).transpose()?;
            // Up to and including `to_ms`: below the first seq after it.
            let hi = to_ms
                .map(|ms| log.seq_at_time(ms.saturating_add(1)))
                .transpose()?;
            Ok((lo, hi))
        })
        .await?;
    floor = floor.max(by_time_floor.unwrap_or_default());
    if let Some(hi) = by_time_ceiling {
        ceiling = ceiling.min(hi);
    }
    let dest = dest.map(|e| e.0.clone());
    let cursor = match &dest {
        Some(d) => store.cursors().get(&d.name)?,
        None => Seq(0),
    };
    Ok(store
        .blocking(move |s| {
            let head_ok = |h: &crate::store::MessageHead| {
                source.as_ref().is_none_or(|src| *src == h.source)
                    && event_type
                        .as_deref()
                        .is_none_or(|t| h.event_type.as_deref() == Some(t))
                    && dest.as_ref().is_none_or(|d| d.sources.contains(&h.source))
            };
            let mut whole_ok = |seq: Seq, m: &crate::store::Message| {
                if let Some(n) = &needle {
                    if memchr::memmem::find(&m.body, n).is_none() {
                        return Ok(false);
                    }
                }
                match (&dest, status) {
                    (Some(d), Some(want)) => ops::has_delivery_status(s, d, (cursor, seq, m), want),
                    _ => Ok(true),
                }
            };
            // Bodies are decoded only for a test that needs them.
            let needs_whole = needle.is_some() || (dest.is_some() && status.is_some());
            let whole: Option<crate::store::log::WholeOk<'_>> =
                needs_whole.then_some(&mut whole_ok as _);
            s.log()
                .list_messages_back((floor, ceiling), (PAGE, SCAN_CAP), head_ok, whole)
        })
        .await?)
}

/// What a search looks for, past its seq range.
struct Want {
    source: Option<SourceName>,
    event_type: Option<String>,
    dest: Option<crate::config::DestinationConfig>,
    status: Option<&'static str>,
    needle: Option<Vec<u8>>,
}

/// Messages the fleet's log reads per step of a newest-first search.
const FLEET_CHUNK: u64 = 500;

/// [`search`] in a fleet: the log read forward in chunks, from the top of
/// the range down, each chunk's matches newest first; a status is the
/// destination's consumer's and dead letters' word for it.
async fn fleet_search(
    admin: &Admin,
    fleet: &crate::fleet::Fleet,
    (mut floor, mut ceiling): (Seq, Seq),
    (from_ms, to_ms): (Option<u64>, Option<u64>),
    want: Want,
) -> Result<BackPage, ApiError> {
    let fleet_err = crate::store::StoreError::from;
    if let Some(ms) = from_ms {
        floor = floor.max(fleet.seq_at_time(ms).await.map_err(fleet_err)?);
    }
    if let Some(ms) = to_ms {
        let hi = fleet
            .seq_at_time(ms.saturating_add(1))
            .await
            .map_err(fleet_err)?;
        ceiling = ceiling.min(hi);
    }
    // Nothing below the stream's first message: no empty chunks to read.
    let first = fleet.first_seq().await.map_err(fleet_err)?;
    floor = floor.max(Seq(first.0.saturating_sub(1)));
    let floor_cursor = match &want.dest {
        Some(d) => fleet.position(&d.name).await.map_err(fleet_err)?.0,
        None => Seq(0),
    };
    let keep = |m: &crate::store::Message| {
        want.source.as_ref().is_none_or(|src| *src == m.source)
            && want
                .event_type
                .as_deref()
                .is_none_or(|t| m.event_type.as_deref() == Some(t))
            && want
                .dest
                .as_ref()
                .is_none_or(|d| d.sources.contains(&m.source))
            && want
                .needle
                .as_ref()
                .is_none_or(|n| memchr::memmem::find(&m.body, n).is_some())
    };
    let mut page = BackPage::default();
    let mut hi = ceiling;
    while hi > floor && page.found.len() < PAGE && page.examined < SCAN_CAP {
        let lo = Seq(hi.0.saturating_sub(FLEET_CHUNK).max(floor.0).max(1));
        let span = (hi.0 - lo.0) as usize;
        let after = Seq(lo.0 - 1);
        let (found, _) = fleet
            .scan(after, (span, span), keep)
            .await
            .map_err(fleet_err)?;
        page.examined += span;
        for (seq, m) in found.iter().rev().filter(|(seq, _)| *seq < hi) {
            if let (Some(d), Some(status)) = (&want.dest, want.status) {
                // The bucket is asked only for a status a dead letter
                // decides: "delivered" only at or below the cursor; "dead"
                // and "pending" above it too (an unordered destination's
                // dead letter may sit above a message still in flight).
                let ask = match status {
                    "dead" | "pending" => true,
                    "delivered" => floor_cursor >= *seq,
                    _ => false,
                };
                let dead = ask && admin.backend.dead_letter(&d.name, *seq).await?.is_some();
                let skipped =
                    !d.rules.is_empty() && d.rules.decide(*seq, m) == crate::route::Decision::Skip;
                let word = if dead {
                    "dead"
                } else if skipped {
                    "skipped"
                } else if floor_cursor >= *seq {
                    "delivered"
                } else {
                    "pending"
                };
                if word != status {
                    continue;
                }
            }
            if page.found.len() == PAGE {
                // The next page starts above this one's oldest.
                page.next_before = page.found.last().map(|m| Seq(m.seq));
                return Ok(page);
            }
            page.found.push(crate::store::MessageMeta::of(*seq, m));
        }
        hi = lo;
        if lo.0 <= 1 {
            break;
        }
    }
    if hi > floor && hi.0 > 1 {
        page.next_before = Some(page.found.last().map_or(hi, |m| Seq(m.seq).min(hi)));
    }
    Ok(page)
}

/// The names a destination filter offers.
pub fn destination_names(admin: &Admin) -> Vec<DestinationName> {
    admin
        .destinations()
        .iter()
        .map(|e| e.0.name.clone())
        .collect()
}
