//! `ordering = "unordered"`: up to `max_in_flight` messages delivered at once,
//! each retried on its own. [`Window`] is the cursor bookkeeping (pure);
//! [`run`] is the scheduler that fills the window from the log, joins its
//! tasks and persists the cursor.
//!
//! The persisted cursor is the lowest unfinished seq minus one, so every seq at
//! or below it is finished. Finished seqs above it are known only in memory;
//! at a graceful stop the window is saved beside the cursor and taken back at
//! the next start, so a restart re-sends only unfinished messages. After a
//! crash, or when an operator acts (pause, resume, replay), the window
//! restarts from the cursor and finished messages above it are sent again
//! (at-least-once, same `webhook-id`). At most `max_in_flight` messages are
//! held in memory, plus those a waiting provider asked to start at once
//! (sync replies): they start ahead of the scan, which passes over them.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lane::{Finished, Lane};
use super::{DeliveryError, SCAN_BUDGET, STORE_ERROR_BACKOFF};
use crate::model::Seq;
use crate::store::{Message, ReplayEnd, Scan, UnorderedWindow};

/// Which seqs above the cursor are finished, in flight, or waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Every seq in (cursor, scanned] is finished or in `open`.
    scanned: Seq,
    /// Dispatched (or to be dispatched again) and not finished.
    open: BTreeSet<Seq>,
    /// The part of `open` that waits to be (re)started.
    queued: BTreeSet<Seq>,
    /// Seqs above `scanned` started ahead of the scan (sync replies),
    /// finished or not: the scan passes over them.
    early: BTreeSet<Seq>,
}

impl Window {
    /// Nothing open above `cursor`.
    pub fn new(cursor: Seq) -> Window {
        Window {
            scanned: cursor,
            open: BTreeSet::new(),
            queued: BTreeSet::new(),
            early: BTreeSet::new(),
        }
    }

    /// A window saved by [`Window::snapshot`]: its open seqs wait to be
    /// sent again, and the scan passes over those finished early.
    pub fn resume(saved: &UnorderedWindow) -> Window {
        let (cursor, scanned) = (saved.cursor, saved.scanned.max(saved.cursor));
        let open: BTreeSet<Seq> = saved
            .open
            .iter()
            .copied()
            .filter(|s| *s > cursor && *s <= scanned)
            .collect();
        let early = saved
            .early_done
            .iter()
            .copied()
            .filter(|s| *s > scanned)
            .collect();
        Window {
            scanned,
            queued: open.clone(),
            open,
            early,
        }
    }

    /// Every seq at or below this is finished.
    pub fn cursor(&self) -> Seq {
        match self.open.first() {
            // Above `scanned` only when started early: what lies between is unscanned.
            Some(s) => Seq(s.0 - 1).min(self.scanned),
            None => self.scanned,
        }
    }

    /// The highest seq looked at; scanning goes on after it.
    pub fn scanned(&self) -> Seq {
        self.scanned
    }

    /// Open seqs, running or not; no new one starts while this is at the limit.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Takes the lowest seq waiting to be started again.
    pub fn next_queued(&mut self) -> Option<Seq> {
        self.queued.pop_first()
    }

    /// `seq`, found by scanning past `scanned`, starts unless it was started
    /// early (true if it starts); the seqs skipped on the way were not routed here.
    pub fn start(&mut self, seq: Seq) -> bool {
        debug_assert!(seq > self.scanned);
        self.scanned = self.scanned.max(seq);
        if self.early.remove(&seq) {
            return false;
        }
        self.open.insert(seq);
        true
    }

    /// `seq` starts ahead of the scan (true), unless the scan already passed it.
    pub fn start_early(&mut self, seq: Seq) -> bool {
        if seq <= self.scanned || !self.early.insert(seq) {
            return false;
        }
        self.open.insert(seq);
        true
    }

    /// Nothing up to `upto` was routed here.
    pub fn skipped(&mut self, upto: Seq) {
        self.scanned = self.scanned.max(upto);
        self.early = self.early.split_off(&Seq(upto.0.saturating_add(1)));
    }

