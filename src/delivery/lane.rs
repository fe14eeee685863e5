//! One destination's delivery of one message: attempts (each taking a rate
//! permit, counted in flight, recorded in the store and in [`Control`]),
//! retries per policy, and what exhaustion means (dead letter or block). Also
//! an operator's one-off redelivery of a dead letter. Shared by the strict
//! worker and the unordered scheduler; it never moves the cursor.
//!
//! A message's retry budget counts its current run of attempts, which every
//! failed attempt stores with its record (epoch, first attempt, start, next
//! retry time): the next delivery of the message, after a restart or an
//! interruption, takes the run up from its latest record while the
//! destination's `retry_epoch` (raised by an operator's resume or replay)
//! is still the run's. A success ends the run; the success path writes
//! nothing more than its attempt record.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{self, AttemptResult, HttpClient};
use super::limit::Limiter;
use super::retry::{self, Decision};
use super::status::{Activity, AttemptOutcome, Control, LastAttempt};
use super::{DeliveryError, SHUTDOWN_GRACE};
use crate::backend::Backend;
use crate::config::{DestinationConfig, OnExhausted, RetryPolicy};
use crate::model::{Seq, SourceName};
use crate::route::Decision as Route;
use crate::store::{Attempt, DeadLetter, Latest, Message, ReplayEnd, RetryRun, Scan, Store};
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
    pub backend: Backend,
    pub control: Arc<Control>,
    client: HttpClient,
    limiter: Limiter,
    /// The process's end, only for the in-flight grace; waits use the
    /// caller's interrupt token.
    shutdown: CancellationToken,
    /// Messages currently between a failed attempt and their end.
    failing: Mutex<usize>,
    /// No seq above this has a recorded attempt, so a new message's attempt
    /// count is known without reading the store (u64::MAX: unknown, always read).
    attempted_upto: AtomicU64,
}

/// One completed attempt, not yet recorded.
struct Sent {
    /// What the attempt history keeps of it (`error` is `None` on success).
    record: Attempt,
    /// The destination's `Retry-After` (429, 503).
    retry_after: Option<Duration>,
    /// When it was sent (after its rate permit), as `record.at_ms` says.
    started: Instant,
    /// The 2xx answer, kept for a waiting provider.
    answer: Option<super::reply::AppAnswer>,
}

/// The current run of attempts of one message at this destination, once an
/// attempt of it has failed: what `max_attempts` and `max_age` count. Kept
/// with each failed attempt's record, so a restart takes it up again.
struct Run {
    /// As stored; `retry_at_ms` set after each attempt.
    stored: RetryRun,
    /// Attempts made in this run.
    made: u32,
    /// The run's age at `since`: zero for a run begun here, the wall-clock
    /// time since its first attempt for one taken up from the store.
    age_then: Duration,
    since: Instant,
}

impl Run {
    /// A run whose first attempt, number `n`, just failed.
    fn begin(epoch: u64, n: u32, first: &Sent) -> Run {
        Run {
            stored: RetryRun {
                epoch,
                first: n,
                started_ms: first.record.at_ms,
                retry_at_ms: None,
            },
            made: 0,
            age_then: Duration::ZERO,
            since: first.started,
        }
    }

    /// A run taken up from its latest attempt, number `n`.
    fn resumed(stored: RetryRun, n: u32) -> Run {
        Run {
            stored,
            made: n.saturating_sub(stored.first).saturating_add(1),
            age_then: Duration::from_millis(now_ms().saturating_sub(stored.started_ms)),
            since: Instant::now(),
        }
    }

    /// Time since the run's first attempt: monotonic within this process,
    /// wall clock across restarts.
    fn age(&self) -> Duration {
        self.age_then.saturating_add(self.since.elapsed())
    }

