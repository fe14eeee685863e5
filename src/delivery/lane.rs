//! One destination's delivery of one message: attempts (each taking a rate
//! permit, counted in flight, recorded in the store and in [`Control`]),
//! retries per policy, and what exhaustion means (dead letter or block). Also
//! an operator's one-off redelivery of a dead letter. Shared by the strict
//! worker and the unordered scheduler; it never moves the cursor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{self, AttemptResult, HttpClient};
use super::limit::Limiter;
use super::retry::{self, Decision};
use super::status::{Activity, AttemptOutcome, Control, LastAttempt};
use super::{DeliveryError, SHUTDOWN_GRACE};
use crate::config::{DestinationConfig, OnExhausted};
use crate::model::{Seq, SourceName};
use crate::store::{Attempt, DeadLetter, Message, ReplayEnd, Scan, Store};
use crate::telemetry::WEBHOOKS;
use crate::time::now_ms;

/// Most body bytes one read-ahead holds (beyond its first message).
const READ_AHEAD_BYTES: usize = 1 << 20;
/// How close to the head a message is read on the async thread: at most
/// this many messages of at most [`HOT_BYTES`], 4 MiB, which sled's 16 MiB
/// cache still holds since they were written.
const HOT_SEQS: u64 = 1024;
/// Largest record read on the async thread.
const HOT_BYTES: usize = 4096;
/// Entries an inline read looks at, at most, before it reports progress.
const HOT_SCAN: usize = 64;

/// How delivering one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Delivered or dead-lettered: the cursor may move past it.
    Done,
    /// `on_exhausted = "block"`: the destination is now blocked on it.
    Blocked,
    /// Shutdown or an operator change interrupted it; it stays unfinished.
    Interrupted,
}

/// Everything needed to deliver to one destination.
pub struct Lane {
    pub dest: DestinationConfig,
    pub store: Store,
    pub control: Arc<Control>,
    client: HttpClient,
    limiter: Limiter,
    /// Only for the in-flight grace; waits use the caller's interrupt token.
    shutdown: CancellationToken,
    /// Messages currently between a failed attempt and their end.
    failing: Mutex<usize>,
    /// No seq above this has a recorded attempt, so a new message's attempt
    /// count is known without reading the store (u64::MAX: unknown, always read).
    attempted_upto: AtomicU64,
}

/// What one completed attempt said.
struct Answer {
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Lane {
    pub fn new(
        dest: DestinationConfig,
        store: Store,
        control: Arc<Control>,
        client: HttpClient,
        shutdown: CancellationToken,
    ) -> Lane {
        let attempted_upto = match store.attempts().last_attempted(&dest.name) {
            Ok(seq) => seq.0,
            Err(e) => {
                tracing::warn!(destination = %dest.name, error = %e, "cannot read the last attempted seq; attempts will be looked up every time");
                u64::MAX
            }
        };
        Lane {
            attempted_upto: AtomicU64::new(attempted_upto),
            limiter: Limiter::new(dest.rate_limit),
            dest,
            store,
            control,
            client,
            shutdown,
            failing: Mutex::new(0),
        }
    }

    /// Attempts `seq` until it succeeds or is exhausted, or `interrupt` fires
    /// (it must fire on shutdown too). Backoff and rate-limit waits end at once
    /// on `interrupt`; an attempt already sent runs to its answer, or to
    /// [`SHUTDOWN_GRACE`] after shutdown.
    pub async fn deliver(
        &self,
        seq: Seq,
        msg: &Message,
        interrupt: &CancellationToken,
    ) -> Result<Finished, DeliveryError> {
        // Attempt numbers continue across restarts and replays (they key the
        // attempt history); the retry budget (attempts, age) counts this run only.
        let first = Instant::now();
        let mut n = self.attempts_so_far(seq).await?;
        let mut made = 0u32;
        let add_failing = |delta| self.add_failing(delta);
        let mut failing: Option<Counted<'_>> = None;
        loop {
            n += 1;
            made += 1;
            let Some(answer) = self.attempt(seq, msg, n, interrupt).await? else {
                return Ok(Finished::Interrupted);
            };
            let Some(error) = answer.error else {
                return Ok(Finished::Done);
            };
            if failing.is_none() {
                failing = Some(Counted::new(&add_failing));
            }
            let decision = retry::next_delay(
                &self.dest.retry,
                made,
                first.elapsed(),
                answer.retry_after,
                rand::random::<f64>(),
            );
            match decision {
                Decision::Retry(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = interrupt.cancelled() => return Ok(Finished::Interrupted),
                    }
                }
                Decision::Exhausted(why) => return self.exhausted(seq, n, why, error),
            }
        }
    }

