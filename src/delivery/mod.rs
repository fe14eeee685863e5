//! Delivery: one worker task per destination reads the log from that
//! destination's cursor, sends each routed message in seq order, retries per
//! policy, records every attempt, and moves the cursor only after success or
//! dead-lettering. Owns cursors' advancement; must not write the log itself.

pub mod client;
pub mod retry;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DestinationConfig, OnExhausted};
use crate::model::{DestinationName, Seq};
use crate::store::{Attempt, DeadLetter, Message, Scan, Store, StoreError};
use crate::time::now_ms;
use client::{AttemptResult, HttpClient};
use retry::Decision;

/// How long an in-flight attempt may run on after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Messages examined per store scan before the worker yields.
const SCAN_BUDGET: usize = 1024;
/// Wait before retrying after a storage error, so a broken disk is not spun on.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Delivery failures that stop a worker's current step.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use status::Control;
use status::{Activity, AttemptOutcome, LastAttempt};

/// Starts one worker per destination; returns their control handles by name.
pub fn spawn_workers(
    destinations: &[DestinationConfig],
    store: &Store,
    head: &watch::Receiver<Seq>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Vec<(DestinationName, Arc<Control>)> {
    let client = client::new_client();
    destinations
        .iter()
        .map(|dest| {
            let control = Arc::new(Control::default());
            let worker = Worker {
                dest: dest.clone(),
                store: store.clone(),
                head: head.clone(),
                client: client.clone(),
                control: control.clone(),
                shutdown: shutdown.clone(),
            };
            tracker.spawn(worker.run());
            (dest.name.clone(), control)
        })
        .collect()
}

struct Worker {
    dest: DestinationConfig,
    store: Store,
    head: watch::Receiver<Seq>,
    client: HttpClient,
    control: Arc<Control>,
    shutdown: CancellationToken,
}

/// How delivering one message ended.
enum Finished {
    /// The cursor may move past it.
    Done,
    /// `on_exhausted = "block"`: wait for an operator.
    Blocked,
    /// Shutdown interrupted it; it stays unfinished.
    Interrupted,
}

impl Worker {
    async fn run(mut self) {
        let name = self.dest.name.clone();
        tracing::debug!(destination = %name, "worker started");
        while !self.shutdown.is_cancelled() {
            if let Err(e) = self.step().await {
                tracing::error!(destination = %name, error = %e, "delivery step failed");
                self.pause_for(STORE_ERROR_BACKOFF).await;
            }
        }
        tracing::debug!(destination = %name, "worker stopped");
    }

    /// One unit of progress: deliver the next message, or wait for one.
    async fn step(&mut self) -> Result<(), DeliveryError> {
        let state = self.store.destination_state(&self.dest.name)?;
        if state.paused || state.blocked_on.is_some() {
            self.wait_for_operator().await;
            return Ok(());
        }
        let cursor = self.store.cursor(&self.dest.name)?;
        let head = *self.head.borrow_and_update();
        let sources = &self.dest.sources;
        match self
            .store
            .next_message(cursor, head, SCAN_BUDGET, |s| sources.contains(s))?
        {
            Scan::Found(seq, msg) => match self.deliver(seq, &msg).await? {
                Finished::Done => self.store.set_cursor(&self.dest.name, seq)?,
                Finished::Blocked => {
                    let mut state = self.store.destination_state(&self.dest.name)?;
                    state.blocked_on = Some(seq);
                    self.store.set_destination_state(&self.dest.name, &state)?;
                }
                Finished::Interrupted => {}
            },
            Scan::Nothing(upto) => {
                if upto > cursor {
                    self.store.set_cursor(&self.dest.name, upto)?;
                }
                if upto >= head {
                    self.wait_for_head(head).await;
                }
            }
        }
        Ok(())
    }

    /// Attempts `seq` until it succeeds, is exhausted, or shutdown interrupts.
    async fn deliver(&mut self, seq: Seq, msg: &Message) -> Result<Finished, DeliveryError> {
        // Attempt numbers continue across restarts and replays (they key the
        // attempt history); the retry budget counts this run only.
        let first = Instant::now();
        let mut n = self.store.attempts(&self.dest.name, seq)?.len() as u32;
        let mut made = 0u32;
        loop {
            n += 1;
            made += 1;
            let at_ms = now_ms();
            let send = client::attempt(&self.client, &self.dest, seq, msg, n);
            let grace = async {
                self.shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            self.control.add_in_flight(1);
            let outcome = tokio::select! {
                r = send => Some(r),
                _ = grace => None,
            };
            self.control.add_in_flight(-1);
            let (result, latency) = match outcome {
                Some(r) => r,
                None => {
                    tracing::warn!(destination = %self.dest.name, %seq, "attempt abandoned at shutdown");
                    return Ok(Finished::Interrupted);
                }
            };
            let (status, error, retry_after) = match result {
                AttemptResult::Delivered { status } => (Some(status), None, None),
                AttemptResult::Failed {
                    status,
                    retry_after,
                    error,
                } => (status, Some(truncate(error)), retry_after),
            };
            let record = Attempt {
                at_ms,
                status,
                latency_ms: latency.as_millis() as u64,
                error: error.clone(),
            };
            self.store
                .record_attempt(&self.dest.name, seq, n, &record)?;
            let last = LastAttempt {
                at_ms,
                seq: seq.0,
                status,
                error: error.clone(),
            };
            let Some(error) = error else {
                self.control.record(last, AttemptOutcome::Delivered);
                self.control.set_activity(Activity::Active);
                return Ok(Finished::Done);
            };
            self.control.record(last, AttemptOutcome::Failed);
            tracing::info!(destination = %self.dest.name, %seq, attempt = n, status = ?status, reason = %error, "delivery attempt failed");

            let decision = retry::next_delay(
                &self.dest.retry,
                made,
                first.elapsed(),
                retry_after,
                rand::random::<f64>(),
            );
            match decision {
                Decision::Retry(wait) => {
                    self.control.set_activity(Activity::Retrying);
                    if !self.pause_for(wait).await {
                        return Ok(Finished::Interrupted);
                    }
                }
                Decision::Exhausted(why) => {
                    self.control.set_activity(Activity::Active);
                    return self.exhausted(seq, made, why, error);
                }
            }
        }
    }

    fn exhausted(
        &self,
        seq: Seq,
        attempts: u32,
        why: &str,
        error: String,
    ) -> Result<Finished, DeliveryError> {
        match self.dest.on_exhausted {
            OnExhausted::DeadLetter => {
                tracing::warn!(destination = %self.dest.name, %seq, attempts, why, "message dead-lettered");
                let dead = DeadLetter {
                    at_ms: now_ms(),
                    attempts,
                    last_error: error,
                };
                self.store.add_dead_letter(&self.dest.name, seq, &dead)?;
                self.control.record_dead_letter();
                Ok(Finished::Done)
            }
            OnExhausted::Block => {
                tracing::warn!(destination = %self.dest.name, %seq, attempts, why, "destination blocked");
                Ok(Finished::Blocked)
            }
        }
    }

    /// Sleeps for `d` unless shutdown comes first; true if the full time passed.
    async fn pause_for(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    async fn wait_for_head(&mut self, seen: Seq) {
        if *self.head.borrow() > seen {
            return;
        }
        tokio::select! {
            _ = self.head.changed() => {}
            _ = self.control.changed.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    async fn wait_for_operator(&self) {
        tokio::select! {
            _ = self.control.changed.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > crate::store::codec::MAX_ERROR_LEN {
        let mut cut = crate::store::codec::MAX_ERROR_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
