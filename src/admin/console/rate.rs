//! Deliveries per minute, from the delivered counter each destination's
//! [`Control`](crate::delivery::Control) already keeps: a sampler reads the
//! counters every [`EVERY`] into a short ring per destination, and a rate
//! is the counter now minus the oldest sample of the last minute. No hook
//! in delivery, no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the counters are sampled.
pub const EVERY: Duration = Duration::from_secs(5);
/// The window a rate is taken over.
const WINDOW: Duration = Duration::from_secs(60);

/// Samples of the delivered counters, by destination name.
#[derive(Debug, Default)]
pub struct Rates {
    rings: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl Rates {
    /// Records `delivered` for destination `name` as of `at`.
    pub fn sample(&self, name: &str, delivered: u64, at: Instant) {
        let Ok(mut rings) = self.rings.lock() else {
            return;
        };
        let ring = rings.entry(name.to_owned()).or_default();
        // A counter that went down belongs to a new worker (a reload):
        // its history says nothing about the new one.
        if ring.back().is_some_and(|&(_, n)| n > delivered) {
            ring.clear();
        }
        ring.push_back((at, delivered));
        // Keep one sample at or before the window's start, to measure from.
        while ring.len() > 2 && ring.get(1).is_some_and(|&(t, _)| at - t >= WINDOW) {
            ring.pop_front();
        }
    }

    /// Deliveries per minute at `name` over about the last minute, with
    /// its counter at `delivered` now; `None` until a sample is
    /// [`EVERY`] old (just started, or a new destination).
    pub fn per_minute(&self, name: &str, delivered: u64, now: Instant) -> Option<f64> {
        let rings = self.rings.lock().ok()?;
        let &(t0, n0) = rings.get(name)?.front()?;
        let secs = now.checked_duration_since(t0)?.as_secs_f64();
        if secs < EVERY.as_secs_f64() || n0 > delivered {
            return None;
        }
        Some((delivered - n0) as f64 * 60.0 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_last_minute_and_forgets_a_reset_counter() {
        let r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.per_minute("d", 0, t0), None);
        r.sample("d", 0, t0);
        assert_eq!(r.per_minute("d", 10, t0 + Duration::from_secs(1)), None);
        for i in 1..=30u64 {
            r.sample("d", i * 10, t0 + EVERY * i as u32);
        }
        // 10 every 5 s is 120 a minute, over the window's samples only.
        let now = t0 + EVERY * 30;
        let rate = r.per_minute("d", 300, now).unwrap();
        assert!((rate - 120.0).abs() < 1e-9, "{rate}");
        r.sample("d", 3, now + EVERY);
        assert_eq!(r.per_minute("d", 3, now + EVERY), None);
    }
}