    /// Up to `max_found` messages after `after` (at most `upto`) routed to
    /// this destination, in one read on the blocking pool; see [`Log::read_ahead`].
    ///
    /// [`Log::read_ahead`]: crate::store::Log::read_ahead
    ///
    /// Within [`HOT_SEQS`] of the head it first tries the next message on
    /// this thread (the store's one exception to its blocking rule): it was
    /// just written, sled still holds it in its cache, and under a saturated
    /// ingest a trip to the blocking pool waits milliseconds for a core
    /// (delivery fell behind at 10-11k/s against 12.5k/s read inline).
    pub async fn read_ahead(
        self: &Arc<Self>,
        after: Seq,
        upto: Seq,
        budget: usize,
        max_found: usize,
    ) -> Result<Vec<Scan>, DeliveryError> {
        if after < upto && upto.0 - after.0 <= HOT_SEQS {
            let routes = |source: &SourceName| self.dest.sources.contains(source);
            let hot = self
                .store
                .log()
                .next_routed_within(after, upto, HOT_SCAN, HOT_BYTES, routes)?;
            // `Nothing(after)`: the next routed message is larger than that.
            if !matches!(hot, Scan::Nothing(seen) if seen == after) {
                return Ok(vec![hot]);
            }
        }
        let lane = self.clone();
        let scans = self.store.blocking(move |s| {
            let routes = |source: &SourceName| lane.dest.sources.contains(source);
            let limits = (max_found, READ_AHEAD_BYTES);
            s.log().read_ahead(after, upto, budget, limits, routes)
        });
        Ok(scans.await?)
    }

    /// Ends a bounded replay (`replay --to-seq`) whose end the cursor has
    /// reached: the cursor goes back to where it was before the replay, so
    /// what followed the range and was delivered then is not sent again.
    pub fn end_replay(&self, cursor: Seq, end: ReplayEnd) -> Result<(), DeliveryError> {
        let name = &self.dest.name;
        // Refused if an operator moved the cursor meanwhile (even when it
        // stays put): their replay also replaced `replay_end`.
        let target = end.resume.max(cursor);
        if self.store.cursors().advance(name, cursor, target)? {
            self.store.destinations().update(name, |st| {
                if st.replay_end == Some(end) {
                    st.replay_end = None;
                }
            })?;
            tracing::info!(destination = %name, to = end.to.0, cursor = target.0, "bounded replay finished; delivery resumes where it was");
        }
        Ok(())
    }

    /// One message, read on the blocking pool.
    pub async fn message(&self, seq: Seq) -> Result<Option<Message>, DeliveryError> {
        Ok(self.store.blocking(move |s| s.log().message(seq)).await?)
    }

    /// One more attempt at a dead letter, out of order: success removes the
    /// dead letter, failure updates it. A single attempt, not a retry run.
    pub async fn redeliver(
        &self,
        seq: Seq,
        interrupt: &CancellationToken,
    ) -> Result<(), DeliveryError> {
        let name = &self.dest.name;
        if self.store.dead_letters().get(name, seq)?.is_none() {
            return Ok(());
        }
        let Some(msg) = self.message(seq).await? else {
            tracing::warn!(destination = %name, seq = seq.0, "redelivery skipped: message no longer stored");
            return Ok(());
        };
        let n = self.attempts_so_far(seq).await? + 1;
        let Some(answer) = self.attempt(seq, &msg, n, interrupt).await? else {
            return Ok(());
        };
        match answer.error {
            None => {
                self.store.dead_letters().remove(name, seq)?;
                tracing::info!(destination = %name, seq = seq.0, attempt = n, "dead letter redelivered");
            }
            Some(last_error) => {
                let dead = DeadLetter {
                    at_ms: now_ms(),
                    attempts: n,
                    last_error,
                };
                self.store.dead_letters().add(name, seq, &dead)?;
            }
        }
        Ok(())
    }

    /// How many attempts of `seq` are recorded; a store read only for a seq
    /// that may have been attempted before (a retry after restart, a replay).
    async fn attempts_so_far(&self, seq: Seq) -> Result<u32, DeliveryError> {
        if seq.0 > self.attempted_upto.load(Ordering::Acquire) {
            return Ok(0);
        }
        let name = self.dest.name.clone();
        let attempts = self.store.blocking(move |s| s.attempts().list(&name, seq));
        Ok(attempts.await?.len() as u32)
    }

