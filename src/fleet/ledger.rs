//! The fleet's buckets: each destination's operator state, health and hold
//! (`<stream>-state`), each message's attempt history and each dead letter
//! (`<stream>-history`), one key each, so every relay reads and changes the
//! same state. Read-modify-write goes through the
//! key's revision (compare-and-set), so two relays never lose each other's
//! change.

use std::collections::BTreeMap;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Fleet, FleetError};
use crate::model::{DestinationName, Seq};
use crate::store::codec::{self, AttemptHistory, FleetHealth};
use crate::store::{Attempt, DeadLetter, DestinationState, Latest, RetryRun};

/// Compare-and-set rounds before a write gives up (each loses only to
/// another relay's write of the same key).
const CAS_ROUNDS: usize = 16;
/// The pause after a lost compare-and-set, times the round.
const CAS_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
/// How many of the history bucket's latest writes (every destination's)
/// a destination page's list of recent attempts looks through.
const RECENT_WINDOW: u64 = 2_000;
/// Attempts a message's history keeps (the latest ones; the count goes on).
const KEPT_ATTEMPTS: usize = 64;

type Bucket = async_nats::jetstream::kv::Store;

fn state_key(dest: &DestinationName) -> String {
    format!("state.{dest}")
}

fn health_key(dest: &DestinationName) -> String {
    format!("health.{dest}")
}

fn hold_key(dest: &DestinationName) -> String {
    format!("move.{dest}")
}

/// A hold's value: its deadline (Unix ms, big-endian) `hold` from now.
fn hold_value(hold: std::time::Duration) -> Bytes {
    let deadline = crate::time::now_ms().saturating_add(hold.as_millis() as u64);
    Bytes::copy_from_slice(&deadline.to_be_bytes())
}

/// Whether a hold's deadline passed (an unreadable one counts as passed).
fn lapsed(value: &[u8]) -> bool {
    codec::decode_seq(value).map_or(true, |d| d.0 <= crate::time::now_ms())
}

fn attempts_key(dest: &DestinationName, seq: Seq) -> String {
    format!("att.{dest}.{}", seq.0)
}

fn dead_key(dest: &DestinationName, seq: Seq) -> String {
    format!("dead.{dest}.{}", seq.0)
}

/// One key's value and revision; `None` when absent or deleted.
async fn entry(bucket: &Bucket, key: &str) -> Result<Option<(Bytes, u64)>, FleetError> {
    let entry = bucket
        .entry(key)
        .await
        .map_err(|e| FleetError::js("state read", e))?;
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .map(|e| (e.value, e.revision)))
}

/// One key's decoded value; the default when absent or deleted.
async fn read_or_default<T: Default>(
    bucket: &Bucket,
    key: &str,
    decode: fn(&[u8]) -> Result<T, codec::CodecError>,
) -> Result<T, FleetError> {
    match entry(bucket, key).await? {
        None => Ok(T::default()),
        Some((bytes, _)) => decode(&bytes).map_err(|e| FleetError::js("record decode", e)),
    }
}

