//! Sync replies, the delivery side: the providers waiting on one
//! destination's answer, by seq. Ingest registers a waiter while the
//! appender stages the message (before any worker can see it, so no
//! delivery of it can miss the waiter), then asks the worker to start it at
//! once. The lane takes the waiter when it makes the message's attempt and
//! hands it the answer. A waiter dropped unanswered means "use the
//! fallback": a routing skip, an attempt that failed, a paused or stopped
//! destination. In a fleet the relay that delivers may be another one: its
//! answer comes back over NATS ([`SyncReplies::answer`]) and no worker
//! starts anything here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::model::Seq;

/// How long an answer that came before its waiter is kept. A waiter is
/// registered as soon as its publish is acknowledged, well before another
/// relay's attempt can be answered; what waits longer is an answer whose
/// provider left (after its `timeout`), kept for nothing.
const EARLY_KEPT: std::time::Duration = std::time::Duration::from_secs(2);
/// Body bytes kept for waiters not registered yet, at most.
const EARLY_MAX_BYTES: usize = 8 << 20;
/// Answers kept for waiters not registered yet, at most.
const EARLY_MAX: usize = 4096;

/// A destination's 2xx answer to a sync reply's attempt, as the provider gets it.
#[derive(Debug)]
pub struct AppAnswer {
    pub status: http::StatusCode,
    pub content_type: Option<http::HeaderValue>,
    /// Passed on with the body it describes (no relay header asks for it,
    /// but a forwarded `Accept-Encoding` may).
    pub content_encoding: Option<http::HeaderValue>,
    /// At most [`crate::config::MAX_REPLY_BYTES`].
    pub body: Bytes,
}

/// Where the answer for one waiting provider goes.
pub type Waiter = oneshot::Sender<AppAnswer>;

/// One destination's waiting providers and the seqs to start at once.
#[derive(Default)]
pub struct SyncReplies {
    inner: Mutex<Inner>,
    /// Waiters registered: lets every other delivery skip the lock.
    waiting: AtomicUsize,
    /// Wakes the worker when a seq is to be started.
    pub wake: Notify,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<Seq, Waiter>,
    /// Answers that came before their waiter (a fleet: another relay
    /// delivered before the publish ack reached this one); `None`: no answer.
    early: HashMap<Seq, (Option<AppAnswer>, std::time::Instant)>,
    /// Body bytes in `early`.
    early_bytes: usize,
    starts: VecDeque<Seq>,
    /// The worker stopped (reload, shutdown): nothing will answer.
    closed: bool,
}