    /// Takes a rate permit, sends attempt `n`, records it. `None` when
    /// interrupted before sending or abandoned after the shutdown grace.
    async fn attempt(
        &self,
        seq: Seq,
        msg: &Message,
        n: u32,
        interrupt: &CancellationToken,
    ) -> Result<Option<Answer>, DeliveryError> {
        if !self.limiter.acquire(interrupt).await {
            return Ok(None);
        }
        let at_ms = now_ms();
        let outcome = {
            let add_in_flight = |delta| self.control.add_in_flight(delta);
            let _in_flight = Counted::new(&add_in_flight);
            let send = client::attempt(&self.client, &self.dest, seq, msg, n);
            let grace = async {
                self.shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                r = send => Some(r),
                _ = grace => None,
            }
        };
        let Some((result, latency)) = outcome else {
            tracing::warn!(destination = %self.dest.name, seq = seq.0, "attempt abandoned at shutdown");
            return Ok(None);
        };
        self.control.duration.observe(latency);
        let (status, error, retry_after) = match result {
            AttemptResult::Delivered { status } => (Some(status), None, None),
            AttemptResult::Failed {
                status,
                retry_after,
                error,
            } => (status, Some(truncate(error)), retry_after),
        };
        let latency_ms = latency.as_millis() as u64;
        let record = Attempt {
            at_ms,
            status,
            latency_ms,
            error: error.clone(),
        };
        self.store
            .attempts()
            .record(&self.dest.name, seq, n, &record)?;
        self.attempted_upto.fetch_max(seq.0, Ordering::Release);
        let last = LastAttempt {
            at_ms,
            seq: seq.0,
            status,
            error: error.clone(),
        };
        // Numbers as numbers; an `Option` records nothing when `None`, so a
        // connection error has no `status` field at all.
        match &error {
            None => {
                self.control.record(last, AttemptOutcome::Delivered);
                tracing::info!(
                    target: WEBHOOKS,
                    destination = %self.dest.name,
                    seq = seq.0,
                    status,
                    latency_ms,
                    attempt = n,
                    "webhook delivered"
                );
            }
            Some(reason) => {
                self.control.record(last, AttemptOutcome::Failed);
                tracing::info!(
                    destination = %self.dest.name,
                    seq = seq.0,
                    status,
                    latency_ms,
                    attempt = n,
                    %reason,
                    "delivery attempt failed"
                );
            }
        }
        Ok(Some(Answer { error, retry_after }))
    }

    fn exhausted(
        &self,
        seq: Seq,
        attempts: u32,
        why: &str,
        last_error: String,
    ) -> Result<Finished, DeliveryError> {
        let name = &self.dest.name;
        match self.dest.on_exhausted {
            OnExhausted::DeadLetter => {
                tracing::warn!(destination = %name, seq = seq.0, attempts, why, "message dead-lettered");
                let dead = DeadLetter {
                    at_ms: now_ms(),
                    attempts,
                    last_error,
                };
                self.store.dead_letters().add(name, seq, &dead)?;
                self.control.record_dead_letter();
                Ok(Finished::Done)
            }
            OnExhausted::Block => {
                tracing::warn!(destination = %name, seq = seq.0, attempts, why, "destination blocked until an operator acts");
                self.store.destinations().update(name, |st| {
                    st.blocked_on.get_or_insert(seq);
                })?;
                Ok(Finished::Blocked)
            }
        }
    }

    /// Counts a message as failing (or no longer); the activity is
    /// `retrying` while any message is.
    fn add_failing(&self, delta: isize) {
        if let Ok(mut n) = self.failing.lock() {
            *n = n.saturating_add_signed(delta);
            let activity = if *n > 0 {
                Activity::Retrying
            } else {
                Activity::Active
            };
            self.control.set_activity(activity);
        }
    }
}

/// Adds one to a gauge for as long as it lives (an attempt in flight, a
/// message failing), so every way out of a scope takes it back.
struct Counted<'a>(&'a (dyn Fn(isize) + Sync));

impl<'a> Counted<'a> {
    fn new(add: &'a (dyn Fn(isize) + Sync)) -> Self {
        add(1);
        Counted(add)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        (self.0)(-1);
    }
}

/// Cuts an error to what the attempt record keeps.
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
