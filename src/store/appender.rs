//! The single writer of the log, in two pipelined stages:
//!
//! - the appender batches concurrent appends, dedups and encodes them, and
//!   applies each batch to sled;
//! - the syncer makes everything applied so far durable with one sync (group
//!   commit), then answers every request it covered and publishes the new
//!   durable head to the delivery workers.
//!
//! While one sync runs, the appender collects and applies the next batch, so
//! the disk wait overlaps with request handling instead of serialising it;
//! it applies no further batch until that one's sync starts, so every
//! batch is one sync's worth (see `run`).
//!
//! Owns seq assignment and batching. Dedup decisions and the write itself
//! belong to [`super::dedup`] (its lookups are point reads, made inline; the
//! write and every sync run on the blocking pool). Must not touch any tree
//! directly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, Message};
use super::dedup::{self, BatchIndex, Check};
use super::{Store, StoreError};
use crate::config::Durability;
use crate::model::{MessageId, Seq, SourceName};
use crate::time::now_ms;

/// At most this many requests share one sync; bounds memory and reply latency.
const MAX_BATCH: usize = 512;
/// At most this many encoded bytes share one sync.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// What a stored message adds beyond its body, for the disk budget's
/// estimate (id, source, headers, frame header: a few hundred bytes).
const RECORD_OVERHEAD: usize = 512;
/// How often `durability = "buffered"` syncs.
const BUFFERED_SYNC_EVERY: Duration = Duration::from_millis(100);

/// A verified webhook on its way into the log.
#[derive(Debug)]
pub struct NewMessage {
    pub source: SourceName,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    /// The request's query string, without `?`.
    pub query: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Idempotency key and how long it stays remembered.
    pub dedup: Option<(String, Duration)>,
    /// Told the message's seq once its batch is written, before any reader
    /// can see it (the head moves only once it is durable); not for a
    /// duplicate, nor when the write fails.
    pub on_staged: Option<OnStaged>,
}

/// A provider waiting on `from`'s answer (a sync reply): `hook` is called
/// with the new message's seq once it is stored, before any worker of this
/// relay can see it. (In a fleet another relay may deliver it first; its
/// answer is kept until the hook has run.)
pub struct OnStaged {
    pub from: crate::model::DestinationName,
    pub hook: Box<dyn FnOnce(Seq) + Send>,
}

impl std::fmt::Debug for OnStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStaged")
    }
}

/// What happened to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored (and durable per the configured durability) under this seq.
    Stored { seq: Seq, id: MessageId },
    /// The key was seen inside its window; this is the first message's seq and id.
    Duplicate { seq: Seq, id: MessageId },
}

struct Request {
    msg: NewMessage,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Handle used by ingest to append (the write side of the storage seam):
/// to sled's appender, which stops once every handle is dropped, or to the
/// fleet's stream.
#[derive(Clone)]
pub struct Appender {
    to: To,
}

#[derive(Clone)]
enum To {
    Sled(mpsc::Sender<Request>),
    Fleet(Arc<crate::fleet::Fleet>),
}

impl Appender {
    /// Publishes to a fleet's JetStream stream instead of sled.
    pub fn fleet(fleet: Arc<crate::fleet::Fleet>) -> Appender {
        Appender {
            to: To::Fleet(fleet),
        }
    }