impl SyncReplies {
    /// Registers the provider waiting on `seq`; a stopped worker drops it
    /// (the fallback at once).
    pub fn register(&self, seq: Seq, waiter: Waiter) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        // Closed: its provider left while the message was being stored.
        if inner.closed || waiter.is_closed() {
            return;
        }
        if let Some((answer, _)) = inner.early.remove(&seq) {
            if let Some(answer) = answer {
                inner.early_bytes = inner.early_bytes.saturating_sub(answer.body.len());
                let _ = waiter.send(answer);
            }
            return;
        }
        if inner.waiters.insert(seq, waiter).is_none() {
            self.waiting.fetch_add(1, Ordering::Release);
        }
    }

    /// The answer to `seq` made elsewhere (a fleet: by the relay that
    /// delivered it), or `None` for none; kept a while if its provider is
    /// not registered yet.
    pub fn answer(&self, seq: Seq, answer: Option<AppAnswer>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(waiter) = inner.waiters.remove(&seq) {
            self.waiting.fetch_sub(1, Ordering::Release);
            if let Some(answer) = answer {
                let _ = waiter.send(answer);
            }
            return;
        }
        if inner.closed {
            return;
        }
        let now = std::time::Instant::now();
        let mut freed = 0;
        inner.early.retain(|_, (a, at)| {
            let keep = now.duration_since(*at) < EARLY_KEPT;
            if !keep {
                freed += a.as_ref().map_or(0, |a| a.body.len());
            }
            keep
        });
        inner.early_bytes = inner.early_bytes.saturating_sub(freed);
        let size = answer.as_ref().map_or(0, |a| a.body.len());
        if inner.early_bytes.saturating_add(size) <= EARLY_MAX_BYTES
            && inner.early.len() < EARLY_MAX
        {
            inner.early_bytes += size;
            if let Some((Some(old), _)) = inner.early.insert(seq, (answer, now)) {
                inner.early_bytes = inner.early_bytes.saturating_sub(old.body.len());
            }
        }
    }

    /// Asks the worker to start `seq` now that it is durable.
    pub fn start(&self, seq: Seq) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.closed {
                return;
            }
            inner.starts.push_back(seq);
        }
        self.wake.notify_one();
    }

    /// The next seq to start at once, for the worker.
    pub fn next_start(&self) -> Option<Seq> {
        self.inner.lock().ok()?.starts.pop_front()
    }

    /// The waiter of `seq`, taken by the lane as it makes the attempt (or
    /// dropped to send the fallback).
    pub fn take(&self, seq: Seq) -> Option<Waiter> {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let waiter = self.inner.lock().ok()?.waiters.remove(&seq);
        if waiter.is_some() {
            self.waiting.fetch_sub(1, Ordering::Release);
        }
        waiter
    }

    /// Drops the waiter of `seq` if its provider no longer waits (answered
    /// with the fallback after the timeout, or gone).
    pub fn forget(&self, seq: Seq) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.waiters.get(&seq).is_some_and(|w| w.is_closed()) {
            inner.waiters.remove(&seq);
            self.waiting.fetch_sub(1, Ordering::Release);
        }
    }

    /// The worker stops: every waiting provider gets the fallback now, and
    /// later ones at once. (The messages are delivered by the next worker.)
    pub fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
            inner.starts.clear();
            inner.early.clear();
            inner.early_bytes = 0;
            let n = inner.waiters.len();
            inner.waiters.clear();
            self.waiting.fetch_sub(n, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_taken_once_and_forgotten_only_when_its_provider_left() {
        let r = SyncReplies::default();
        let (tx, rx) = oneshot::channel();
        r.register(Seq(3), tx);
        r.start(Seq(3));
        assert_eq!(r.next_start(), Some(Seq(3)));
        assert_eq!(r.next_start(), None);
        r.forget(Seq(3));
        assert!(r.take(Seq(4)).is_none());
        let w = r.take(Seq(3)).expect("still waiting");
        assert!(r.take(Seq(3)).is_none());
        drop(rx);
        assert!(w.is_closed());

        let (tx, rx) = oneshot::channel();
        r.register(Seq(5), tx);
        drop(rx);
        r.forget(Seq(5));
        assert!(r.take(Seq(5)).is_none());
        assert_eq!(r.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn closing_answers_every_waiter_with_the_fallback() {
        let r = SyncReplies::default();
        let (tx, mut rx) = oneshot::channel();
        r.register(Seq(1), tx);
        r.close();
        assert!(rx.try_recv().is_err(), "dropped: the fallback");
        let (tx, mut rx) = oneshot::channel();
        r.register(Seq(2), tx);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        r.start(Seq(2));
        assert_eq!(r.next_start(), None);
    }

    fn answer(body: &'static str) -> AppAnswer {
        AppAnswer {
            status: http::StatusCode::OK,
            content_type: None,
            content_encoding: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn an_answer_made_elsewhere_reaches_its_waiter_whichever_comes_first() {
        let r = SyncReplies::default();
        let (tx, mut rx) = oneshot::channel();
        r.register(Seq(1), tx);
        r.answer(Seq(1), Some(answer("late")));
        assert_eq!(rx.try_recv().expect("answered").body, "late");
        // Before its waiter: kept until it comes.
        r.answer(Seq(2), Some(answer("early")));
        let (tx, mut rx) = oneshot::channel();
        r.register(Seq(2), tx);
        assert_eq!(rx.try_recv().expect("answered").body, "early");
        // "No answer" first: the waiter is dropped (the fallback) at once.
        r.answer(Seq(3), None);
        let (tx, mut rx) = oneshot::channel();
        r.register(Seq(3), tx);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(r.waiting.load(Ordering::Acquire), 0);
    }
}