    /// `seq` was delivered or dead-lettered.
    pub fn finish(&mut self, seq: Seq) {
        self.open.remove(&seq);
        self.queued.remove(&seq);
    }

    /// What [`Window::resume`] takes back. Seqs started early and still
    /// running are left to the next scan, which delivers them again.
    pub fn snapshot(&self) -> UnorderedWindow {
        UnorderedWindow {
            cursor: self.cursor(),
            scanned: self.scanned,
            open: self.open.range(..=self.scanned).copied().collect(),
            early_done: self.early.difference(&self.open).copied().collect(),
        }
    }

    /// Seqs started early and not finished.
    fn early_running(&self) -> usize {
        self.early.intersection(&self.open).count()
    }
}

type MessageTask = (Seq, Result<Finished, DeliveryError>);

/// Most seqs a window keeps as started early (running or done, until the
/// scan passes them): bounds it, and the saved window, while the scan is
/// held up (a message retrying in a full window) and replies keep coming.
const MAX_EARLY: usize = 4096;

/// The scheduler's state between wake-ups.
struct Scheduler {
    lane: Arc<Lane>,
    store: crate::store::Store,
    head: watch::Receiver<Seq>,
    shutdown: CancellationToken,
    max_in_flight: usize,
    /// `None` until (re)loaded from the store, which happens only with no message task running.
    window: Option<Window>,
    /// The cursor as last written by us.
    persisted: Seq,
    /// Interrupts the retries of this window's tasks (a child of shutdown).
    generation: CancellationToken,
    /// Drain the tasks, then reload the window from the store's cursor.
    reset: bool,
    /// The window saved at the last graceful stop, for the first load; an
    /// operator acting before that makes it stale.
    saved: Option<UnorderedWindow>,
    messages: JoinSet<MessageTask>,
    redeliveries: JoinSet<()>,
}

/// Runs one unordered destination until shutdown, then joins every task.
pub async fn run(
    lane: Arc<Lane>,
    store: crate::store::Store,
    head: watch::Receiver<Seq>,
    shutdown: CancellationToken,
    max_in_flight: usize,
) {
    let saved = match store.cursors().take_window(&lane.dest.name) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::error!(destination = %lane.dest.name, error = %e, "cannot read the saved delivery window");
            None
        }
    };
    let mut s = Scheduler {
        generation: shutdown.child_token(),
        lane,
        store,
        head,
        shutdown,
        max_in_flight: max_in_flight.max(1),
        window: None,
        persisted: Seq(0),
        reset: false,
        saved,
        messages: JoinSet::new(),
        redeliveries: JoinSet::new(),
    };
    let name = s.lane.dest.name.clone();
    tracing::debug!(destination = %name, max_in_flight = s.max_in_flight, "unordered worker started");
    while !s.shutdown.is_cancelled() {
        if let Err(e) = s.cycle().await {
            tracing::error!(destination = %name, error = %e, "delivery step failed");
            s.restart_window();
            tokio::select! {
                _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                _ = s.shutdown.cancelled() => {}
            }
        }
    }
    s.stop().await;
    tracing::debug!(destination = %name, "unordered worker stopped");
}

