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
#[derive(Debug, Default)]
pub struct Control {
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
    /// Duration of every attempt (`hookrelay_delivery_duration_seconds`).
    pub duration: crate::telemetry::Seconds,
    /// Dead letters an operator asked to deliver once more, out of order.
    redeliveries: Mutex<std::collections::VecDeque<crate::model::Seq>>,
}

/// Outcome class of one attempt, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Failed,
}

impl Control {
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
            AttemptOutcome::Delivered => self.delivered.fetch_add(1, Ordering::Relaxed),
            AttemptOutcome::Failed => self.failed_attempts.fetch_add(1, Ordering::Relaxed),
        };
        if let Ok(mut g) = self.last_attempt.lock() {
            *g = Some(attempt);
        }
    }

    pub fn record_dead_letter(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
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
