//! A destination's health as operators see it: its state word, and what is
//! pending for it (lag counted over its own sources, the oldest pending
//! message's age). Reads the store on the blocking pool; bounded per call.

use crate::config::DestinationConfig;
use crate::model::{Seq, SourceName};
use crate::store::{DestinationState, Store, StoreError};

/// Log entries one lag count reads at most; past that the rest of the gap
/// counts whole (an upper bound), so a call stays within milliseconds.
const LAG_SCAN: usize = 20_000;

/// What waits for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Messages of its sources after its cursor.
    pub lag: u64,
    /// When the oldest of them was received.
    pub oldest_received_ms: Option<u64>,
}

/// Lag and oldest pending message of `d`, whose cursor is `cursor`.
pub async fn pending(
    store: &Store,
    d: &DestinationConfig,
    cursor: Seq,
    head: Seq,
) -> Result<Pending, StoreError> {
    if cursor >= head {
        return Ok(Pending {
            lag: 0,
            oldest_received_ms: None,
        });
    }
    let sources = d.sources.clone();
    store
        .blocking(move |s| {
            let routes = |src: &SourceName| sources.contains(src);
            // The first message counted is the oldest pending: seqs follow
            // arrival, and its head says when it came (no body decoded).
            let (counted, complete, oldest) =
                s.log()
                    .count_routed_from(cursor.next(), head, routes, LAG_SCAN)?;
            // Past the scan, every seq of the gap counts (an upper bound).
            let lag = if complete {
                counted
            } else {
                head.0.saturating_sub(cursor.0)
            };
            // None of its sources among the first LAG_SCAN: look further,
            // source by source (each listing bounded).
            let look_further = oldest.is_none() && !complete;
            let mut oldest = oldest;
            for src in sources.iter().filter(|_| look_further) {
                if let Some(m) = s.log().list_messages(Some(src), None, cursor, 1)?.first() {
                    if m.seq <= head.0 {
                        oldest = Some(oldest.map_or(m.received_at_ms, |o| o.min(m.received_at_ms)));
                    }
                }
            }
            Ok(Pending {
                lag,
                oldest_received_ms: oldest,
            })
        })
        .await
}

/// The state word: `paused` and `blocked` come from the store, `failing`
/// from the attempts (the last one failed), else `active`.
pub fn state_word(st: &DestinationState, failing: bool) -> &'static str {
    if st.paused {
        "paused"
    } else if st.blocked_on.is_some() {
        "blocked"
    } else if failing {
        "failing"
    } else {
        "active"
    }
}

/// Every state word, for the state gauge.
pub const STATES: [&str; 4] = ["active", "failing", "paused", "blocked"];
