//! A destination's worker in a fleet (`backend = "nats"`): it pulls from the
//! destination's JetStream consumer, which every relay shares, instead of
//! reading the log from a cursor. The consumer's `max_ack_pending` (1 for
//! strict, `max_in_flight` otherwise) bounds what is in flight across the
//! whole fleet, and JetStream hands a message out again if the relay
//! holding it goes quiet for `ack_wait`. One message's attempts, retries and
//! exhaustion are the shared [`Lane`]'s, recorded in the fleet's bucket.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lane::{Finished, Lane};
use super::reply::AppAnswer;
use super::{DeliveryError, STORE_ERROR_BACKOFF};
use crate::config::DeliveryOrder;
use crate::config::DestinationConfig;
use crate::fleet::{Delivery, Feed, Fleet, Moved, Shape, Stopping};

/// How long one pull waits for a message. Each pull runs to its end (one
/// abandoned would leave a message handed to nobody until `ack_wait`), so
/// this is also how long a pause or a shutdown may wait for it.
const PULL_WAIT: Duration = Duration::from_secs(1);
/// Messages one pull asks for at most.
const PULL_BATCH: usize = 256;
/// How long a message given back after a pause, a hold or a new epoch waits before
/// it is handed out again.
const RELEASE_DELAY: Duration = Duration::from_millis(200);
/// How often this relay shares what its attempts showed (when it made any).
const SHARE_HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How soon a bounded replay's end is tried again while another move runs.
const MOVE_BUSY_RECHECK: Duration = Duration::from_millis(500);
/// Rounds a dead letter's redelivery may fail on the relay's side (not its
/// attempt) before it is left a dead letter.
const REDELIVERY_TRIES: u32 = 3;
/// How often, at most, a relay looks whether a bounded replay's range is done.
const REPLAY_END_LOOK: Duration = Duration::from_millis(250);
/// How often a paused or blocked destination's state is read again anyway.
const STOPPED_RECHECK: Duration = Duration::from_secs(5);

/// How long a stop of `dest` waits for what is in flight: an attempt
/// already sent ends within `timeout`; a retry may start up to a pull's
/// wait after the hold (a worker steps between pulls), and a little more.
pub fn drain(dest: &DestinationConfig) -> Duration {
    dest.timeout + PULL_WAIT + Duration::from_secs(1)
}

/// What `dest`'s consumer is made of: at most one message out fleet-wide
/// for a strict destination, `max_in_flight` otherwise; its sources' messages.
pub fn shape(dest: &DestinationConfig) -> Shape {
    Shape {
        max_in_flight: match dest.ordering {
            DeliveryOrder::Strict => 1,
            DeliveryOrder::Unordered => dest.max_in_flight.max(1),
        },
        sources: dest.sources.clone(),
    }
}

