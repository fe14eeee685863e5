//! The disk budget: every [`BUDGET_EVERY`] a task compares sled's
//! `size_on_disk()` with `storage.max_disk_bytes` and sets the flag ingest
//! checks per request (one atomic load). See [`over_budget`] for how space
//! freed by retention lifts a refusal even though sled's file does not shrink
//! at once. Reads the database size only; never writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the disk budget is measured.
pub const BUDGET_EVERY: Duration = Duration::from_secs(1);
/// Most file growth over the budget that one retention pass can allow; see [`over_budget`].
pub const GRACE_CAP: u64 = 64 << 20;

/// Whether inbound must be refused, given this measurement. `ceiling` carries
/// state between calls (start it at `max`); `freed` is how many bytes of
/// entries retention deleted since the previous call.
///
/// sled's `size_on_disk()` is the length of its file, which deletes do not
/// shrink: deleting even writes a little, and freed segments are reused by
/// later writes, the file being cut back only when its last segments fall
/// empty during later writes. Refusing whenever the size is over `max` would
/// therefore refuse forever once tripped. Instead:
///
/// - at or under `max`: accept;
/// - over `max`: refuse, unless retention has freed entries since, in which
///   case accept again until the file grows past its size at that moment by
///   more than what was freed (at most [`GRACE_CAP`]), i.e. until the freed
///   space is used up. No pass that frees nothing (a destination down, nothing
///   old enough) ever lifts a refusal.
pub fn over_budget(size: u64, max: u64, ceiling: &mut u64, freed: u64) -> bool {
    if size <= max {
        *ceiling = max;
        return false;
    }
    if freed > 0 {
        *ceiling = size.saturating_add(freed.min(GRACE_CAP));
    }
    size > *ceiling
}

pub(super) async fn budget_loop(
    store: Store,
    max: u64,
    over: Arc<AtomicBool>,
    freed: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(BUDGET_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ceiling = max;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let size = match store.blocking(Store::size_on_disk).await {
            Ok(size) => size,
            Err(e) => {
                // Keep the last verdict rather than guess either way.
                tracing::warn!(error = %e, "cannot measure the database size");
                continue;
            }
        };
        let refuse = over_budget(size, max, &mut ceiling, freed.swap(0, Ordering::AcqRel));
        match (over.swap(refuse, Ordering::Relaxed), refuse) {
            (false, true) => tracing::warn!(
                size_on_disk = size,
                max_disk_bytes = max,
                "storage over max_disk_bytes: refusing inbound webhooks with 503"
            ),
            (true, false) => tracing::info!(
                size_on_disk = size,
                max_disk_bytes = max,
                "storage has room again: accepting inbound webhooks"
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_over_max_until_retention_frees_and_again_when_that_is_used_up() {
        let max = 1000;
        let mut ceiling = max;
        assert!(!over_budget(900, max, &mut ceiling, 0));
        assert!(over_budget(1100, max, &mut ceiling, 0));
        // A pass that frees nothing never lifts the refusal.
        assert!(over_budget(1100, max, &mut ceiling, 0));
        // Freed 300 bytes: accept, while the file stays within 300 of its size now.
        assert!(!over_budget(1150, max, &mut ceiling, 300));
        assert!(!over_budget(1450, max, &mut ceiling, 0));
        assert!(over_budget(1451, max, &mut ceiling, 0));
        // Back under the budget forgets the allowance.
        assert!(!over_budget(999, max, &mut ceiling, 0));
        assert!(over_budget(1001, max, &mut ceiling, 0));
        // The allowance is capped.
        assert!(!over_budget(2000, max, &mut ceiling, u64::MAX));
        assert_eq!(ceiling, 2000 + GRACE_CAP);
    }
}
