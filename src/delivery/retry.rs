//! Retry timing: pure functions from (policy, history, answer) to a
//! decision, after an attempt ([`next_delay`]) or when a stored run is taken
//! up again ([`resume`]), and the `Retry-After` parser. No clock, no
//! randomness of its own.

use std::time::Duration;

use crate::config::{RetryPolicy, Schedule};

/// Longest wait a `Retry-After` header may impose; a broken header must not park a destination for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    Retry(Duration),
    /// Give up: attempts or age ran out.
    Exhausted(&'static str),
}

/// Decides the wait before attempt `attempts_made + 1`.
///
/// - `attempts_made`: failed attempts so far (>= 1).
/// - `elapsed`: time since the first attempt of this message.
/// - `retry_after`: the destination's `Retry-After` (only honored on 429/503 by the caller).
/// - `jitter`: a uniform random number in `[0, 1)`; the wait is spread over
///   `[delay/2, delay)` so that retries of many relays do not synchronise.
///
/// A `Retry-After` longer than the computed wait wins, even past `max_interval`,
/// capped at [`RETRY_AFTER_CAP`].
pub fn next_delay(
    policy: &RetryPolicy,
    attempts_made: u32,
    elapsed: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Decision {
    if attempts_made >= policy.max_attempts {
        return Decision::Exhausted("max_attempts reached");
    }
    let base = match policy.schedule {
        Schedule::Fixed => policy.initial,
        Schedule::Exponential => {
            let exp = attempts_made.saturating_sub(1).min(32);
            policy
                .initial
                .checked_mul(1u32 << exp.min(31))
                .unwrap_or(policy.max_interval)
        }
    }
    .min(policy.max_interval);
    // Out-of-range input (NaN included) must not panic the worker.
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut delay = base / 2 + base.mul_f64(0.5 * jitter);
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(RETRY_AFTER_CAP));
    }
    if elapsed.saturating_add(delay) > policy.max_age {
        return Decision::Exhausted("max_age reached");
    }
    Decision::Retry(delay)
}

/// Where a retry run stored earlier (before a restart, or by a delivery
/// that was interrupted) stands now, before any further attempt.
///
/// - `made`: attempts the run has made (>= 1);
/// - `age`: time since its first attempt (wall clock, across restarts);
/// - `retry_in`: time left until its stored retry time (zero once passed),
///   or `None` when it was stored exhausted.
///
/// `Retry(wait)`: the next attempt is due after `wait`. `Exhausted`: no
/// further attempt: the run was exhausted already, or is now, because the
/// relay was down past `max_age` or the policy was changed to allow less.
/// A stored wait longer than any policy makes (the wall clock stepped back)
/// is cut to the longest one ([`RETRY_AFTER_CAP`] or `max_interval`).
pub fn resume(
    policy: &RetryPolicy,
    made: u32,
    age: Duration,
    retry_in: Option<Duration>,
) -> Decision {
    let Some(wait) = retry_in else {
        return Decision::Exhausted("retries exhausted before");
    };
    if made >= policy.max_attempts {
        return Decision::Exhausted("max_attempts reached");
    }
    let wait = wait.min(policy.max_interval.max(RETRY_AFTER_CAP));
    if age.saturating_add(wait) > policy.max_age {
        return Decision::Exhausted("max_age reached");
    }
    Decision::Retry(wait)
}

