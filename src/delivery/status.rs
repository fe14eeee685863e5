//! Live, in-memory view of each destination's worker, shared with the admin
//! API and metrics, and the control handle operators use to wake a worker.
//! Persistent state (cursor, paused, blocked) lives in the store; this holds
//! only what is lost on restart without harm.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

/// What a worker is doing, as the admin API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// Delivering or idle and caught up.
    #[default]
    Active,
    /// Waiting to retry a failed attempt.
    Retrying,
}

/// The last attempt a worker made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastAttempt {
    pub at_ms: u64,
    pub seq: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Shared between one worker and the admin side.
#[derive(Default)]
pub struct Control {
    /// Where dead letters and blocks are reported (operator events).
    events: crate::events::Events,
    name: Option<crate::model::DestinationName>,
    /// Notified (with a stored permit) when an operator changes the destination.
    pub changed: Notify,
    activity: Mutex<Activity>,
    last_attempt: Mutex<Option<LastAttempt>>,
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    /// Messages this destination's routing rules skipped.
    skipped: AtomicU64,
    /// Wall-clock ms of the last delivered attempt (0: none since start).
    last_success_ms: AtomicU64,
    /// Wall-clock ms of the first failed attempt since the last success
    /// (0: the last attempt succeeded, or none failed since start).
    failing_since_ms: AtomicU64,
    /// Attempts recorded since start: tells a fleet's health sharing
    /// whether there is anything new to share.
    recorded: AtomicU64,
    /// Duration of every attempt (`hookrelay_delivery_duration_seconds`).
    pub duration: crate::telemetry::Seconds,
    /// Dead letters an operator asked to deliver once more, out of order.
    redeliveries: Mutex<std::collections::VecDeque<crate::model::Seq>>,
    /// Providers waiting on this destination's answer (sync replies).
    pub replies: super::reply::SyncReplies,
}

/// Outcome class of one attempt, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Failed,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control of destination `name`, reporting to `events`.
    pub fn new(name: crate::model::DestinationName, events: crate::events::Events) -> Control {
        Control {
            events,
            name: Some(name),
            ..Control::default()
        }
    }

    /// Queues one more delivery of a dead-lettered `seq` and wakes the worker.
    pub fn request_redelivery(&self, seq: crate::model::Seq) {
        self.request_redeliveries([seq]);
    }

    /// Queues each of `seqs` not queued yet, in order; how many were added.
    pub fn request_redeliveries(&self, seqs: impl IntoIterator<Item = crate::model::Seq>) -> usize {
        let mut added = 0;
        if let Ok(mut q) = self.redeliveries.lock() {
            let mut queued: std::collections::HashSet<_> = q.iter().copied().collect();
            for seq in seqs {
                if queued.insert(seq) {
                    q.push_back(seq);
                    added += 1;
                }
            }
        }
        self.wake();
        added
    }

    /// The next requested redelivery, if any.
    pub fn next_redelivery(&self) -> Option<crate::model::Seq> {
        self.redeliveries
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
    }

    /// Wakes the worker so it re-reads its persisted state.
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    pub fn set_activity(&self, a: Activity) {
        if let Ok(mut g) = self.activity.lock() {
            *g = a;
        }
    }

    pub fn activity(&self) -> Activity {
        self.activity.lock().map(|g| *g).unwrap_or_default()
    }

    /// Marks one more (+1) or one fewer (-1) attempt in flight.
    pub fn add_in_flight(&self, delta: isize) {
        if delta >= 0 {
            self.in_flight.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records an attempt's result for the admin API and counters.
    pub fn record(&self, attempt: LastAttempt, outcome: AttemptOutcome) {
        match outcome {
            AttemptOutcome::Delivered => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.last_success_ms
                    .fetch_max(attempt.at_ms, Ordering::Relaxed);
                self.failing_since_ms.store(0, Ordering::Relaxed);
            }
            AttemptOutcome::Failed => {
                self.failed_attempts.fetch_add(1, Ordering::Relaxed);
                // Only the first failure after a success starts the clock.
                let _ = self.failing_since_ms.compare_exchange(
                    0,
                    attempt.at_ms.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        };
        if let Ok(mut g) = self.last_attempt.lock() {
            *g = Some(attempt);
        }
        self.recorded.fetch_add(1, Ordering::Release);
    }

    /// Attempts recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Acquire)
    }

    /// This relay's view of the destination's health, as a fleet shares it.
    pub fn health(&self) -> crate::store::codec::FleetHealth {
        let last_attempt = self.last_attempt().map(|a| {
            let attempt = crate::store::Attempt {
                at_ms: a.at_ms,
                status: a.status,
                latency_ms: 0,
                error: a.error,
            };
            (crate::model::Seq(a.seq), attempt)
        });
        crate::store::codec::FleetHealth {
            failing_since_ms: self.failing_since_ms(),
            last_success_ms: self.last_success_ms(),
            last_attempt,
            reported_failing: false,
        }
    }

    /// A message was dead-lettered after `attempts`, failing with `last_error`.
    pub fn record_dead_letter(&self, seq: crate::model::Seq, attempts: u32, last_error: &str) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let details = crate::events::dead_letter(seq, attempts, last_error);
        let kind = crate::events::Kind::MessageDeadLettered;
        self.events.emit(kind, self.name.as_ref(), details);
    }

    /// The destination is now blocked on `seq` (`on_exhausted = "block"`).
    pub fn record_blocked(&self, seq: crate::model::Seq, last_error: &str) {
        let details = serde_json::json!({ "seq": seq.0, "last_error": last_error });
        let kind = crate::events::Kind::DestinationBlocked;
        self.events.emit(kind, self.name.as_ref(), details);
    }

    /// Since when deliveries have been failing (the first failed attempt
    /// after the last success), if the last attempt failed.
    pub fn failing_since_ms(&self) -> Option<u64> {
        Some(self.failing_since_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// When the last delivery succeeded, if one did since start.
    pub fn last_success_ms(&self) -> Option<u64> {
        Some(self.last_success_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    pub fn record_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages skipped by routing since start.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn last_attempt(&self) -> Option<LastAttempt> {
        self.last_attempt.lock().ok().and_then(|g| g.clone())
    }

    /// (delivered, failed attempts, dead-lettered) since start.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.failed_attempts.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
        )
    }
}
