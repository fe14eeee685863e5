//! The disk budget: every [`BUDGET_EVERY`] a task compares sled's
//! `size_on_disk()` with `storage.max_disk_bytes`, and the file system's
//! free space with `storage.min_free_bytes`, and tells the [`DiskGuard`] how
//! much may still be written. Ingest checks the guard per request (one
//! atomic load); the appender charges every batch to it before writing, so a
//! burst between two measurements overshoots by at most one batch. See
//! [`over_budget`] for how space freed by retention lifts a refusal even
//! though sled's file does not shrink at once. Reads sizes only; never writes.

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

/// What the budget task measured and what the appender wrote since;
/// shared for the whole run (a reload's new budget task takes it over).
#[derive(Debug)]
pub struct DiskGuard {
    /// Refuse inbound webhooks (503).
    over: AtomicBool,
    /// Bytes that may be appended after the last measurement.
    allowance: AtomicU64,
    /// Bytes charged since the last measurement.
    written: AtomicU64,
}

impl Default for DiskGuard {
    fn default() -> Self {
        DiskGuard {
            over: AtomicBool::new(false),
            allowance: AtomicU64::new(u64::MAX),
            written: AtomicU64::new(0),
        }
    }
}

impl DiskGuard {
    /// Whether inbound webhooks are refused now.
    pub fn refusing(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Charges `bytes` about to be appended: `false` (nothing charged, and
    /// refusing from now on) when they would pass what the last measurement
    /// allowed.
    pub fn admit(&self, bytes: u64) -> bool {
        let before = self.written.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.allowance.load(Ordering::Acquire) {
            self.written.fetch_sub(bytes, Ordering::AcqRel);
            self.over.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A new measurement: refuse or not, and how much may be written until the next.
    fn measured(&self, refuse: bool, allowance: u64) {
        self.allowance
            .store(if refuse { 0 } else { allowance }, Ordering::Release);
        self.written.store(0, Ordering::Release);
        self.over.store(refuse, Ordering::Relaxed);
    }
}

/// Bytes free for unprivileged writers on the file system holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

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
    limits: Limits,
    guard: Arc<DiskGuard>,
    freed: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let Limits { max, min_free } = limits;
    let mut tick = tokio::time::interval(BUDGET_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ceiling = max;
    let mut was = guard.refusing();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let measured = store
            .blocking(|s| Ok((s.size_on_disk()?, free_bytes(s.dir()))))
            .await;
        let (size, free) = match measured {
            Ok(m) => m,
            Err(e) => {
                // Keep the last verdict rather than guess either way.
                tracing::warn!(error = %e, "cannot measure the database size");
                continue;
            }
        };
        let free = free.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the data dir's free space");
            u64::MAX
        });
        let over = over_budget(size, max, &mut ceiling, freed.swap(0, Ordering::AcqRel));
        let low = free < min_free;
        let refuse = over || low;
        let allowance = ceiling
            .saturating_sub(size)
            .min(free.saturating_sub(min_free));
        guard.measured(refuse, allowance);
        match (was, refuse) {
            (false, true) => tracing::warn!(
                size_on_disk = size,
                max_disk_bytes = max,
                free_bytes = free,
                min_free_bytes = min_free,
                "storage over max_disk_bytes or under min_free_bytes: refusing inbound webhooks with 503"
            ),
            (true, false) => tracing::info!(
                size_on_disk = size,
                max_disk_bytes = max,
                free_bytes = free,
                "storage has room again: accepting inbound webhooks"
            ),
            _ => {}
        }
        was = refuse;
    }
}

/// `storage.max_disk_bytes` and `storage.min_free_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: u64,
    pub min_free: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_a_batch_past_the_allowance_until_the_next_measurement() {
        let g = DiskGuard::default();
        assert!(g.admit(1 << 40), "unlimited before the first measurement");
        g.measured(false, 1000);
        assert!(g.admit(600));
        assert!(!g.admit(500), "600 + 500 > 1000");
        assert!(g.refusing());
        assert!(g.admit(400), "what was refused was not charged");
        g.measured(false, 1000);
        assert!(!g.refusing());
        g.measured(true, 5000);
        assert!(!g.admit(1));
    }

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