    /// Appends one message and waits until it is durable (or known duplicate).
    pub async fn append(&self, msg: NewMessage) -> Result<AppendOutcome, StoreError> {
        let tx = match &self.to {
            To::Sled(tx) => tx,
            To::Fleet(fleet) => {
                use crate::fleet::{FleetError, Published};
                let mut msg = msg;
                let on_staged = msg.on_staged.take();
                let reply_from = on_staged.as_ref().map(|o| &o.from);
                return match fleet.publish(msg, reply_from).await {
                    Ok(Published::Stored { seq, id }) => {
                        if let Some(staged) = on_staged {
                            (staged.hook)(seq);
                        }
                        Ok(AppendOutcome::Stored { seq, id })
                    }
                    Ok(Published::Duplicate { seq, id }) => {
                        Ok(AppendOutcome::Duplicate { seq, id })
                    }
                    Err(FleetError::Full) => Err(StoreError::OverBudget),
                    Err(e) => Err(e.into()),
                };
            }
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Request { msg, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Starts the appender (and, for buffered durability, its periodic sync).
/// `head` receives the highest durable seq after every batch.
/// Every batch is charged to `guard` before it is written; one that would
/// pass the disk budget is refused (`StoreError::OverBudget`, a 503).
pub fn spawn_appender(
    store: Store,
    durability: Durability,
    head: watch::Sender<Seq>,
    guard: Arc<super::DiskGuard>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Appender, StoreError> {
    let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
    // One batch waits for the sync while another syncs: see `run`.
    let (applied_tx, applied_rx) = mpsc::channel(1);
    let next = store.log().last_seq()?.next();
    if durability == Durability::Buffered {
        tracker.spawn(periodic_sync(store.clone(), shutdown.clone()));
    }
    tracker.spawn(sync_loop(
        store.clone(),
        durability,
        head,
        applied_rx,
        shutdown,
    ));
    tracker.spawn(run(store, rx, applied_tx, next, guard));
    Ok(Appender { to: To::Sled(tx) })
}

async fn periodic_sync(store: Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(BUFFERED_SYNC_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.blocking(Store::sync).await {
            Ok(()) => {}
            // Not the disk's verdict: the next tick tries again.
            Err(e) if e.is_task_failure() => {
                tracing::error!(error = %e, "periodic sync task failed")
            }
            Err(e) => {
                tracing::error!(error = %e, "periodic sync failed; stopping the relay");
                shutdown.cancel();
                return;
            }
        }
    }
}

/// A batch applied to sled, waiting for the sync that makes it durable.
struct Applied {
    last: Option<Seq>,
    replies: Vec<(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        AppendOutcome,
    )>,
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Request>,
    applied: mpsc::Sender<Applied>,
    mut next: Seq,
    guard: Arc<super::DiskGuard>,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        // At most one applied batch waits for its sync: the next batch is
        // collected until the syncer takes that one (when the sync before
        // it ends), so a batch holds what arrives during a whole sync, and
        // one sync covers one batch. Its messages then share frames and
        // pages (fewer, larger values; sled writes a partly filled 4 KiB
        // page again at every sync) instead of being applied in small
        // batches back to back. 1 KiB bodies from 32 connections: 1.9
        // bytes written per body byte instead of 2.5-3.2, same rate;
        // applying only once the previous sync ended (no overlap) wrote 1.7
        // but lost 18 % of the rate with 64 KiB bodies.
        let Ok(slot) = applied.reserve().await else {
            let _ = first.reply.send(Err(StoreError::Closed));
            break;
        };
        pending.push(first);
        let mut bytes = pending[0].msg.body.len();
        while pending.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.msg.body.len();
                    pending.push(r);
                }
                Err(_) => break,
            }
        }
        // What the batch will add to the log, about: its bodies and a
        // record's worth of id, headers and framing each.
        let estimate: u64 = pending
            .iter()
            .map(|r| (r.msg.body.len() + RECORD_OVERHEAD) as u64)
            .sum();
        if !guard.admit(estimate) {
            for r in pending.drain(..) {
                let _ = r.reply.send(Err(StoreError::OverBudget));
            }
            continue;
        }
        next = apply(&store, slot, &mut pending, next).await;
    }
    tracing::debug!("appender stopped: no more writers");
}

/// Syncs whatever has been applied, then answers it; one sync per wake-up.
async fn sync_loop(
    store: Store,
    durability: Durability,
    head: watch::Sender<Seq>,
    mut rx: mpsc::Receiver<Applied>,
    shutdown: CancellationToken,
) {
    let mut groups = Vec::new();
    while let Some(first) = rx.recv().await {
        groups.push(first);
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        let synced = match durability {
            Durability::Fsync => {
                let started = std::time::Instant::now();
                let r = store.blocking(Store::sync).await;
                store
                    .commit_stats()
                    .sync_duration
                    .observe(started.elapsed());
                r
            }
            Durability::Buffered => Ok(()),
        };
        match synced {
            Ok(()) => {
                if let Some(last) = groups.iter().filter_map(|g| g.last).max() {
                    head.send_replace(last);
                }
                for (reply, outcome) in groups.drain(..).flat_map(|g| g.replies) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // Not known durable: every writer hears so and the sender retries.
                // Entries sled still holds may be delivered later, which
                // at-least-once allows.
                // The store is poisoned now: every later append fails the same
                // way, and the relay stops so a restart recovers from disk.
                tracing::error!(error = %e, "sync failed; stopping the relay");
                shutdown.cancel();
                let cause = Arc::new(e);
                for (reply, _) in groups.drain(..).flat_map(|g| g.replies) {
                    let _ = reply.send(Err(StoreError::BatchFailed(cause.clone())));
                }
            }
        }
    }
}

/// Stages and applies one batch, then passes it to the syncer; returns the next free seq.
async fn apply(
    store: &Store,
    applied: mpsc::Permit<'_, Applied>,
    pending: &mut Vec<Request>,
    mut next: Seq,
) -> Seq {
    let now = now_ms();
    let mut records = Vec::with_capacity(pending.len());
    let mut index = BatchIndex::default();
    let mut replies: Vec<(Reply, AppendOutcome)> = Vec::with_capacity(pending.len());
    let mut hooks = Vec::new();

    for mut req in pending.drain(..) {
        let outcome = match stage(store, &mut req.msg, now, &mut next, &mut index) {
            Ok(Staged::New {
                seq,
                id,
                bytes,
                on_staged,
            }) => {
                records.push((seq, bytes));
                hooks.extend(on_staged.map(|hook| (hook, seq)));
                AppendOutcome::Stored { seq, id }
            }
            Ok(Staged::Duplicate { seq, id }) => AppendOutcome::Duplicate { seq, id },
            Err(e) => {
                let _ = req.reply.send(Err(e));
                continue;
            }
        };
        replies.push((req.reply, outcome));
    }

    let count = records.len();
    let last = records.last().map(|(seq, _)| *seq);
    if count > 0 {
        // sled's apply is CPU work of a few hundred µs per batch: off the
        // runtime's threads, which meanwhile serve the next requests.
        let written = store
            .blocking(move |s| dedup::write_batch(s.log(), s.dedup(), &records, &index))
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, batch = count, "append batch failed");
            let cause = Arc::new(e);
            for (reply, _) in replies {
                let _ = reply.send(Err(StoreError::BatchFailed(cause.clone())));
            }
            return next;
        }
    }
    // Written, not yet visible: the head moves after the sync.
    for (staged, seq) in hooks {
        (staged.hook)(seq);
    }
    store.commit_stats().batch_size.observe(count);
    applied.send(Applied { last, replies });
    next
}