/// Changes one key with `f` (given its decoded value, `None` if absent),
/// retrying on a concurrent change; returns what was written and its revision.
async fn modify<T>(
    (bucket, key): (&Bucket, &str),
    decode: fn(&[u8]) -> Result<T, codec::CodecError>,
    encode: fn(&T) -> Result<Vec<u8>, codec::CodecError>,
    mut f: impl FnMut(Option<T>) -> T,
) -> Result<(T, u64), FleetError> {
    for round in 0..CAS_ROUNDS {
        let (old, revision) = match entry(bucket, key).await? {
            Some((bytes, rev)) => (
                Some(decode(&bytes).map_err(|e| FleetError::js("state decode", e))?),
                rev,
            ),
            None => (None, 0),
        };
        let new = f(old);
        let bytes: Bytes = encode(&new)
            .map_err(|e| FleetError::js("state encode", e))?
            .into();
        // Revision 0 means "absent": `update` then acts as a create that
        // fails if another relay created the key meanwhile.
        match bucket.update(key, bytes, revision).await {
            Ok(revision) => return Ok((new, revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // Another relay's write, or a replica behind the leader.
                tokio::time::sleep(CAS_PAUSE * (round as u32 + 1)).await;
            }
            Err(e) => return Err(FleetError::js("state write", e)),
        }
    }
    Err(FleetError::JetStream {
        what: "state write",
        detail: format!("{key} kept changing under {CAS_ROUNDS} tries"),
    })
}

/// Appends attempt `n` (with the run it leaves) to a message's history.
async fn append_attempt(
    records: &Bucket,
    key: &str,
    n: u32,
    attempt: &Attempt,
    run: Option<RetryRun>,
) -> Result<(), FleetError> {
    modify(
        (records, key),
        codec::decode_history,
        codec::encode_history,
        |old| {
            let mut h = old.unwrap_or_default();
            // Attempt n is entry n - 1 - earlier (a record lost to a crash
            // leaves a copy in its place); a number already there (a first
            // attempt whose history exists) adds to the history.
            let at = (n.saturating_sub(1).saturating_sub(h.earlier)) as usize;
            if at >= h.attempts.len() {
                h.attempts.resize(at, attempt.clone());
            }
            h.attempts.push(attempt.clone());
            // A value stays small whatever the retries: the oldest go.
            let over = h.attempts.len().saturating_sub(KEPT_ATTEMPTS);
            h.attempts.drain(..over);
            h.earlier = h.earlier.saturating_add(over as u32);
            h.run = run;
            h
        },
    )
    .await
    .map(drop)
}

impl Fleet {
    /// A destination's operator state (the default until first changed):
    /// this relay's copy while its watch of the bucket runs, which every
    /// relay's change reaches within milliseconds; else read from the bucket.
    pub async fn state(&self, dest: &DestinationName) -> Result<DestinationState, FleetError> {
        // Cut off, the copy may miss a change: the bucket answers (or fails).
        if self.connected() {
            if let Some(st) = self.states.get(dest) {
                return Ok(st);
            }
        }
        let (st, revision) = match entry(&self.bucket, &state_key(dest)).await? {
            None => (DestinationState::default(), 0),
            Some((bytes, revision)) => (
                codec::decode_state(&bytes).map_err(|e| FleetError::js("state decode", e))?,
                revision,
            ),
        };
        self.states.note(dest, revision, &st);
        Ok(st)
    }

    /// Changes a destination's state; returns the new one.
    pub async fn update_state(
        &self,
        dest: &DestinationName,
        mut f: impl FnMut(&mut DestinationState),
    ) -> Result<DestinationState, FleetError> {
        let (st, revision) = modify(
            (&self.bucket, &state_key(dest)),
            codec::decode_state,
            codec::encode_state,
            |old| {
                let mut st = old.unwrap_or_default();
                f(&mut st);
                st
            },
        )
        .await?;
        self.states.note(dest, revision, &st);
        Ok(st)
    }

    /// The destination's health as the fleet saw it (the default until a
    /// relay shared an attempt).
    pub async fn health(&self, dest: &DestinationName) -> Result<FleetHealth, FleetError> {
        read_or_default(&self.bucket, &health_key(dest), codec::decode_health).await
    }

    /// Folds this relay's view of the destination's health into the fleet's.
    /// (A key of its own, outside the `state.*` watch: sharing health wakes
    /// no worker.)
    pub async fn share_health(
        &self,
        dest: &DestinationName,
        local: &FleetHealth,
    ) -> Result<(), FleetError> {
        let key = health_key(dest);
        modify(
            (&self.bucket, &key),
            codec::decode_health,
            codec::encode_health,
            |old| {
                let mut h = old.unwrap_or_default();
                h.merge(local);
                h
            },
        )
        .await
        .map(drop)
    }

    /// Marks `destination.failing` as sent (`failing`) or `recovered` as
    /// sent; whether this call changed it, so that of the relays that see
    /// the same change, one sends the event.
    pub async fn flip_reported(
        &self,
        dest: &DestinationName,
        failing: bool,
    ) -> Result<bool, FleetError> {
        let mut flipped = false;
        modify(
            (&self.bucket, &health_key(dest)),
            codec::decode_health,
            codec::encode_health,
            |old| {
                let mut h = old.unwrap_or_default();
                flipped = h.reported_failing != failing;
                h.reported_failing = failing;
                h
            },
        )
        .await?;
        Ok(flipped)
    }

    /// Takes `move.<dest>` (the destination's hold) for `hold` (its value:
    /// the deadline, Unix ms), waiting up to `queue` for another holder's to
    /// go or lapse; its revision, or `None` if still held.
    pub(super) async fn take_hold(
        &self,
        dest: &DestinationName,
        hold: std::time::Duration,
        queue: std::time::Duration,
    ) -> Result<Option<u64>, FleetError> {
        let key = hold_key(dest);
        let until = tokio::time::Instant::now() + queue;
        loop {
            let value = hold_value(hold);
            match self.bucket.create(&key, value.clone()).await {
                Ok(revision) => return Ok(Some(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(FleetError::js("hold", e)),
            }
            if let Some((held, revision)) = entry(&self.bucket, &key).await? {
                if lapsed(&held) {
                    // Its relay died while holding: taken over (unless
                    // another relay took it over first).
                    match self.bucket.update(&key, value, revision).await {
                        Ok(revision) => {
                            tracing::warn!(destination = %dest, "a hold left by another relay (a replay or redelivery it did not finish) is taken over");
                            return Ok(Some(revision));
                        }
                        Err(e) => {
                            tracing::debug!(destination = %dest, error = %e, "hold taken over by another relay first");
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(super::feed::MOVE_POLL).await;
        }
    }

    /// Extends a hold taken with [`Fleet::take_hold`] by `hold` from now;
    /// false if it was lost (it lapsed and another relay took it over).
    pub(super) async fn renew_hold(
        &self,
        dest: &DestinationName,
        revision: &mut u64,
        hold: std::time::Duration,
    ) -> Result<bool, FleetError> {
        match self
            .bucket
            .update(hold_key(dest), hold_value(hold), *revision)
            .await
        {
            Ok(r) => {
                *revision = r;
                Ok(true)
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(FleetError::js("hold renewal", e)),
        }
    }

    /// Lets the destination go (unless the hold was taken over), trying a
    /// few times: a hold left behind stops the destination's deliveries on
    /// every relay until its deadline.
    pub(super) async fn drop_hold(&self, dest: &DestinationName, revision: u64) {
        for round in 1..=3u32 {
            let dropped = self
                .bucket
                .delete_expect_revision(hold_key(dest), Some(revision))
                .await;
            match dropped {
                Ok(()) => return,
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::kv::DeleteErrorKind::WrongLastRevision =>
                {
                    // Taken over after it lapsed: not ours to drop.
                    return;
                }
                Err(e) => {
                    tracing::warn!(destination = %dest, error = %e, "cannot drop the destination's hold");
                    tokio::time::sleep(std::time::Duration::from_millis(500) * round).await;
                }
            }
        }
    }

    /// Whether a relay holds `dest` (its workers deliver nothing meanwhile):
    /// this relay's copy while the watch runs, else the bucket.
    pub async fn held(&self, dest: &DestinationName) -> Result<bool, FleetError> {
        if self.connected() {
            if let Some(until) = self.states.hold(dest) {
                return Ok(until.is_some_and(|t| t > crate::time::now_ms()));
            }
        }
        Ok(entry(&self.bucket, &hold_key(dest))
            .await?
            .is_some_and(|(v, _)| !lapsed(&v)))
    }

    /// Where the destination's consumer starts if it has to be created
    /// again: the start of the last replay, if there was one.
    pub(super) async fn replay_start(
        &self,
        dest: &DestinationName,
    ) -> Result<Option<Seq>, FleetError> {
        let Some((bytes, _)) = entry(&self.bucket, &format!("start.{dest}")).await? else {
            return Ok(None);
        };
        codec::decode_seq(&bytes)
            .map(Some)
            .map_err(|e| FleetError::js("replay start decode", e))
    }

    /// Records where a replay moves the destination's consumer, before it does.
    pub(super) async fn set_replay_start(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<(), FleetError> {
        let bytes = Bytes::copy_from_slice(&seq.0.to_be_bytes());
        self.bucket
            .put(format!("start.{dest}"), bytes)
            .await
            .map_err(|e| FleetError::js("replay start write", e))
            .map(drop)
    }

    /// Every attempt of `seq` at `dest`, and the run the latest one left.
    pub async fn history(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<AttemptHistory, FleetError> {
        read_or_default(
            &self.records,
            &attempts_key(dest, seq),
            codec::decode_history,
        )
        .await
    }

    /// The latest attempt of `seq` at `dest`, with its number and run.
    pub async fn latest(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Option<Latest>, FleetError> {
        let h = self.history(dest, seq).await?;
        let n = h.earlier.saturating_add(h.attempts.len() as u32);
        Ok(h.attempts.last().map(|a| Latest {
            n,
            attempt: a.clone(),
            run: h.run,
        }))
    }

    /// Appends attempt `n` of `seq` (with the run it leaves, if it failed in one).
    pub async fn record(
        &self,
        dest: &DestinationName,
        seq: Seq,
        n: u32,
        attempt: &Attempt,
        run: Option<&RetryRun>,
    ) -> Result<(), FleetError> {
        let key = attempts_key(dest, seq);
        let run = run.copied();
        if n != 1 {
            return append_attempt(&self.records, &key, n, attempt, run).await;
        }
        // A first attempt: one write, no read (a history already there, as
        // after a replay, takes it as one more).
        let first = AttemptHistory {
            attempts: vec![attempt.clone()],
            run,
            earlier: 0,
        };
        let bytes: Bytes = codec::encode_history(&first)
            .map_err(|e| FleetError::js("encode", e))?
            .into();
        let records = self.records.clone();
        let attempt = attempt.clone();
        let write = async move {
            match records.create(&key, bytes).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    append_attempt(&records, &key, n, &attempt, run).await
                }
                Err(e) => Err(FleetError::js("attempt write", e)),
            }
        };
        if first.attempts[0].error.is_some() {
            return write.await;
        }
        // One that succeeded, the common case, is written beside the ack
        // rather than before it: nothing waits on it, and a crash before it
        // lands loses only a line of history.
        tokio::spawn(async move {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "cannot record a delivery attempt");
            }
        });
        Ok(())
    }

    pub async fn dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Option<DeadLetter>, FleetError> {
        entry(&self.records, &dead_key(dest, seq))
            .await?
            .map(|(bytes, _)| {
                codec::decode_dead_letter(&bytes)
                    .map_err(|e| FleetError::js("dead letter decode", e))
            })
            .transpose()
    }

    pub async fn add_dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
        dead: &DeadLetter,
    ) -> Result<(), FleetError> {
        let bytes = codec::encode_dead_letter(dead).map_err(|e| FleetError::js("encode", e))?;
        self.records
            .put(dead_key(dest, seq), bytes.into())
            .await
            .map_err(|e| FleetError::js("dead letter write", e))?;
        Ok(())
    }

    pub async fn remove_dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<(), FleetError> {
        self.records
            .purge(dead_key(dest, seq))
            .await
            .map_err(|e| FleetError::js("dead letter removal", e))
    }

    /// Every dead letter of `dest`, oldest seq first: the latest value of
    /// each of its keys, read through an ordered consumer of the bucket's
    /// stream filtered to them.
    pub async fn dead_letters(
        &self,
        dest: &DestinationName,
    ) -> Result<Vec<(Seq, DeadLetter)>, FleetError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let what = "dead letter list";
        let values = self
            .read_per_seq(
                &format!("dead.{dest}."),
                DeliverPolicy::LastPerSubject,
                what,
            )
            .await?;
        let mut out = BTreeMap::new();
        for (seq, bytes) in values {
            let dead = codec::decode_dead_letter(&bytes)
                .map_err(|e| FleetError::js("dead letter decode", e))?;
            out.insert(seq, dead);
        }
        Ok(out.into_iter().collect())
    }

    /// The values of the history bucket's keys `<prefix><seq>` from
    /// `deliver` on, in the order written, read through one ordered consumer
    /// (a removed key's marker, with no value, left out).
    async fn read_per_seq(
        &self,
        prefix: &str,
        deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
        what: &'static str,
    ) -> Result<Vec<(Seq, Bytes)>, FleetError> {
        use async_nats::jetstream::consumer::{push, ReplayPolicy};
        let subject_prefix = format!("{}{prefix}", self.records.prefix);
        let consumer = self
            .records
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{subject_prefix}*"),
                deliver_policy,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| FleetError::js(what, e))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| FleetError::js(what, e))?;
        while let Some(m) = super::next_read(&mut messages, what).await? {
            let m = m.map_err(|e| FleetError::js(what, e))?;
            let seq = m
                .subject
                .strip_prefix(subject_prefix.as_str())
                .and_then(|s| s.parse().ok())
                .map(Seq);
            if let (Some(seq), false) = (seq, m.payload.is_empty()) {
                out.push((seq, m.payload.clone()));
            }
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` of the latest attempts at `dest`, as sled's
    /// `recent` lists them (highest seq first, a message's latest attempt
    /// before its earlier ones), among the messages whose history was
    /// written in the bucket's last [`RECENT_WINDOW`] writes: a bounded
    /// read of the bucket's tail, whatever its size.
    pub async fn recent_attempts(
        &self,
        dest: &DestinationName,
        limit: usize,
    ) -> Result<Vec<(Seq, Attempt)>, FleetError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let info = self
            .records
            .stream
            .get_info()
            .await
            .map_err(|e| FleetError::js("attempt list", e))?;
        let last = info.state.last_sequence;
        if last == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let from = DeliverPolicy::ByStartSequence {
            start_sequence: last.saturating_sub(RECENT_WINDOW).max(1),
        };
        let values = self
            .read_per_seq(&format!("att.{dest}."), from, "attempt list")
            .await?;
        // Each message's latest history (a later write holds every attempt
        // of an earlier one, or the newest 64).
        let mut latest: BTreeMap<Seq, Vec<Attempt>> = BTreeMap::new();
        for (seq, bytes) in values {
            let h =
                codec::decode_history(&bytes).map_err(|e| FleetError::js("attempts decode", e))?;
            latest.insert(seq, h.attempts);
        }
        Ok(latest
            .into_iter()
            .rev()
            .flat_map(|(seq, attempts)| attempts.into_iter().rev().map(move |a| (seq, a)))
            .take(limit)
            .collect())
    }

    /// Names of destinations whose state another relay (or this one) changes,
    /// as it happens; ends when the connection does.
    /// Keeps this relay's copy of every destination's state current while
    /// the stream is polled (the copy is used only from then on; call
    /// [`Fleet::state_watch_ended`] when it ends).
    pub async fn state_changes(
        self: &std::sync::Arc<Self>,
    ) -> Result<impl futures_util::Stream<Item = DestinationName> + Send + use<>, FleetError> {
        // Every key's latest value first (so a copy read before the watch
        // began is corrected), then each change.
        let watch = self
            .bucket
            .watch_many_with_history(["state.*", "move.*"])
            .await
            .map_err(|e| FleetError::js("state watch", e))?;
        // The watch gives the holds there now only as it is read: the copy
        // has them all before it is used (a worker must not take "none seen
        // yet" for "none").
        self.read_holds().await?;
        self.states.start();
        let fleet = self.clone();
        Ok(watch.filter_map(move |entry| {
            let fleet = fleet.clone();
            async move {
                let entry = entry.ok()?;
                if let Some(held) = entry.key.strip_prefix("move.") {
                    let dest: DestinationName = held.parse().ok()?;
                    let until = match entry.operation {
                        Operation::Put => Some(codec::decode_seq(&entry.value).map_or(0, |d| d.0)),
                        Operation::Delete | Operation::Purge => None,
                    };
                    fleet.states.note_hold(&dest, entry.revision, until);
                    return Some(dest);
                }
                let dest: DestinationName = entry.key.strip_prefix("state.")?.parse().ok()?;
                let st = match entry.operation {
                    Operation::Put => match codec::decode_state(&entry.value) {
                        Ok(st) => st,
                        Err(e) => {
                            // Read from the bucket each time rather than trusted.
                            tracing::warn!(destination = %dest, error = %e, "undecodable destination state");
                            fleet.states.forget(&dest);
                            return Some(dest);
                        }
                    },
                    Operation::Delete | Operation::Purge => DestinationState::default(),
                };
                fleet.states.note(&dest, entry.revision, &st);
                Some(dest)
            }
        }))
    }

    /// Notes every hold in the bucket now.
    async fn read_holds(&self) -> Result<(), FleetError> {
        let mut keys = self
            .bucket
            .keys()
            .await
            .map_err(|e| FleetError::js("hold list", e))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| FleetError::js("hold list", e))?;
            let Some(dest) = key.strip_prefix("move.").and_then(|d| d.parse().ok()) else {
                continue;
            };
            if let Some((value, revision)) = entry(&self.bucket, &key).await? {
                let until = codec::decode_seq(&value).map_or(0, |d| d.0);
                self.states.note_hold(&dest, revision, Some(until));
            }
        }
        Ok(())
    }

    /// The watch of [`Fleet::state_changes`] ended: reads go to the bucket
    /// until a new one starts.
    pub fn state_watch_ended(&self) {
        self.states.stop();
    }
}

/// This relay's copy of each destination's state, with the bucket revision
/// it came from; used only while a watch keeps it current.
#[derive(Default)]
pub(super) struct StateCopies(std::sync::Mutex<Copies>);

#[derive(Default)]
struct Copies {
    live: bool,
    seen: std::collections::HashMap<DestinationName, (u64, DestinationState)>,
    /// Each destination's hold as last seen, by revision: its deadline
    /// (Unix ms), or `None` once let go.
    holds: std::collections::HashMap<DestinationName, (u64, Option<u64>)>,
}

impl StateCopies {
    fn get(&self, dest: &DestinationName) -> Option<DestinationState> {
        let c = self.0.lock().ok()?;
        c.live.then(|| c.seen.get(dest).map(|(_, st)| st.clone()))?
    }

    /// Keeps `st` unless a newer revision is already kept.
    fn note(&self, dest: &DestinationName, revision: u64, st: &DestinationState) {
        if let Ok(mut c) = self.0.lock() {
            if !c.live {
                return;
            }
            let newer = c.seen.get(dest).is_none_or(|(r, _)| revision > *r);
            if newer {
                c.seen.insert(dest.clone(), (revision, st.clone()));
            }
        }
    }

    /// `None` when the copy is not kept; else the hold's deadline, if held.
    fn hold(&self, dest: &DestinationName) -> Option<Option<u64>> {
        let c = self.0.lock().ok()?;
        c.live
            .then(|| c.holds.get(dest).and_then(|(_, until)| *until))
    }

    /// A hold taken or renewed (until its deadline) or let go (`None`) at
    /// `revision`, unless a newer revision is already kept.
    fn note_hold(&self, dest: &DestinationName, revision: u64, until: Option<u64>) {
        if let Ok(mut c) = self.0.lock() {
            let newer = c.holds.get(dest).is_none_or(|(r, _)| revision > *r);
            if newer {
                c.holds.insert(dest.clone(), (revision, until));
            }
        }
    }

    fn forget(&self, dest: &DestinationName) {
        if let Ok(mut c) = self.0.lock() {
            c.seen.remove(dest);
        }
    }

    fn start(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.live = true;
        }
    }

    fn stop(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.live = false;
            c.seen.clear();
            c.holds.clear();
        }
    }
}
