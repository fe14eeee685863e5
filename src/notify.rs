//! systemd service notifications (`sd_notify`): `READY=1` once the relay
//! serves, `WATCHDOG=1` every `WATCHDOG_USEC / 2` while it runs, `STOPPING=1`
//! as soon as shutdown starts, `EXTEND_TIMEOUT_USEC` before the stop's
//! checkpoint. Everything here is a no-op when `NOTIFY_SOCKET`
//! is unset (not started by systemd, or in tests).
//!
//! The watchdog ping proves that the runtime still schedules tasks and timers;
//! it does not probe the store or the listeners. Owns only the notification
//! socket: must not touch the store, the listeners or the shutdown token's
//! state (it only listens for cancellation).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Watchdog pings are never sent more often than this, whatever `WATCHDOG_USEC` says.
const MIN_PING_EVERY: Duration = Duration::from_millis(10);

/// Tells systemd the relay is up: listeners bound, store open.
pub fn ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// Asks systemd for `by` more time to stop (the checkpoint at a clean stop
/// does the work of a start, which `TimeoutStartSec` allows for).
pub fn extend_stop(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(
        &[NotifyState::ExtendTimeoutUsec(usec)],
        "EXTEND_TIMEOUT_USEC",
    );
}

/// Starts the task that sends watchdog pings (when systemd asks for them) and
/// `STOPPING=1` once `shutdown` is cancelled.
pub fn spawn(tracker: &TaskTracker, shutdown: CancellationToken) {
    let every = ping_every(sd_notify::watchdog_enabled());
    tracker.spawn(supervise(every, shutdown));
}

/// Half the watchdog timeout, as sd_watchdog_enabled(3) recommends.
fn ping_every(timeout: Option<Duration>) -> Option<Duration> {
    timeout
        .filter(|t| !t.is_zero())
        .map(|t| (t / 2).max(MIN_PING_EVERY))
}

async fn supervise(every: Option<Duration>, shutdown: CancellationToken) {
    if let Some(every) = every {
        tracing::debug!(
            every_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            // A datagram to a local socket; kept off the runtime's threads all the same.
            let sent = tokio::task::spawn_blocking(|| sd_notify::notify(&[NotifyState::Watchdog]));
            match sent.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "WATCHDOG=1 not sent"),
                Err(e) => tracing::debug!(error = %e, "WATCHDOG=1 task failed"),
            }
        }
    } else {
        shutdown.cancelled().await;
    }
    send(&[NotifyState::Stopping], "STOPPING=1");
}

fn send(state: &[NotifyState], what: &str) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd of {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout_and_never_absurdly_often() {
        assert_eq!(ping_every(None), None);
        assert_eq!(ping_every(Some(Duration::ZERO)), None);
        assert_eq!(
            ping_every(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            ping_every(Some(Duration::from_micros(1))),
            Some(MIN_PING_EVERY)
        );
    }
}