enum Staged {
    New {
        seq: Seq,
        id: MessageId,
        bytes: Vec<u8>,
        on_staged: Option<OnStaged>,
    },
    Duplicate {
        seq: Seq,
        id: MessageId,
    },
}

/// Dedups and encodes one request, assigning it a seq if it is new.
fn stage(
    store: &Store,
    msg: &mut NewMessage,
    now: u64,
    next: &mut Seq,
    index: &mut BatchIndex,
) -> Result<Staged, StoreError> {
    let key = msg.dedup.take();
    let new_key = match &key {
        Some((key, window)) => match index.check(store.dedup(), &msg.source, key, now)? {
            Check::Duplicate(seq, id) => return Ok(Staged::Duplicate { seq, id }),
            Check::New(k) => Some((k, *window)),
        },
        None => None,
    };
    let id = MessageId::generate(now);
    let record = Message {
        id: id.clone(),
        source: msg.source.clone(),
        received_at_ms: now,
        event_type: msg.event_type.take(),
        content_type: msg.content_type.take(),
        idempotency_key: key.map(|(k, _)| k),
        query: msg.query.take(),
        headers: std::mem::take(&mut msg.headers),
        body: std::mem::take(&mut msg.body),
    };
    let bytes = codec::encode_message(&record)?;
    let seq = *next;
    *next = seq.next();
    if let Some((k, window)) = new_key {
        let expires_at_ms = now.saturating_add(window.as_millis() as u64);
        index.remember(k, seq, id.clone(), expires_at_ms)?;
    }
    let on_staged = msg.on_staged.take();
    Ok(Staged::New {
        seq,
        id,
        bytes,
        on_staged,
    })
}