impl Scheduler {
    /// One round: fill the window, then wait for something to happen
    /// (operator requests arrive with a wake-up).
    async fn cycle(&mut self) -> Result<(), DeliveryError> {
        let state = self.store.destinations().get(&self.lane.dest.name)?;
        let stopped = state.paused || state.blocked_on.is_some();
        if stopped {
            // Nothing new starts; retries in progress stop at their next wait.
            self.generation.cancel();
            self.reset = true;
        }
        if self.messages.is_empty() && (self.reset || self.window.is_none()) && !stopped {
            self.load()?;
        }
        let end = state.replay_end;
        let more = if stopped {
            false
        } else {
            self.fill(end.map(|e| e.to), state.retry_epoch).await?
        };
        if let Some(end) = end.filter(|_| !stopped) {
            if self.replay_done(end)? {
                // The next round loads the window from the cursor it jumped to.
                self.restart_window();
                return Ok(());
            }
        }
        let room = !stopped
            && !self.generation.is_cancelled()
            && self
                .window
                .as_ref()
                .is_some_and(|w| w.len() < self.max_in_flight);

        let control = self.lane.control.clone();
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {}
            _ = control.changed.notified() => {
                if !self.spawn_redeliveries() {
                    // Pause, resume or replay: drain, then restart from the stored cursor.
                    self.restart_window();
                }
            }
            // Before completions: a provider is waiting on this one.
            _ = control.replies.wake.notified() => {
                // During a bounded replay the scan delivers it after the range.
                let held = stopped || state.replay_end.is_some();
                self.start_sync(held, state.retry_epoch);
            }
            Some(done) = self.messages.join_next(), if !self.messages.is_empty() => {
                self.finished(done)?;
            }
            Some(r) = self.redeliveries.join_next(), if !self.redeliveries.is_empty() => {
                if let Err(e) = r {
                    tracing::error!(destination = %self.lane.dest.name, error = %e, "redelivery task failed");
                }
            }
            Ok(()) = self.head.changed(), if room && !more => {}
            _ = tokio::task::yield_now(), if more => {}
        }
        Ok(())
    }

    /// Starts at once the messages waiting providers asked for (sync
    /// replies), ahead of the scan and beyond `max_in_flight`, up to
    /// `max_in_flight` of them running at once; when one cannot start, its
    /// provider gets the fallback now and the scan delivers it later.
    fn start_sync(&mut self, held: bool, epoch: u64) {
        let replies = &self.lane.control.replies;
        while let Some(seq) = replies.next_start() {
            let window = self.window.as_mut().filter(|w| {
                !held
                    && !self.reset
                    && !self.generation.is_cancelled()
                    && w.early_running() < self.max_in_flight
                    && w.early.len() < MAX_EARLY
            });
            let Some(window) = window else {
                drop(replies.take(seq));
                continue;
            };
            // At or below `scanned`: the scan started it, and its delivery takes the waiter.
            if window.start_early(seq) {
                let task = (seq, epoch, &self.generation);
                spawn_fresh(&mut self.messages, (&self.lane, &self.store), task);
            }
        }
    }

    /// Starts the operator's queued redeliveries; true if there were any.
    fn spawn_redeliveries(&mut self) -> bool {
        let mut any = false;
        while let Some(seq) = self.lane.control.next_redelivery() {
            any = true;
            let lane = self.lane.clone();
            let interrupt = self.shutdown.child_token();
            self.redeliveries.spawn(async move {
                if let Err(e) = lane.redeliver(seq, &interrupt).await {
                    tracing::error!(destination = %lane.dest.name, seq = seq.0, error = %e, "redelivery failed");
                }
            });
        }
        any
    }

    /// Interrupts this window's retries; once they are drained the window
    /// starts again from the stored cursor.
    fn restart_window(&mut self) {
        self.generation.cancel();
        self.reset = true;
        self.saved = None;
    }

    /// (Re)builds the window from the stored cursor; at the first load, from
    /// the window saved at the last graceful stop if it matches that cursor.
    fn load(&mut self) -> Result<(), DeliveryError> {
        let cursor = self.store.cursors().get(&self.lane.dest.name)?;
        let window = match self.saved.take() {
            Some(saved) if saved.cursor == cursor => Window::resume(&saved),
            _ => Window::new(cursor),
        };
        self.window = Some(window);
        self.persisted = cursor;
        self.generation = self.shutdown.child_token();
        self.reset = false;
        Ok(())
    }

    /// Whether a bounded replay's range is finished, and if so ends it.
    fn replay_done(&mut self, end: ReplayEnd) -> Result<bool, DeliveryError> {
        let done = !self.reset
            && self.messages.is_empty()
            && self.window.as_ref().is_some_and(|w| w.cursor() >= end.to);
        if done {
            self.persist()?;
            self.lane.end_replay(&self.store, self.persisted, end)?;
        }
        Ok(done)
    }

    /// Starts messages until the window is full or the log is exhausted (up
    /// to `limit`, a bounded replay's end, if set); true if the scan budget
    /// ran out with more of the log to look at. `epoch`: the destination's
    /// retry epoch, as just read (an operator's change of it wakes us, and
    /// the window restarts).
    async fn fill(&mut self, limit: Option<Seq>, epoch: u64) -> Result<bool, DeliveryError> {
        if self.reset || self.generation.is_cancelled() {
            return Ok(false);
        }
        let Some(window) = self.window.as_mut() else {
            return Ok(false);
        };
        let lane = &self.lane;
        // Seqs saved open at the last stop go first (running = open - queued).
        while window.len() - window.queued.len() < self.max_in_flight {
            let Some(seq) = window.next_queued() else {
                break;
            };
            match lane.message(seq).await? {
                Some(msg) => {
                    let task = (seq, epoch, &self.generation);
                    spawn_message(&mut self.messages, lane, task, msg)
                }
                // Gone from the log (retention): nothing left to deliver.
                None => window.finish(seq),
            }
        }
        let head = *self.head.borrow_and_update();
        let head = limit.map_or(head, |l| head.min(l));
        let mut more = false;
        'fill: while window.len() < self.max_in_flight && window.scanned() < head {
            let room = self.max_in_flight - window.len();
            let scans = lane.read_ahead(&self.store, window.scanned(), head, SCAN_BUDGET, room);
            for scan in scans.await? {
                match scan {
                    Scan::Found(seq, msg) => {
                        if window.start(seq) {
                            let task = (seq, epoch, &self.generation);
                            spawn_message(&mut self.messages, lane, task, *msg);
                        }
                    }
                    Scan::Nothing(upto) => {
                        window.skipped(upto);
                        more = upto < head;
                        break 'fill;
                    }
                }
            }
        }
        self.persist()?;
        Ok(more)
    }

    fn finished(
        &mut self,
        done: Result<MessageTask, tokio::task::JoinError>,
    ) -> Result<(), DeliveryError> {
        let name = &self.lane.dest.name;
        match done {
            Ok((seq, Ok(Finished::Done))) => {
                if let Some(w) = self.window.as_mut() {
                    w.finish(seq);
                }
                self.persist()?;
            }
            // The lane persisted the block; the others stop at their next wait.
            Ok((_, Ok(Finished::Blocked))) => self.restart_window(),
            Ok((_, Ok(Finished::Interrupted))) => {}
            Ok((seq, Err(e))) => {
                tracing::error!(destination = %name, seq = seq.0, error = %e, "delivery failed in storage");
                self.restart_window();
            }
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "delivery task failed");
                self.restart_window();
            }
        }
        Ok(())
    }

    /// Moves the stored cursor up to the window's, unless someone else (an
    /// operator's replay) moved it since we last wrote it.
    fn persist(&mut self) -> Result<(), DeliveryError> {
        let Some(cursor) = self.window.as_ref().map(Window::cursor) else {
            return Ok(());
        };
        if cursor <= self.persisted || self.reset {
            return Ok(());
        }
        let name = &self.lane.dest.name;
        if self.store.cursors().advance(name, self.persisted, cursor)? {
            self.persisted = cursor;
        } else {
            tracing::info!(destination = %name, "cursor moved by an operator; restarting the window");
            self.restart_window();
        }
        Ok(())
    }

    /// Joins every task (in-flight attempts get the shutdown grace), then
    /// writes the final cursor and saves the window for the next start.
    async fn stop(&mut self) {
        let name = self.lane.dest.name.clone();
        self.lane.control.replies.close();
        self.generation.cancel();
        while let Some(done) = self.messages.join_next().await {
            if let Err(e) = self.finished(done) {
                tracing::error!(destination = %name, error = %e, "delivery step failed at shutdown");
            }
        }
        while self.redeliveries.join_next().await.is_some() {}
        let store = &self.store;
        if let Some(saved) = self.saved.take() {
            // Never loaded (stopped all along): keep it for the next start.
            if let Err(e) = store.cursors().save_window(&name, &saved) {
                tracing::error!(destination = %name, error = %e, "cannot save the delivery window");
            }
            return;
        }
        if self.reset {
            return;
        }
        let Some(window) = &self.window else { return };
        let saved = window.snapshot();
        if saved.cursor != self.persisted {
            return;
        }
        if let Err(e) = store.cursors().save_window(&name, &saved) {
            tracing::error!(destination = %name, error = %e, "cannot save the delivery window");
        }
    }
}

