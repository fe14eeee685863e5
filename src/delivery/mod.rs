//! Delivery: one worker task per destination reads the log from that
//! destination's cursor and sends each routed message, retrying per policy,
//! recording every attempt, and moving the cursor only past finished messages
//! (delivered or dead-lettered). Owns cursors' advancement; must not write the log.
//!
//! - this file: spawning, and the strict worker (one message at a time, in seq order);
//! - [`unordered`]: the `max_in_flight` scheduler and its cursor bookkeeping;
//! - `lane`: one message's attempts, retries and exhaustion, shared by both;
//! - [`retry`]: retry timing (pure); [`limit`]: the rate limiter;
//! - [`client`]: HTTP/TLS clients and one attempt; [`request`]: the request and its signature;
//! - [`status`]: the live view shared with the admin API;
//! - [`reply`]: providers waiting on a destination's answer (sync replies).

pub mod client;
mod fleet;
mod lane;
pub mod limit;
pub mod reply;
pub mod request;
pub mod retry;
pub mod status;
pub mod unordered;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::config::{DeliveryOrder, DestinationConfig};
use crate::model::{DestinationName, Seq};
use crate::store::{Message, Scan, StoreError};
pub use client::{Clients, TlsSetupError};
pub use fleet::{drain as fleet_drain, shape as fleet_shape};
use lane::{Finished, Lane};

/// How long an in-flight attempt may run on after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Messages examined per store scan before the worker yields.
const SCAN_BUDGET: usize = 1024;
/// Most messages a strict worker reads ahead in one trip to the blocking
/// pool (about 1 MiB of bodies at most): enough that a trip's scheduling
/// delay under a saturated ingest is shared by many deliveries.
const READ_AHEAD: usize = 256;
/// Wait before retrying after a storage error, so a broken disk is not spun on.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Delivery failures that stop a worker's current step.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use status::Control;

/// Starts one worker per destination; returns their control handles by name.
/// `shutdown` stops the workers (a reload or the process's end); only the
/// process's end (`exit`) cuts an attempt in flight short, after
/// [`SHUTDOWN_GRACE`]: at a reload it finishes (within its `timeout`) and is
/// recorded, so it is never sent again beside itself. In a fleet, `added`
/// (destinations new at a reload) start at the stream's end, and one task
/// wakes the workers whose state another relay changed.
#[allow(clippy::too_many_arguments)]
pub fn spawn_workers(
    destinations: &[DestinationConfig],
    clients: &Clients,
    backend: &Backend,
    head: &watch::Receiver<Seq>,
    events: &crate::events::Events,
    tracker: &TaskTracker,
    (shutdown, exit): (&CancellationToken, &CancellationToken),
    added: &[DestinationName],
) -> Vec<(DestinationName, Arc<Control>)> {
    let controls: Vec<_> = destinations
        .iter()
        .map(|dest| {
            let control = Arc::new(Control::new(dest.name.clone(), events.clone()));
            let lane = Arc::new(Lane::new(
                dest.clone(),
                backend.clone(),
                control.clone(),
                clients.for_destination(dest),
                exit.clone(),
            ));
            match (backend, dest.ordering) {
                (Backend::Sled(store), DeliveryOrder::Strict) => {
                    let worker = Strict {
                        lane,
                        store: store.clone(),
                        head: head.clone(),
                        shutdown: shutdown.clone(),
                        ahead: VecDeque::new(),
                        ahead_from: Seq(0),
                    };
                    tracker.spawn(worker.run());
                }
                (Backend::Sled(store), DeliveryOrder::Unordered) => {
                    tracker.spawn(unordered::run(
                        lane,
                        store.clone(),
                        head.clone(),
                        shutdown.clone(),
                        dest.max_in_flight,
                    ));
                }
                (Backend::Fleet(fleet), _) => {
                    let from_now = added.contains(&dest.name);
                    tracker.spawn(fleet::run(lane, fleet.clone(), shutdown.clone(), from_now));
                }
            }
            (dest.name.clone(), control)
        })
        .collect();
    if let Backend::Fleet(f) = backend {
        tracker.spawn(fleet::wake_on_changes(
            f.clone(),
            controls.clone(),
            shutdown.clone(),
        ));
    }
    controls
}

/// `ordering = "strict"`: one message in flight, the next only after it finished.
struct Strict {
    lane: Arc<Lane>,
    store: crate::store::Store,
    head: watch::Receiver<Seq>,
    shutdown: CancellationToken,
    /// Routed messages read ahead, in seq order: the next ones after
    /// `ahead_from`, valid while the stored cursor is still there (an
    /// operator's replay moves it, and they are dropped).
    ahead: VecDeque<(Seq, Box<Message>)>,
    ahead_from: Seq,
}

