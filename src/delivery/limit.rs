//! Per-destination rate limit (`rate_limit = "N/s"` or `"N/m"`): one smooth
//! GCRA limiter (`governor`) per destination, shared by every attempt to it,
//! retries and redeliveries included. No burst beyond one permit: attempts are
//! spaced `per / count` apart.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::RateLimit;

/// Hands out one permit per attempt; unlimited when no `rate_limit` is set.
pub struct Limiter {
    inner: Option<DefaultDirectRateLimiter>,
}

impl Limiter {
    /// A limiter for `rate`, or one that never waits.
    pub fn new(rate: Option<RateLimit>) -> Limiter {
        let inner = rate.and_then(|r| {
            let count = r.count.max(1);
            let period = (r.per / count).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct(quota))
        });
        Limiter { inner }
    }

    /// Waits for a permit; false if `interrupt` fired first (no permit taken).
    pub async fn acquire(&self, interrupt: &CancellationToken) -> bool {
        let Some(limiter) = &self.inner else {
            return !interrupt.is_cancelled();
        };
        loop {
            if interrupt.is_cancelled() {
                return false;
            }
            let wait = match limiter.check() {
                Ok(()) => return true,
                Err(not_until) => not_until.wait_time_from(limiter.clock().now()),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = interrupt.cancelled() => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn unlimited_never_waits() {
        let l = Limiter::new(None);
        let t = CancellationToken::new();
        let started = Instant::now();
        for _ in 0..1000 {
            assert!(l.acquire(&t).await);
        }
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn permits_are_spaced_without_bursts() {
        let l = Limiter::new(Some(RateLimit {
            count: 20,
            per: Duration::from_secs(1),
        }));
        let t = CancellationToken::new();
        let started = Instant::now();
        for _ in 0..6 {
            assert!(l.acquire(&t).await);
        }
        // First permit at once, then one every 50 ms.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(240), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn interrupt_stops_the_wait() {
        let l = Limiter::new(Some(RateLimit {
            count: 1,
            per: Duration::from_secs(3600),
        }));
        let t = CancellationToken::new();
        assert!(l.acquire(&t).await);
        t.cancel();
        assert!(!l.acquire(&t).await);
    }
}