    /// What a run taken up from the store does first: wait for its stored
    /// retry time, or end now (see [`retry::resume`]).
    fn resume(&self, policy: &RetryPolicy) -> Decision {
        let retry_in = self
            .stored
            .retry_at_ms
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
        retry::resume(policy, self.made, self.age(), retry_in)
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Lane {
    pub fn new(
        dest: DestinationConfig,
        backend: Backend,
        control: Arc<Control>,
        client: HttpClient,
        shutdown: CancellationToken,
    ) -> Lane {
        // The fleet has no such index: its attempts are always looked up.
        let last = backend
            .sled()
            .map(|s| s.attempts().last_attempted(&dest.name));
        let attempted_upto = match last {
            Some(Ok(seq)) => seq.0,
            Some(Err(e)) => {
                tracing::warn!(destination = %dest.name, error = %e, "cannot read the last attempted seq; attempts will be looked up every time");
                u64::MAX
            }
            None => u64::MAX,
        };
        Lane {
            attempted_upto: AtomicU64::new(attempted_upto),
            limiter: Limiter::new(dest.rate_limit),
            dest,
            backend,
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
    ///
    /// `epoch` is the destination's `retry_epoch` as the caller read it: a
    /// retry run stored with it (before a restart, or by a delivery of `seq`
    /// that was interrupted) is taken up where it stopped, after waiting for
    /// its stored retry time, or ends at once if its budget ran out.
    pub async fn deliver(
        &self,
        seq: Seq,
        msg: &Message,
        epoch: u64,
        interrupt: &CancellationToken,
    ) -> Result<Finished, DeliveryError> {
        self.deliver_as(seq, msg, (epoch, false), None, interrupt)
            .await
    }

    /// [`Lane::deliver`] (or [`Lane::deliver_first`] if `first`) whose first
    /// attempt's answer goes to `waiter` (a fleet: to the relay where the
    /// provider waits) rather than to a provider waiting on this relay.
    pub async fn deliver_answering(
        &self,
        seq: Seq,
        msg: &Message,
        (epoch, first): (u64, bool),
        waiter: super::reply::Waiter,
        interrupt: &CancellationToken,
    ) -> Result<Finished, DeliveryError> {
        self.deliver_as(seq, msg, (epoch, first), Some(waiter), interrupt)
            .await
    }

    /// [`Lane::deliver`] of a message known never to have been attempted
    /// here (JetStream's first hand-out of it): no look-up of earlier attempts.
    pub async fn deliver_first(
        &self,
        seq: Seq,
        msg: &Message,
        epoch: u64,
        interrupt: &CancellationToken,
    ) -> Result<Finished, DeliveryError> {
        self.deliver_as(seq, msg, (epoch, true), None, interrupt)
            .await
    }

    async fn deliver_as(
        &self,
        seq: Seq,
        msg: &Message,
        (epoch, first): (u64, bool),
        waiter: Option<super::reply::Waiter>,
        interrupt: &CancellationToken,
    ) -> Result<Finished, DeliveryError> {
        // A provider waiting on this message's answer (sync replies) gets
        // this delivery's first attempt's; dropped unanswered, it sends the
        // fallback (a skip, a failure, a stored run's wait).
        let mut waiter = waiter.or_else(|| self.control.replies.take(seq));
        // Routing, with the rules in force now (a replay uses today's rules).
        let shaped = match self.route(seq, msg) {
            Ok(shaped) => shaped,
            Err(Route::Skip) => {
                self.control.record_skipped();
                return Ok(Finished::Done);
            }
            Err(Route::Fail(reason)) => return self.routing_failed(seq, reason).await,
            Err(Route::Deliver(_)) => return Ok(Finished::Done),
        };
        let msg = &*shaped;
        // Attempt numbers continue across restarts, runs and replays (they
        // key the attempt history); the retry budget counts the current run.
        let latest = if first { None } else { self.latest(seq).await? };
        let mut n = latest.as_ref().map_or(0, |l| l.n);
        let add_failing = |delta| self.add_failing(delta);
        let mut failing: Option<Counted<'_>> = None;
        let mut run: Option<Run> = None;
        // A run stored in this epoch goes on: after its retry time, if its
        // budget still allows another attempt.
        let stored = latest.and_then(|l| Some((l.run.filter(|r| r.epoch == epoch)?, l.attempt)));
        if let Some((stored, last)) = stored {
            waiter = None;
            failing = Some(Counted::new(&add_failing));
            let resumed = Run::resumed(stored, n);
            match resumed.resume(&self.dest.retry) {
                Decision::Retry(wait) => {
                    tracing::debug!(destination = %self.dest.name, seq = seq.0, attempt = n.saturating_add(1), wait_ms = millis(wait), "retries taken up at their stored time");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = interrupt.cancelled() => return Ok(Finished::Interrupted),
                    }
                }
                Decision::Exhausted(why) => {
                    return self
                        .exhausted(seq, n, why, last.error.unwrap_or_default())
                        .await;
                }
            }
            run = Some(resumed);
        }
        loop {
            n = n.saturating_add(1);
            let Some(mut sent) = self
                .send(seq, msg, (n, waiter.is_some()), interrupt)
                .await?
            else {
                return Ok(Finished::Interrupted);
            };
            // Answered before the record is written: the provider is waiting.
            if let (Some(w), Some(answer)) = (waiter.take(), sent.answer.take()) {
                let _ = w.send(answer);
            }
            let Some(error) = sent.record.error.clone() else {
                self.record(seq, n, &sent, None).await?;
                return Ok(Finished::Done);
            };
            if failing.is_none() {
                failing = Some(Counted::new(&add_failing));
            }
            let run = run.get_or_insert_with(|| Run::begin(epoch, n, &sent));
            run.made = run.made.saturating_add(1);
            let decision = retry::next_delay(
                &self.dest.retry,
                run.made,
                run.age(),
                sent.retry_after,
                rand::random::<f64>(),
            );
            run.stored.retry_at_ms = match decision {
                Decision::Retry(wait) => Some(now_ms().saturating_add(millis(wait))),
                Decision::Exhausted(_) => None,
            };
            self.record(seq, n, &sent, Some(&run.stored)).await?;
            match decision {
                Decision::Retry(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = interrupt.cancelled() => return Ok(Finished::Interrupted),
                    }
                }
                Decision::Exhausted(why) => return self.exhausted(seq, n, why, error).await,
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
        store: &Store,
        after: Seq,
        upto: Seq,
        budget: usize,
        max_found: usize,
    ) -> Result<Vec<Scan>, DeliveryError> {
        if after < upto && upto.0 - after.0 <= HOT_SEQS {
            let routes = |source: &SourceName| self.dest.sources.contains(source);
            let hot = store
                .log()
                .next_routed_within(after, upto, HOT_SCAN, HOT_BYTES, routes)?;
            // `Nothing(after)`: the next routed message is larger than that.
            if !matches!(hot, Scan::Nothing(seen) if seen == after) {
                return Ok(vec![hot]);
            }
        }
        let lane = self.clone();
        let scans = store.blocking(move |s| {
            let routes = |source: &SourceName| lane.dest.sources.contains(source);
            let limits = (max_found, READ_AHEAD_BYTES);
            s.log().read_ahead(after, upto, budget, limits, routes)
        });
        Ok(scans.await?)
    }

    /// Ends a bounded replay (`replay --to-seq`) whose end the cursor has
    /// reached: the cursor goes back to where it was before the replay, so
    /// what followed the range and was delivered then is not sent again.
    pub fn end_replay(
        &self,
        store: &Store,
        cursor: Seq,
        end: ReplayEnd,
    ) -> Result<(), DeliveryError> {
        let name = &self.dest.name;
        // Refused if an operator moved the cursor meanwhile (even when it
        // stays put): their replay also replaced `replay_end`.
        let target = end.resume.max(cursor);
        if store.cursors().advance(name, cursor, target)? {
            store.destinations().update(name, |st| {
                if st.replay_end == Some(end) {
                    st.replay_end = None;
                }
            })?;
            tracing::info!(destination = %name, to = end.to.0, cursor = target.0, "bounded replay finished; delivery resumes where it was");
        }
        Ok(())
    }

    /// A message just written (a sync reply's): read on this thread when
    /// small enough to still be in sled's cache (as in [`Lane::read_ahead`]),
    /// else on the blocking pool.
    pub async fn fresh_message(
        &self,
        store: &Store,
        seq: Seq,
    ) -> Result<Option<Message>, DeliveryError> {
        let before = Seq(seq.0.saturating_sub(1));
        let hot = store
            .log()
            .next_routed_within(before, seq, 1, HOT_BYTES, |_| true)?;
        match hot {
            Scan::Found(found, msg) if found == seq => Ok(Some(*msg)),
            _ => self.message(seq).await,
        }
    }

    /// One message (sled: read on the blocking pool).
    pub async fn message(&self, seq: Seq) -> Result<Option<Message>, DeliveryError> {
        Ok(self.backend.message(seq).await?)
    }

    /// One more attempt at a dead letter, out of order: success removes the
    /// dead letter, failure updates it. A single attempt, not a retry run.
    pub async fn redeliver(
        &self,
        seq: Seq,
        interrupt: &CancellationToken,
    ) -> Result<(), DeliveryError> {
        let name = &self.dest.name;
        if self.backend.dead_letter(name, seq).await?.is_none() {
            return Ok(());
        }
        let Some(msg) = self.message(seq).await? else {
            tracing::warn!(destination = %name, seq = seq.0, "redelivery skipped: message no longer stored");
            return Ok(());
        };
        let msg = match self.route(seq, &msg) {
            Ok(shaped) => shaped,
            Err(Route::Fail(last_error)) => {
                let n = self.attempts_so_far(seq).await?.saturating_add(1);
                let dead = DeadLetter {
                    at_ms: now_ms(),
                    attempts: n,
                    last_error,
                };
                self.backend.add_dead_letter(name, seq, &dead).await?;
                return Ok(());
            }
            // Today's rules skip it: nothing is owed to this destination.
            Err(_) => {
                self.backend.remove_dead_letter(name, seq).await?;
                tracing::info!(destination = %name, seq = seq.0, "dead letter dropped: the routing rules skip it now");
                return Ok(());
            }
        };
        let n = self.attempts_so_far(seq).await?.saturating_add(1);
        let Some(sent) = self.send(seq, &msg, (n, false), interrupt).await? else {
            return Ok(());
        };
        self.record(seq, n, &sent, None).await?;
        match sent.record.error {
            None => {
                self.backend.remove_dead_letter(name, seq).await?;
                tracing::info!(destination = %name, seq = seq.0, attempt = n, "dead letter redelivered");
            }
            Some(last_error) => {
                let dead = DeadLetter {
                    at_ms: now_ms(),
                    attempts: n,
                    last_error,
                };
                self.backend.add_dead_letter(name, seq, &dead).await?;
            }
        }
        Ok(())
    }

    /// The latest recorded attempt of `seq`; a store read only for a seq
    /// that may have been attempted before (a retry after a restart, a
    /// replay): one seek, on this thread.
    async fn latest(&self, seq: Seq) -> Result<Option<Latest>, DeliveryError> {
        if seq.0 > self.attempted_upto.load(Ordering::Acquire) {
            return Ok(None);
        }
        Ok(self.backend.latest(&self.dest.name, seq).await?)
    }

    /// How many attempts of `seq` are recorded (the latest one's number).
    async fn attempts_so_far(&self, seq: Seq) -> Result<u32, DeliveryError> {
        Ok(self.latest(seq).await?.map_or(0, |l| l.n))
    }

    /// Takes a rate permit and sends attempt `n` (keeping its answer for a
    /// waiting provider when asked); records nothing (see [`Lane::record`]).
    /// `None` when interrupted before sending or abandoned after the
    /// shutdown grace.
    async fn send(
        &self,
        seq: Seq,
        msg: &Message,
        (n, keep_answer): (u32, bool),
        interrupt: &CancellationToken,
    ) -> Result<Option<Sent>, DeliveryError> {
        if !self.limiter.acquire(interrupt).await {
            return Ok(None);
        }
        let at_ms = now_ms();
        let started = Instant::now();
        let outcome = {
            let add_in_flight = |delta| self.control.add_in_flight(delta);
            let _in_flight = Counted::new(&add_in_flight);
            let send = client::attempt(&self.client, &self.dest, seq, msg, (n, keep_answer));
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
        let (status, error, retry_after, answer) = match result {
            AttemptResult::Delivered { status, answer } => (Some(status), None, None, answer),
            AttemptResult::Failed {
                status,
                retry_after,
                error,
            } => (status, Some(truncate(error)), retry_after, None),
        };
        let record = Attempt {
            at_ms,
            status,
            latency_ms: latency.as_millis() as u64,
            error,
        };
        Ok(Some(Sent {
            record,
            retry_after,
            started,
            answer,
        }))
    }

    /// Records attempt `n` (with the retry run it leaves, if it failed in
    /// one), then reports it.
    async fn record(
        &self,
        seq: Seq,
        n: u32,
        sent: &Sent,
        run: Option<&RetryRun>,
    ) -> Result<(), DeliveryError> {
        let record = &sent.record;
        self.backend
            .record(&self.dest.name, seq, n, record, run)
            .await?;
        self.attempted_upto.fetch_max(seq.0, Ordering::Release);
        let (at_ms, status, latency_ms) = (record.at_ms, record.status, record.latency_ms);
        let last = LastAttempt {
            at_ms,
            seq: seq.0,
            status,
            error: record.error.clone(),
        };
        // Numbers as numbers; an `Option` records nothing when `None`, so a
        // connection error has no `status` field at all.
        match &record.error {
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
                let retry_in_ms = run
                    .and_then(|r| r.retry_at_ms)
                    .map(|at| at.saturating_sub(now_ms()));
                tracing::info!(
                    destination = %self.dest.name,
                    seq = seq.0,
                    status,
                    latency_ms,
                    attempt = n,
                    retry_in_ms,
                    %reason,
                    "delivery attempt failed"
                );
            }
        }
        Ok(())
    }

    /// The message as this destination receives it (its transform applied),
    /// or why it receives nothing (`Skip`, `Fail`; never `Deliver`).
    fn route<'m>(&self, seq: Seq, msg: &'m Message) -> Result<Cow<'m, Message>, Route> {
        // An operator event about this destination (e.g. that it is failing)
        // would only join the queue it is about.
        if crate::events::is_about(&msg.source, &msg.headers, &self.dest.name) {
            return Err(Route::Skip);
        }
        match self.dest.rules.decide(seq, msg) {
            Route::Deliver(None) => Ok(Cow::Borrowed(msg)),
            Route::Deliver(Some(body)) => Ok(Cow::Owned(Message {
                body,
                content_type: Some("application/json".into()),
                ..msg.clone()
            })),
            other => Err(other),
        }
    }

    /// A filter or transform failed: recorded as an attempt that sent
    /// nothing, then straight to `on_exhausted`, since the same program on
    /// the same message fails the same way (fix the config, then redeliver).
    async fn routing_failed(&self, seq: Seq, reason: String) -> Result<Finished, DeliveryError> {
        let n = self.attempts_so_far(seq).await?.saturating_add(1);
        let error = truncate(reason);
        let record = Attempt {
            at_ms: now_ms(),
            status: None,
            latency_ms: 0,
            error: Some(error.clone()),
        };
        self.backend
            .record(&self.dest.name, seq, n, &record, None)
            .await?;
        self.attempted_upto.fetch_max(seq.0, Ordering::Release);
        let last = LastAttempt {
            at_ms: record.at_ms,
            seq: seq.0,
            status: None,
            error: Some(error.clone()),
        };
        self.control.record(last, AttemptOutcome::Failed);
        tracing::info!(destination = %self.dest.name, seq = seq.0, attempt = n, reason = %error, "routing failed");
        self.exhausted(seq, n, "routing failed", error).await
    }

    async fn exhausted(
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
                self.backend.add_dead_letter(name, seq, &dead).await?;
                self.control
                    .record_dead_letter(seq, attempts, &dead.last_error);
                Ok(Finished::Done)
            }
            OnExhausted::Block => {
                tracing::warn!(destination = %name, seq = seq.0, attempts, why, "destination blocked until an operator acts");
                self.backend
                    .update_state(name, |st| {
                        st.blocked_on.get_or_insert(seq);
                    })
                    .await?;
                self.control.record_blocked(seq, &last_error);
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