/// Reads `seq`, just written, and delivers it in a task (the scheduler
/// never waits for the read): `(seq, retry epoch, interrupt)`.
fn spawn_fresh(
    tasks: &mut JoinSet<MessageTask>,
    (lane, store): (&Arc<Lane>, &crate::store::Store),
    (seq, epoch, interrupt): (Seq, u64, &CancellationToken),
) {
    let lane = lane.clone();
    let store = store.clone();
    let interrupt = interrupt.clone();
    tasks.spawn(async move {
        let msg = match lane.fresh_message(&store, seq).await {
            Ok(Some(msg)) => msg,
            // Gone from the log (retention): nothing left to deliver.
            Ok(None) => {
                drop(lane.control.replies.take(seq));
                return (seq, Ok(Finished::Done));
            }
            Err(e) => {
                drop(lane.control.replies.take(seq));
                return (seq, Err(e));
            }
        };
        let r = lane.deliver(seq, &msg, epoch, &interrupt).await;
        (seq, r)
    });
}

/// Delivers `seq` in a task: `(seq, retry epoch, interrupt)`.
fn spawn_message(
    tasks: &mut JoinSet<MessageTask>,
    lane: &Arc<Lane>,
    (seq, epoch, interrupt): (Seq, u64, &CancellationToken),
    msg: Message,
) {
    let lane = lane.clone();
    let interrupt = interrupt.clone();
    tasks.spawn(async move {
        let r = lane.deliver(seq, &msg, epoch, &interrupt).await;
        (seq, r)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved_window(
        cursor: u64,
        scanned: u64,
        open: &[u64],
        early_done: &[u64],
    ) -> UnorderedWindow {
        let seqs = |v: &[u64]| v.iter().copied().map(Seq).collect();
        UnorderedWindow {
            cursor: Seq(cursor),
            scanned: Seq(scanned),
            open: seqs(open),
            early_done: seqs(early_done),
        }
    }

    #[test]
    fn cursor_is_lowest_unfinished_minus_one() {
        let mut w = Window::new(Seq(10));
        assert_eq!(w.cursor(), Seq(10));
        w.start(Seq(11));
        w.start(Seq(13));
        w.start(Seq(14));
        assert_eq!((w.cursor(), w.len()), (Seq(10), 3));
        w.finish(Seq(13));
        assert_eq!(w.cursor(), Seq(10), "13 done but 11 is not");
        w.finish(Seq(11));
        assert_eq!(w.cursor(), Seq(13), "12 was not routed here, 13 is done");
        w.finish(Seq(14));
        assert_eq!(w.cursor(), Seq(14));
        w.skipped(Seq(20));
        assert_eq!((w.cursor(), w.scanned()), (Seq(20), Seq(20)));
        assert!(w.is_empty());
    }

    #[test]
    fn finishing_out_of_order_never_moves_the_cursor_past_an_open_seq() {
        let mut w = Window::new(Seq(0));
        for s in 1..=8 {
            w.start(Seq(s));
        }
        for s in (2..=8).rev() {
            w.finish(Seq(s));
            assert_eq!(w.cursor(), Seq(0));
        }
        w.finish(Seq(1));
        assert_eq!(w.cursor(), Seq(8));
    }

    #[test]
    fn snapshot_resumes_with_open_seqs_queued() {
        let mut w = Window::new(Seq(4));
        for s in [5, 7, 9] {
            w.start(Seq(s));
        }
        w.finish(Seq(7));
        let saved = w.snapshot();
        assert_eq!(saved, saved_window(4, 9, &[5, 9], &[]));
        let mut r = Window::resume(&saved);
        assert_eq!(r.cursor(), Seq(4));
        assert_eq!(r.next_queued(), Some(Seq(5)));
        assert_eq!(r.next_queued(), Some(Seq(9)));
        assert_eq!(r.next_queued(), None);
        assert_eq!(r.len(), 2, "still open while running");
        r.finish(Seq(5));
        r.finish(Seq(9));
        assert_eq!(r.cursor(), Seq(9), "7 is not sent again");
    }

    #[test]
    fn the_saved_window_round_trips_once_and_the_cursor_moves_only_from_where_we_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let d: crate::model::DestinationName = "d".parse().unwrap();
        assert_eq!(store.cursors().take_window(&d).unwrap(), None);
        let saved = saved_window(4, 9, &[5, 9], &[12]);
        store.cursors().save_window(&d, &saved).unwrap();
        assert_eq!(store.cursors().take_window(&d).unwrap(), Some(saved));
        assert_eq!(store.cursors().take_window(&d).unwrap(), None, "taken once");

        assert!(store.cursors().advance(&d, Seq(0), Seq(3)).unwrap());
        assert!(
            !store.cursors().advance(&d, Seq(0), Seq(5)).unwrap(),
            "moved since"
        );
        store.cursors().set(&d, Seq(1)).unwrap(); // an operator's replay
        assert!(!store.cursors().advance(&d, Seq(3), Seq(8)).unwrap());
        assert_eq!(store.cursors().get(&d).unwrap(), Seq(1));
        assert!(store.cursors().advance(&d, Seq(1), Seq(2)).unwrap());
        assert_eq!(store.cursors().get(&d).unwrap(), Seq(2));
    }

    #[test]
    fn a_seq_started_early_holds_the_cursor_and_the_scan_passes_over_it() {
        let mut w = Window::new(Seq(10));
        assert!(w.start_early(Seq(14)));
        assert!(!w.start_early(Seq(14)), "once");
        assert!(!w.start_early(Seq(9)), "the scan passed it");
        assert_eq!(w.cursor(), Seq(10), "11..13 are not scanned yet");
        w.finish(Seq(14));
        assert_eq!(w.cursor(), Seq(10));
        assert!(w.start(Seq(12)));
        assert!(!w.start(Seq(14)), "already delivered: not started again");
        w.finish(Seq(12));
        assert_eq!(w.cursor(), Seq(14));
        // One still running when the scan passes it keeps the cursor below it.
        assert!(w.start_early(Seq(20)));
        w.skipped(Seq(19));
        assert!(!w.start(Seq(20)));
        assert_eq!(w.cursor(), Seq(19));
        assert_eq!(w.snapshot(), saved_window(19, 20, &[20], &[]));
        w.finish(Seq(20));
        assert_eq!(w.cursor(), Seq(20));
        // Saved: those finished early, so that the next scan passes over
        // them; not those still running, which it delivers again.
        assert!(w.start_early(Seq(30)));
        assert!(w.start_early(Seq(32)));
        w.finish(Seq(32));
        let saved = w.snapshot();
        assert_eq!(saved, saved_window(20, 20, &[], &[32]));
        let mut r = Window::resume(&saved);
        assert!(r.start(Seq(30)), "was running: delivered again");
        assert!(!r.start(Seq(32)), "was finished: not again");
        r.finish(Seq(30));
        assert_eq!(r.cursor(), Seq(32));
    }

    #[test]
    fn resume_ignores_seqs_outside_the_window() {
        let w = Window::resume(&saved_window(10, 12, &[3, 11, 40], &[12, 15]));
        assert_eq!(w.snapshot(), saved_window(10, 12, &[11], &[15]));
        let w = Window::resume(&saved_window(10, 2, &[], &[]));
        assert_eq!(w.cursor(), Seq(10));
    }
}