/// Parses `Retry-After`: delta seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: Schedule::Exponential,
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn exponential_doubles_within_jitter_bounds() {
        let p = policy();
        for (n, base) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let lo = next_delay(&p, n, Duration::ZERO, None, 0.0);
            let hi = next_delay(&p, n, Duration::ZERO, None, 0.999_999);
            let base = Duration::from_secs(base);
            assert_eq!(lo, Decision::Retry(base / 2));
            match hi {
                Decision::Retry(d) => assert!(d < base && d > base / 2, "{d:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn delay_is_capped_by_max_interval() {
        let p = RetryPolicy {
            max_attempts: 100,
            ..policy()
        };
        assert_eq!(
            next_delay(&p, 40, Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_secs(30))
        );
    }

    #[test]
    fn fixed_schedule_waits_initial() {
        let p = RetryPolicy {
            schedule: Schedule::Fixed,
            ..policy()
        };
        assert_eq!(
            next_delay(&p, 3, Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_millis(500))
        );
    }

    #[test]
    fn attempts_and_age_exhaust() {
        let p = policy();
        assert!(matches!(
            next_delay(&p, 5, Duration::ZERO, None, 0.0),
            Decision::Exhausted(_)
        ));
        assert!(matches!(
            next_delay(&p, 1, Duration::from_secs(3600), None, 0.0),
            Decision::Exhausted(_)
        ));
    }

    #[test]
    fn retry_after_overrides_max_interval_up_to_an_hour() {
        let p = RetryPolicy {
            max_age: Duration::from_secs(100_000),
            ..policy()
        };
        let ra = Some(Duration::from_secs(120));
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, ra, 0.5),
            Decision::Retry(Duration::from_secs(120))
        );
        let huge = Some(Duration::from_secs(86_400 * 30));
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, huge, 0.5),
            Decision::Retry(RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn retry_after_counts_against_max_age() {
        let p = RetryPolicy {
            max_age: Duration::from_secs(60),
            ..policy()
        };
        let ra = Some(Duration::from_secs(50));
        assert_eq!(
            next_delay(&p, 1, Duration::from_secs(5), ra, 0.0),
            Decision::Retry(Duration::from_secs(50))
        );
        assert!(matches!(
            next_delay(&p, 1, Duration::from_secs(15), ra, 0.0),
            Decision::Exhausted(_)
        ));
    }

    #[test]
    fn a_short_retry_after_never_shortens_the_backoff() {
        let p = policy();
        let ra = Some(Duration::from_millis(10));
        assert_eq!(
            next_delay(&p, 3, Duration::ZERO, ra, 0.0),
            Decision::Retry(Duration::from_secs(2))
        );
    }

    #[test]
    fn jitter_stays_in_half_open_bounds_for_any_input() {
        let p = RetryPolicy {
            max_attempts: 1000,
            ..policy()
        };
        for n in 1..40 {
            for j in [-1.0, 0.0, 0.25, 0.5, 0.999, 1.0, 7.0, f64::NAN] {
                let Decision::Retry(d) = next_delay(&p, n, Duration::ZERO, None, j) else {
                    panic!("attempt {n} exhausted");
                };
                assert!(d <= p.max_interval, "{n} {j} {d:?}");
                assert!(d >= Duration::from_millis(500), "{n} {j} {d:?}");
            }
        }
    }

    #[test]
    fn a_resumed_run_waits_out_its_stored_time_within_its_budget() {
        let p = policy();
        let s = Duration::from_secs;
        assert_eq!(resume(&p, 2, s(10), Some(s(3))), Decision::Retry(s(3)));
        assert_eq!(
            resume(&p, 2, s(10), Some(Duration::ZERO)),
            Decision::Retry(Duration::ZERO),
            "due already: at once"
        );
        assert_eq!(
            resume(&p, 5, s(10), Some(s(3))),
            Decision::Exhausted("max_attempts reached"),
            "the policy allows fewer attempts than it did"
        );
        assert_eq!(
            resume(&p, 2, s(3601), Some(Duration::ZERO)),
            Decision::Exhausted("max_age reached"),
            "down past max_age"
        );
        assert_eq!(
            resume(&p, 2, s(3590), Some(s(30))),
            Decision::Exhausted("max_age reached"),
            "the stored retry would come after max_age"
        );
        assert!(matches!(
            resume(&p, 1, Duration::ZERO, None),
            Decision::Exhausted(_)
        ));
        let long = RetryPolicy {
            max_age: s(86_400 * 30),
            ..p
        };
        assert_eq!(
            resume(&long, 1, Duration::ZERO, Some(s(86_400 * 7))),
            Decision::Retry(RETRY_AFTER_CAP),
            "a wait no policy makes is cut"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }
}