impl Strict {
    async fn run(mut self) {
        let name = self.lane.dest.name.clone();
        tracing::debug!(destination = %name, "worker started");
        while !self.shutdown.is_cancelled() {
            if let Err(e) = self.step().await {
                tracing::error!(destination = %name, error = %e, "delivery step failed");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
        }
        tracing::debug!(destination = %name, "worker stopped");
    }

    /// One unit of progress: a requested redelivery, the next message, or a wait.
    async fn step(&mut self) -> Result<(), DeliveryError> {
        let lane = self.lane.clone();
        let name = &lane.dest.name;
        if let Some(seq) = lane.control.next_redelivery() {
            return lane.redeliver(seq, &self.shutdown).await;
        }
        let state = self.store.destinations().get(name)?;
        if state.paused || state.blocked_on.is_some() {
            // A pause can last for days: hold no bodies meanwhile.
            self.ahead.clear();
            self.wait_for_operator().await;
            return Ok(());
        }
        let cursor = self.store.cursors().get(name)?;
        let head = *self.head.borrow_and_update();
        // A bounded replay reads no further than its end, then ends.
        let limit = match state.replay_end {
            Some(end) if cursor >= end.to => return lane.end_replay(&self.store, cursor, end),
            Some(end) => head.min(end.to),
            None => head,
        };
        if self.ahead_from != cursor {
            self.ahead.clear();
        }
        // Read before a bounded replay began (its state came after the cursor).
        self.ahead.retain(|(seq, _)| *seq <= limit);
        if self.ahead.is_empty() {
            for scan in lane
                .read_ahead(&self.store, cursor, limit, SCAN_BUDGET, READ_AHEAD)
                .await?
            {
                match scan {
                    Scan::Found(seq, msg) => self.ahead.push_back((seq, msg)),
                    Scan::Nothing(upto) if self.ahead.is_empty() => {
                        return self.nothing_routed(cursor, upto, head).await;
                    }
                    // Found again by the next read once these are delivered.
                    Scan::Nothing(_) => {}
                }
            }
            self.ahead_from = cursor;
        }
        let Some((seq, msg)) = self.ahead.pop_front() else {
            return Ok(());
        };
        let finished = self.deliver(cursor, seq, &msg, state.retry_epoch).await;
        if matches!(finished, Ok(Finished::Done)) {
            // What was read ahead continues from `seq` once the cursor is
            // there. Refused only if an operator moved the cursor meanwhile:
            // theirs wins, and (like a failed write) the next step finds the
            // cursor elsewhere and drops what was read ahead.
            self.ahead_from = seq;
            self.store.cursors().advance(name, cursor, seq)?;
        } else {
            // `seq` is not finished: it must be read again.
            self.ahead.clear();
        }
        finished.map(drop)
    }

    /// Nothing is routed here in (`cursor`, `upto`]: moves the cursor past
    /// it, then waits for the head or lets others run.
    async fn nothing_routed(
        &mut self,
        cursor: Seq,
        upto: Seq,
        head: Seq,
    ) -> Result<(), DeliveryError> {
        let lane = self.lane.clone();
        if upto > cursor {
            self.store
                .cursors()
                .advance(&lane.dest.name, cursor, upto)?;
        }
        if upto >= head {
            self.wait_for_head(head).await;
        } else {
            // The scan budget ran out on unrouted messages: let others run.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Delivers `seq` while listening to the operator: a pause, a block, a
    /// moved cursor or a new retry epoch (a replay, even of this very
    /// message) stops its retries (the message stays unfinished).
    async fn deliver(
        &self,
        cursor: Seq,
        seq: Seq,
        msg: &Message,
        epoch: u64,
    ) -> Result<Finished, DeliveryError> {
        let lane = &self.lane;
        let interrupt = self.shutdown.child_token();
        let delivery = lane.deliver(seq, msg, epoch, &interrupt);
        tokio::pin!(delivery);
        loop {
            tokio::select! {
                r = &mut delivery => return r,
                _ = lane.control.changed.notified(), if !interrupt.is_cancelled() => {
                    let st = self.store.destinations().get(&lane.dest.name)?;
                    let moved = self.store.cursors().get(&lane.dest.name)? != cursor;
                    if st.paused || st.blocked_on.is_some() || moved || st.retry_epoch != epoch {
                        tracing::info!(destination = %lane.dest.name, seq = seq.0, "delivery interrupted by an operator");
                        interrupt.cancel();
                    }
                }
            }
        }
    }

    async fn wait_for_head(&mut self, seen: Seq) {
        if *self.head.borrow() > seen {
            return;
        }
        tokio::select! {
            _ = self.head.changed() => {}
            _ = self.lane.control.changed.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    async fn wait_for_operator(&self) {
        tokio::select! {
            _ = self.lane.control.changed.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}