/// Runs one destination's fleet worker until `shutdown`, then releases
/// what it holds (another relay takes it up at once) and returns.
pub async fn run(lane: Arc<Lane>, fleet: Arc<Fleet>, shutdown: CancellationToken, from_now: bool) {
    let name = lane.dest.name.clone();
    let shape = shape(&lane.dest);
    let max_in_flight = shape.max_in_flight;
    let feed = loop {
        match fleet.feed(&name, (&shape, true), from_now).await {
            Ok(feed) => break Arc::new(feed),
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "cannot open the destination's consumer");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    tracing::debug!(destination = %name, max_in_flight, "fleet worker started");
    // Stopped after the deliveries are, so it shares what they recorded last.
    let stop_sharing = CancellationToken::new();
    let sharing = tokio::spawn(share_health(
        fleet.clone(),
        lane.clone(),
        stop_sharing.clone(),
    ));
    let answers = tokio::spawn(pass_answers(fleet.clone(), lane.clone(), shutdown.clone()));
    let mut w = Worker {
        lane,
        fleet,
        feed,
        generation: shutdown.child_token(),
        epoch: None,
        shutdown,
        max_in_flight,
        shape,
        end_looked: None,
        redelivery_failures: std::collections::HashMap::new(),
        from_now,
        tasks: JoinSet::new(),
    };
    while !w.shutdown.is_cancelled() {
        if let Err(e) = w.step().await {
            tracing::error!(destination = %name, error = %e, "delivery step failed");
            tokio::select! {
                _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                _ = w.shutdown.cancelled() => {}
            }
            // The consumer may be gone (a replay's move cut short): open it
            // again, created where the replay said if need be.
            if let Ok(feed) = w.fleet.feed(&name, (&w.shape, false), w.from_now).await {
                w.feed = Arc::new(feed);
            }
        }
    }
    w.generation.cancel();
    while w.tasks.join_next().await.is_some() {}
    stop_sharing.cancel();
    let _ = sharing.await;
    let _ = answers.await;
    tracing::debug!(destination = %name, "fleet worker stopped");
}

/// Folds this relay's view of the destination's health (failing since,
/// last success, last attempt) into the fleet's, at most every
/// [`SHARE_HEALTH_EVERY`] and only after new attempts, until `stop` (and
/// once more then).
async fn share_health(fleet: Arc<Fleet>, lane: Arc<Lane>, stop: CancellationToken) {
    let name = &lane.dest.name;
    let mut shared = 0;
    let mut tick = tokio::time::interval(SHARE_HEALTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let recorded = lane.control.recorded();
        if recorded != shared {
            match fleet.share_health(name, &lane.control.health()).await {
                Ok(()) => shared = recorded,
                Err(e) => {
                    tracing::warn!(destination = %name, error = %e, "cannot share the destination's health")
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Passes the answers other relays (or this one) made for providers
/// waiting on this relay to them, until `shutdown`; then every provider
/// still waiting on the destination gets the fallback.
async fn pass_answers(fleet: Arc<Fleet>, lane: Arc<Lane>, shutdown: CancellationToken) {
    use futures_util::StreamExt;
    let name = &lane.dest.name;
    let replies = &lane.control.replies;
    while !shutdown.is_cancelled() {
        match fleet.answers(name).await {
            Ok(answers) => {
                tokio::pin!(answers);
                loop {
                    tokio::select! {
                        next = answers.next() => match next {
                            Some((seq, answer)) => replies.answer(seq, answer.map(app_answer)),
                            None => break,
                        },
                        _ = shutdown.cancelled() => break,
                    }
                }
                // Ended (the connection is being replaced): again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(destination = %name, error = %e, "cannot hear sync replies");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    replies.close();
}

/// An answer as it crossed the fleet, for the provider.
fn app_answer(a: crate::fleet::Answer) -> AppAnswer {
    let header = |v: Option<String>| v.and_then(|v| http::HeaderValue::try_from(v).ok());
    AppAnswer {
        status: http::StatusCode::from_u16(a.status).unwrap_or(http::StatusCode::OK),
        content_type: header(a.content_type),
        content_encoding: header(a.content_encoding),
        body: a.body,
    }
}

/// A destination's answer, to cross the fleet.
fn fleet_answer(a: AppAnswer) -> crate::fleet::Answer {
    let text = |v: Option<http::HeaderValue>| v.and_then(|v| v.to_str().ok().map(str::to_owned));
    crate::fleet::Answer {
        status: a.status.as_u16(),
        content_type: text(a.content_type),
        content_encoding: text(a.content_encoding),
        body: a.body,
    }
}

struct Worker {
    lane: Arc<Lane>,
    fleet: Arc<Fleet>,
    feed: Arc<Feed>,
    /// Interrupts this relay's deliveries of the destination (a pause, a
    /// block, a hold or a new retry epoch, seen through the fleet's bucket).
    generation: CancellationToken,
    /// The retry epoch the running deliveries started in.
    epoch: Option<u64>,
    shutdown: CancellationToken,
    max_in_flight: usize,
    shape: Shape,
    /// Redeliveries that failed on this relay's side, by seq.
    redelivery_failures: std::collections::HashMap<crate::model::Seq, u32>,
    /// When a bounded replay's end was last looked for.
    end_looked: Option<tokio::time::Instant>,
    /// Whether the consumer, if ever made here, starts at the stream's end.
    from_now: bool,
    tasks: JoinSet<()>,
}

impl Worker {
    /// One unit of progress: a requested redelivery, a pull, or a wait.
    async fn step(&mut self) -> Result<(), DeliveryError> {
        let lane = self.lane.clone();
        while self.tasks.try_join_next().is_some() {}
        // A sync reply's message is not started ahead of the others here:
        // the consumer hands it out at once to whichever relay pulls.
        while lane.control.replies.next_start().is_some() {}
        // A strict destination's redelivery waits for this relay's message
        // in flight, then stops the destination fleet-wide while it runs
        // (as with sled, never two deliveries at once).
        let strict = self.max_in_flight == 1;
        if !strict || self.tasks.is_empty() {
            if let Some(seq) = lane.control.next_redelivery() {
                if strict {
                    return self.redeliver_alone(seq).await;
                }
                return lane.redeliver(seq, &self.shutdown).await;
            }
        }
        let state = lane.backend.state(&lane.dest.name).await?;
        // Held: another relay (or this one) replays or redelivers alone.
        let held = self
            .fleet
            .held(&lane.dest.name)
            .await
            .map_err(crate::store::StoreError::from)?;
        let stopped = state.paused || state.blocked_on.is_some() || held;
        if stopped || self.epoch.is_some_and(|e| e != state.retry_epoch) {
            // Deliveries in progress stop at their next wait and give their
            // message back; the next pull (after a resume) hands it out again.
            self.generation.cancel();
            self.generation = self.shutdown.child_token();
        }
        self.epoch = Some(state.retry_epoch);
        let look = self
            .end_looked
            .is_none_or(|t| t.elapsed() >= REPLAY_END_LOOK);
        if let (Some(end), false, true) = (state.replay_end, stopped, look) {
            // A bounded replay whose end the fleet's cursor reached: the
            // consumer goes back to where delivery was before it (one relay
            // does it; the others find the end gone).
            self.end_looked = Some(tokio::time::Instant::now());
            let reached = self
                .fleet
                .finished_up_to(&lane.dest.name, end.to)
                .await
                .map_err(crate::store::StoreError::from)?;
            if reached {
                // Nothing up to the end is in flight, and what is past it
                // is only ever held back: no drain.
                let drain = Duration::ZERO;
                let moved = self
                    .fleet
                    .move_consumer(
                        &lane.dest.name,
                        // An operator's replay under way: next step.
                        (end.resume.next(), &self.shape, drain, Duration::ZERO),
                        |st| st.replay_end == Some(end) && !st.paused,
                        |st, _| {
                            if st.replay_end == Some(end) {
                                st.replay_end = None;
                            }
                        },
                    )
                    .await
                    .map_err(crate::store::StoreError::from)?;
                match moved {
                    Moved::Done => {
                        tracing::info!(destination = %lane.dest.name, to = end.to.0, cursor = end.resume.0, "bounded replay finished; delivery resumes where it was");
                    }
                    Moved::Refused => {}
                    // Another relay's hold (seen at the next step, or its
                    // relay died and it lapses): look again shortly.
                    Moved::Busy => {
                        tokio::select! {
                            _ = lane.control.changed.notified() => {}
                            _ = tokio::time::sleep(MOVE_BUSY_RECHECK) => {}
                            _ = self.shutdown.cancelled() => {}
                        }
                    }
                }
                return Ok(());
            }
        }
        if stopped {
            // Woken by the bucket's watch; the timer covers a change made
            // while the watch was being set up again.
            tokio::select! {
                _ = lane.control.changed.notified() => {}
                _ = tokio::time::sleep(STOPPED_RECHECK) => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(());
        }
        let room = self.max_in_flight.saturating_sub(self.tasks.len());
        if room == 0 {
            tokio::select! {
                _ = self.tasks.join_next() => {}
                _ = lane.control.changed.notified() => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(());
        }
        // Not abandoned on a wake-up (see `PULL_WAIT`); each message starts
        // as it arrives. One pull asks for many: JetStream's
        // `max_ack_pending` keeps what is out to the destination's limit
        // fleet-wide, and hands this same request the next message as soon
        // as one is acked (no new request per message).
        let store_err = crate::store::StoreError::from;
        let mut pull = self
            .feed
            .pull(room.max(PULL_BATCH), PULL_WAIT)
            .await
            .map_err(store_err)?;
        while let Some(d) = pull.next().await.map_err(store_err)? {
            let task = Task {
                lane: lane.clone(),
                fleet: self.fleet.clone(),
                feed: self.feed.clone(),
                epoch: state.retry_epoch,
                interrupt: self.generation.clone(),
                shutdown: self.shutdown.clone(),
            };
            self.tasks.spawn(task.run(d));
            while self.tasks.try_join_next().is_some() {}
        }
        Ok(())
    }
}

impl Worker {
    /// Redelivers `first` and every other queued dead letter of a strict
    /// destination with nothing else of it in flight anywhere: the fleet's
    /// deliveries of it are held meanwhile (after up to its `timeout` + 1 s
    /// while what is in flight ends), as during a replay's move.
    async fn redeliver_alone(&mut self, first: crate::model::Seq) -> Result<(), DeliveryError> {
        let lane = self.lane.clone();
        let mut seqs = std::collections::VecDeque::from([first]);
        while let Some(seq) = lane.control.next_redelivery() {
            seqs.push_back(seq);
        }
        let name = &lane.dest.name;
        let drain = crate::delivery::fleet_drain(&lane.dest);
        let stopped = self
            .fleet
            .stop(name, (drain, Duration::ZERO), |_| true)
            .await
            .map_err(crate::store::StoreError::from);
        let mut stop = match stopped {
            Ok(Stopping::Stopped(stop)) => stop,
            other => {
                // Another relay's replay or redelivery: after it.
                lane.control.request_redeliveries(seqs);
                tokio::select! {
                    _ = tokio::time::sleep(MOVE_BUSY_RECHECK) => {}
                    _ = self.shutdown.cancelled() => {}
                }
                other?;
                return Ok(());
            }
        };
        let mut result = Ok(());
        while let Some(seq) = seqs.front().copied() {
            if self.shutdown.is_cancelled() {
                break;
            }
            // Each attempt takes up to `timeout`: the hold is renewed for
            // each, and one lost (lapsed, taken over) ends the run here.
            match self.fleet.renew(name, &mut stop).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(destination = %name, "the destination's hold lapsed during redelivery; the rest waits");
                    lane.control.request_redeliveries(seqs);
                    return Ok(());
                }
                Err(e) => {
                    result = Err(crate::store::StoreError::from(e).into());
                    break;
                }
            }
            result = lane.redeliver(seq, &self.shutdown).await;
            if self.shutdown.is_cancelled() {
                break;
            }
            if let Err(e) = &result {
                // One that keeps failing (not its attempt: the relay's own
                // reading or writing of it) must not hold the destination
                // round after round: after a few it stays a dead letter.
                let failures = self.redelivery_failures.entry(seq).or_insert(0);
                *failures += 1;
                if *failures >= REDELIVERY_TRIES {
                    tracing::error!(destination = %name, seq = seq.0, error = %e, "redelivery given up; the message stays a dead letter");
                    self.redelivery_failures.remove(&seq);
                    seqs.pop_front();
                }
                break;
            }
            self.redelivery_failures.remove(&seq);
            seqs.pop_front();
        }
        // What is left (a failure, a shutdown) goes next time.
        lane.control.request_redeliveries(seqs);
        self.fleet.abandon(name, stop).await;
        result
    }
}

/// One message handed to this relay.
struct Task {
    lane: Arc<Lane>,
    fleet: Arc<Fleet>,
    feed: Arc<Feed>,
    epoch: u64,
    interrupt: CancellationToken,
    /// The worker's end (a reload or the process's).
    shutdown: CancellationToken,
}

impl Task {
    async fn run(self, d: Delivery) {
        let name = &self.lane.dest.name;
        let seq = d.seq;
        let outcome = self.deliver(&d).await;
        let settled = match outcome {
            // Past a bounded replay's end: not now. The replay's end moves
            // the consumer past it (it was delivered before the replay).
            Ok(None) => d.release(Some(STORE_ERROR_BACKOFF)).await,
            Ok(Some(Finished::Done)) => d.done().await,
            // Blocked: held by nobody until an operator resumes.
            // At shutdown at once, to another relay; after a pause, a block
            // or a new epoch not straight back into this relay's open pull.
            Ok(Some(Finished::Blocked | Finished::Interrupted)) => {
                let delay = (!self.shutdown.is_cancelled()).then_some(RELEASE_DELAY);
                d.release(delay).await
            }
            Err(e) => {
                tracing::error!(destination = %name, seq = seq.0, error = %e, "delivery failed; the message is handed out again");
                d.release(Some(STORE_ERROR_BACKOFF)).await
            }
        };
        if let Err(e) = settled {
            // JetStream hands it out again after `ack_wait`: at least once.
            tracing::warn!(destination = %name, seq = seq.0, error = %e, "cannot settle the message with JetStream");
        }
    }

    /// Delivers one message, telling JetStream it is in progress while its
    /// attempts and retries last; `None`: not to be delivered yet.
    async fn deliver(&self, d: &Delivery) -> Result<Option<Finished>, DeliveryError> {
        let lane = &self.lane;
        let msg = d.message().map_err(crate::store::StoreError::from)?;
        // A provider waits on this destination's answer at the relay that
        // took the message in (maybe this one): it goes there. Dropped
        // unanswered (not delivered now), it tells that relay at once. (Not
        // for a message older than any provider waits: a replay's.)
        let age = crate::time::now_ms().saturating_sub(msg.received_at_ms);
        let waited = age <= crate::config::MAX_REPLY_TIMEOUT.as_millis() as u64;
        let reply_to = d.reply_to(&self.fleet, &lane.dest.name).filter(|_| waited);
        let waiter = reply_to.map(|to| {
            let (tx, rx) = tokio::sync::oneshot::channel::<AppAnswer>();
            let fleet = self.fleet.clone();
            let seq = d.seq;
            tokio::spawn(async move {
                let answer = rx.await.ok().map(fleet_answer);
                fleet.send_answer(&to, seq, answer.as_ref()).await;
            });
            tx
        });
        // Not checked against this relay's `sources`: the consumer hands
        // out only its sources' messages, and during a rolling config
        // change the fleet's newest list is the one to follow.
        // Pulled just before a pause or a block took effect.
        let state = lane.backend.state(&lane.dest.name).await?;
        if state.paused || state.blocked_on.is_some() || state.retry_epoch != self.epoch {
            return Ok(Some(Finished::Interrupted));
        }
        let held = self.fleet.held(&lane.dest.name).await;
        if held.map_err(crate::store::StoreError::from)? {
            return Ok(Some(Finished::Interrupted));
        }
        if state.replay_end.is_some_and(|end| d.seq > end.to) {
            return Ok(None);
        }
        // A first hand-out has no attempts here to take up; a later one
        // (a relay died, a release) reads them.
        // Cut off from NATS for most of `ack_wait`, this relay is about to
        // lose its hold on the message: its retries stop rather than run
        // beside another relay's.
        let interrupt = self.interrupt.child_token();
        // Epoch 0: no replay or resume ever gave this destination a second
        // run, so a first hand-out has no history to count.
        let first = d.handed_out == 1 && self.epoch == 0;
        let delivery = async {
            match waiter {
                Some(w) => {
                    let how = (self.epoch, first);
                    lane.deliver_answering(d.seq, &msg, how, w, &interrupt)
                        .await
                }
                None if first => {
                    lane.deliver_first(d.seq, &msg, self.epoch, &interrupt)
                        .await
                }
                None => lane.deliver(d.seq, &msg, self.epoch, &interrupt).await,
            }
        };
        tokio::pin!(delivery);
        let every = self.feed.ack_wait / 3;
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                r = &mut delivery => return r.map(Some),
                _ = tick.tick() => {
                    // A progress ack is a publish the client buffers: it
                    // says nothing while disconnected, hence the check.
                    let sent = tokio::time::timeout(every / 2, d.in_progress()).await;
                    match sent {
                        Ok(Ok(())) if self.fleet.connected() => renewed = tokio::time::Instant::now(),
                        _ => {
                            tracing::warn!(destination = %lane.dest.name, seq = d.seq.0, "cannot mark the message in progress");
                            if renewed.elapsed() >= every * 2 {
                                interrupt.cancel();
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Wakes a destination's worker whenever its state changes in the fleet's
/// bucket (a pause, a resume, a replay on any relay), so it re-reads it.
pub async fn wake_on_changes(
    fleet: Arc<Fleet>,
    controls: Vec<(crate::model::DestinationName, Arc<super::Control>)>,
    shutdown: CancellationToken,
) {
    use futures_util::StreamExt;
    while !shutdown.is_cancelled() {
        match fleet.state_changes().await {
            Ok(changes) => {
                tokio::pin!(changes);
                loop {
                    tokio::select! {
                        name = changes.next() => match name {
                            Some(name) => {
                                if let Some((_, c)) = controls.iter().find(|(n, _)| *n == name) {
                                    c.wake();
                                }
                            }
                            None => break,
                        },
                        _ = shutdown.cancelled() => {
                            fleet.state_watch_ended();
                            return;
                        }
                    }
                }
                fleet.state_watch_ended();
                // A change may have gone unseen meanwhile: every worker re-reads.
                for (_, c) in &controls {
                    c.wake();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the fleet's destination state"),
        }
        tokio::select! {
            _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
