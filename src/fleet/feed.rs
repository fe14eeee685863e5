//! A destination's durable pull consumer, shared by every relay of the
//! fleet: its ack floor is the destination's cursor, and `max_ack_pending`
//! bounds what is in flight across the whole fleet (1 for strict order).
//! A relay holding a message keeps it with progress acks; if the relay dies,
//! JetStream hands the message to another after `ack_wait`.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;

use super::{Fleet, FleetError};
use crate::model::{DestinationName, Seq};
use crate::store::codec::decode_message;
use crate::store::Message;

/// A destination's consumer, as one relay pulls from it.
pub struct Feed {
    consumer: consumer::Consumer<pull::Config>,
    /// The consumer's own `ack_wait` (whichever relay set it last), which
    /// paces this relay's progress acks: a third of it.
    pub ack_wait: Duration,
}

/// One message handed to this relay, not yet finished.
pub struct Delivery {
    msg: async_nats::jetstream::Message,
    pub seq: Seq,
    /// JetStream's count of hand-outs of it to this consumer (1 the first time).
    pub handed_out: i64,
}

/// The durable consumer's name for a destination.
pub(super) fn consumer_name(stream: &str, dest: &DestinationName) -> String {
    format!("{stream}_{dest}")
}

impl Fleet {
    /// The subjects of a destination's sources, sorted (as compared with a
    /// consumer's).
    fn filter_subjects(&self, shape: &Shape) -> Vec<String> {
        let mut subjects: Vec<String> = shape
            .sources
            .iter()
            .map(|s| self.source_subject(s))
            .collect();
        subjects.sort();
        subjects.dedup();
        subjects
    }

    /// A destination's durable consumer: explicit acks, never given up on
    /// (retries are the relay's), `max_in_flight` out at once fleet-wide,
    /// handed only its sources' messages.
    fn consumer_config(
        &self,
        dest: &DestinationName,
        shape: &Shape,
        deliver_policy: DeliverPolicy,
    ) -> pull::Config {
        pull::Config {
            durable_name: Some(consumer_name(self.stream_name(), dest)),
            description: Some(format!("hookrelay destination {dest}")),
            filter_subjects: self.filter_subjects(shape),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: i64::try_from(shape.max_in_flight.max(1)).unwrap_or(i64::MAX),
            deliver_policy,
            max_deliver: -1,
            ..Default::default()
        }
    }

    /// The destination's consumer, created on first use. `from_now`: a
    /// destination added while the fleet runs receives what arrives from
    /// now on (as with sled); one there from the start receives the stream.
    /// With `reshape`, an existing consumer takes `shape` if it differs (a
    /// worker's start, not its reopening after an error: during a rolling
    /// config change the last relay started sets it).
    pub async fn feed(
        &self,
        dest: &DestinationName,
        (shape, reshape): (&Shape, bool),
        from_now: bool,
    ) -> Result<Feed, FleetError> {
        let name = consumer_name(self.stream_name(), dest);
        // A consumer missing after a replay began to move it (the relay
        // doing it died, or its create failed) starts where the replay
        // said; only a destination's very first consumer starts per `from_now`.
        let start = match self.replay_start(dest).await? {
            Some(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq.0,
            },
            None if from_now => DeliverPolicy::New,
            None => DeliverPolicy::All,
        };
        let config = self.consumer_config(dest, shape, start);
        let consumer = match self.stream.get_consumer::<pull::Config>(&name).await {
            Ok(c) => {
                let c: consumer::Consumer<pull::Config> = c;
                let now = &c.cached_info().config;
                let mut filters = filters_of(now);
                filters.sort();
                let differs = now.max_ack_pending != config.max_ack_pending
                    || now.ack_wait != config.ack_wait
                    || filters != config.filter_subjects;
                if reshape && differs {
                    // Ordering, max_in_flight or sources changed: the
                    // cursor stays. (A rolling config change: the last
                    // relay to start with its new config sets them.)
                    let update = pull::Config {
                        deliver_policy: c.cached_info().config.deliver_policy,
                        ..config
                    };
                    self.stream
                        .create_consumer(update)
                        .await
                        .map_err(|e| FleetError::js("consumer update", e))?
                } else {
                    c
                }
            }
            Err(_) => self
                .stream
                .get_or_create_consumer(&name, config)
                .await
                .map_err(|e| FleetError::js("consumer create", e))?,
        };
        let ack_wait = consumer.cached_info().config.ack_wait;
        Ok(Feed {
            consumer,
            ack_wait: if ack_wait.is_zero() {
                self.ack_wait
            } else {
                ack_wait
            },
        })
    }

    /// Replays a destination from `seq`: its consumer is recreated to
    /// start there (any relay's next pull gets `seq` first); messages in
    /// flight on the old one are finished but their acks go nowhere.
    pub async fn rewind(
        &self,
        dest: &DestinationName,
        seq: Seq,
        shape: &Shape,
    ) -> Result<(), FleetError> {
        let name = consumer_name(self.stream_name(), dest);
        self.set_replay_start(dest, seq).await?;
        let _ = self.stream.delete_consumer(&name).await;
        let start = DeliverPolicy::ByStartSequence {
            start_sequence: seq.0.max(1),
        };
        let config = self.consumer_config(dest, shape, start);
        let mut tries = 0;
        loop {
            match self.stream.create_consumer(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(destination = %dest, error = %e, "cannot recreate the consumer; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(FleetError::js("consumer create", e)),
            }
        }
    }

    /// The first seq stored at or after `ms` (Unix ms); past the end when none is.
    pub async fn seq_at_time(&self, ms: u64) -> Result<Seq, FleetError> {
        use async_nats::jetstream::consumer::{push, ReplayPolicy};
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| FleetError::js("time", e))?;
        let consumer = self
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| FleetError::js("seek by time", e))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(self.head().await?.next());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| FleetError::js("seek by time", e))?;
        match super::next_read(&mut messages, "seek by time").await? {
            Some(Ok(m)) => {
                let info = m.info().map_err(|e| FleetError::js("message info", e))?;
                Ok(Seq(info.stream_sequence))
            }
            Some(Err(e)) => Err(FleetError::js("seek by time", e)),
            None => Ok(self.head().await?.next()),
        }
    }

    /// Stops `dest` fleet-wide for this relay to act alone on it: takes the
    /// destination's hold (`move.<dest>`: every relay's worker delivers none
    /// of its messages while it is held; one hold at a time fleet-wide; waits
    /// up to `queue` for another to end), and if `claim` accepts the state,
    /// waits up to `drain` for what is in flight anywhere to end. The hold
    /// lasts `drain` + [`MOVE_MARGIN`] unless renewed ([`Fleet::renew`]), so
    /// a relay that dies holding it stops nothing for long. It leaves the
    /// operator's pause alone. [`Fleet::restart`] ends it.
    pub async fn stop(
        &self,
        dest: &DestinationName,
        (drain, queue): (Duration, Duration),
        claim: impl Fn(&crate::store::DestinationState) -> bool + Sync,
    ) -> Result<Stopping, FleetError> {
        let hold = drain + MOVE_MARGIN;
        let Some(marker) = self.take_hold(dest, hold, queue).await? else {
            return Ok(Stopping::Busy);
        };
        let stop = Stop { marker, hold };
        // Judged inside a compare-and-set (of the unchanged state), so on
        // the bucket's latest state, not a copy that may lag.
        let mut claimed = false;
        let judged = self
            .update_state(dest, |st| {
                claimed = claim(st);
            })
            .await;
        if let Err(e) = judged {
            self.abandon(dest, stop).await;
            return Err(e);
        }
        if !claimed {
            self.abandon(dest, stop).await;
            return Ok(Stopping::Refused);
        }
        if !self.wait_idle(dest, drain).await {
            tracing::warn!(destination = %dest, "deliveries still in flight (or not seen) after the destination's timeout; going on anyway");
        }
        Ok(Stopping::Stopped(stop))
    }

    /// Extends a stop for another `drain` + [`MOVE_MARGIN`] from now; false
    /// if it was lost (it lapsed and another relay took the destination).
    pub async fn renew(&self, dest: &DestinationName, stop: &mut Stop) -> Result<bool, FleetError> {
        self.renew_hold(dest, &mut stop.marker, stop.hold).await
    }

    /// Renews `stop`; an error if it was lost (then nothing of it is left
    /// to end) or cannot be renewed (then it is let go).
    async fn still_held(&self, dest: &DestinationName, mut stop: Stop) -> Result<Stop, FleetError> {
        match self.renew(dest, &mut stop).await {
            Ok(true) => Ok(stop),
            Ok(false) => Err(FleetError::HoldLost),
            Err(e) => {
                self.abandon(dest, stop).await;
                Err(e)
            }
        }
    }

    /// Ends a [`Fleet::stop`]: applies `finish` to the destination's state
    /// (before any relay delivers again), then lets it go.
    pub async fn restart(
        &self,
        dest: &DestinationName,
        stop: Stop,
        finish: impl Fn(&mut crate::store::DestinationState) + Sync,
    ) -> Result<(), FleetError> {
        let finished = self.update_state(dest, finish).await;
        self.drop_hold(dest, stop.marker).await;
        finished.map(drop)
    }

    /// Ends a [`Fleet::stop`] with no change to the destination's state.
    pub async fn abandon(&self, dest: &DestinationName, stop: Stop) {
        self.drop_hold(dest, stop.marker).await;
    }

    /// Moves `dest`'s consumer to start at `start` with no delivery of it in
    /// flight anywhere, within a [`Fleet::stop`]; `finish` is given the
    /// cursor the consumer had once drained.
    pub async fn move_consumer(
        &self,
        dest: &DestinationName,
        (start, shape, drain, queue): (Seq, &Shape, Duration, Duration),
        claim: impl Fn(&crate::store::DestinationState) -> bool + Sync,
        finish: impl Fn(&mut crate::store::DestinationState, Seq) + Sync,
    ) -> Result<Moved, FleetError> {
        let stop = match self.stop(dest, (drain, queue), claim).await? {
            Stopping::Stopped(stop) => stop,
            Stopping::Refused => return Ok(Moved::Refused),
            Stopping::Busy => return Ok(Moved::Busy),
        };
        // Where delivery stood once nothing was in flight (a consumer lost
        // mid-move: just before `start`), for `finish`.
        let floor = match self.position(dest).await {
            Ok((floor, _)) => floor,
            Err(_) => Seq(start.0.saturating_sub(1)),
        };
        // Still ours (a drain through a leader election can outlast the
        // hold): renewed before the consumer moves and before the state
        // changes, or the move stops there.
        let stop = self.still_held(dest, stop).await?;
        if let Err(e) = self.rewind(dest, start, shape).await {
            self.abandon(dest, stop).await;
            return Err(e);
        }
        let stop = self.still_held(dest, stop).await?;
        self.restart(dest, stop, |st| finish(st, floor)).await?;
        Ok(Moved::Done)
    }

    /// Waits up to `deadline` until no relay holds a message of `dest`;
    /// whether that happened (a failed look, as in a leader election, is
    /// tried again until then).
    pub async fn wait_idle(&self, dest: &DestinationName, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        // Two looks a little apart: a relay whose copy had not seen the hold
        // yet may have taken a message just after the first.
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            match self.consumer_info(dest).await {
                Ok(info) if info.num_ack_pending == 0 => {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= IDLE_CONFIRM {
                        return true;
                    }
                }
                Ok(_) => idle_since = None,
                Err(e) => {
                    tracing::debug!(destination = %dest, error = %e, "cannot see what is in flight; looking again")
                }
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `dest` finished every message of its consumer's sources up
    /// to `to`: none is left between its ack floor and `to` (the floor
    /// stops at its last finished message, which may be well below `to`
    /// when other sources' messages follow). The consumer's own filter
    /// counts, not this relay's config (they differ in a rolling change).
    pub async fn finished_up_to(
        &self,
        dest: &DestinationName,
        to: Seq,
    ) -> Result<bool, FleetError> {
        let info = self.consumer_info(dest).await?;
        let floor = info.ack_floor.stream_sequence;
        if floor >= to.0 {
            return Ok(true);
        }
        for subject in filters_of(&info.config) {
            let next = self
                .stream
                .raw_message_builder()
                .sequence(floor + 1)
                .next_by_subject(subject)
                .send()
                .await;
            match next {
                Ok(m) if m.sequence <= to.0 => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(FleetError::js("next message", e)),
            }
        }
        Ok(true)
    }

    /// The destination's consumer as JetStream reports it now.
    async fn consumer_info(&self, dest: &DestinationName) -> Result<consumer::Info, FleetError> {
        let name = consumer_name(self.stream_name(), dest);
        self.stream
            .consumer_info(&name)
            .await
            .map_err(|e| FleetError::js("consumer info", e))
    }

    /// The destination's cursor (its consumer's ack floor) and its lag
    /// (its sources' messages not yet finished).
    pub async fn position(&self, dest: &DestinationName) -> Result<(Seq, u64), FleetError> {
        self.figures(dest).await.map(|f| (f.cursor, f.lag))
    }

    /// [`Fleet::position`] and the deliveries out across the fleet.
    pub async fn figures(&self, dest: &DestinationName) -> Result<Figures, FleetError> {
        let info = self.consumer_info(dest).await?;
        Ok(Figures {
            cursor: Seq(info.ack_floor.stream_sequence),
            lag: info.num_pending + info.num_ack_pending as u64,
            in_flight: info.num_ack_pending,
        })
    }
}

/// The subjects a consumer is filtered to (JetStream keeps one in
/// `filter_subject`, several in `filter_subjects`).
fn filters_of(config: &consumer::Config) -> Vec<String> {
    let mut filters = config.filter_subjects.clone();
    filters.extend(config.filter_subject.split_whitespace().map(str::to_owned));
    filters
}

/// What a destination's consumer is made of, besides where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Handed out at once fleet-wide: 1 for a strict destination.
    pub max_in_flight: usize,
    /// The only messages it is handed.
    pub sources: Vec<crate::model::SourceName>,
}

/// How long nothing must be in flight before a stop counts it as drained.
const IDLE_CONFIRM: Duration = Duration::from_millis(250);

/// How long past its drain a hold is honoured unless renewed.
const MOVE_MARGIN: Duration = Duration::from_secs(30);
/// How often a stop waiting for another relay's hold looks again.
pub(super) const MOVE_POLL: Duration = Duration::from_millis(100);

/// A destination held stopped by this relay ([`Fleet::stop`]).
#[derive(Debug)]
pub struct Stop {
    /// The hold's revision.
    marker: u64,
    /// How long the hold lasts unless renewed.
    hold: Duration,
}

/// What [`Fleet::stop`] did.
#[derive(Debug)]
pub enum Stopping {
    Stopped(Stop),
    /// `claim` refused the destination's state.
    Refused,
    /// Another relay acts alone on the destination.
    Busy,
}

/// What [`Fleet::move_consumer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    Done,
    /// `claim` refused the destination's state.
    Refused,
    /// Another relay holds the destination (a replay or a redelivery).
    Busy,
}

/// A destination's consumer in figures, the same from every relay.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// The ack floor.
    pub cursor: Seq,
    /// Its sources' messages not finished yet.
    pub lag: u64,
    /// Messages handed to a relay and not finished yet.
    pub in_flight: usize,
}

impl Feed {
    /// A pull of up to `max` messages, held by the server for at most
    /// `wait` (a request it answers as messages come, not a poll). Take
    /// them with [`Pull::next`] as they arrive.
    pub async fn pull(&self, max: usize, wait: Duration) -> Result<Pull, FleetError> {
        let batch = self
            .consumer
            .batch()
            .max_messages(max.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| FleetError::js("pull", e))?;
        Ok(Pull { batch, any: false })
    }
}

/// One pull in progress.
pub struct Pull {
    batch: pull::Batch,
    any: bool,
}

impl Pull {
    /// The next message handed to this relay; `None` once the pull ends
    /// (full or expired). A failure after some messages ends it quietly:
    /// those are held by this relay now and must be worked on.
    pub async fn next(&mut self) -> Result<Option<Delivery>, FleetError> {
        while let Some(msg) = self.batch.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) if !self.any => return Err(FleetError::js("pull", e)),
                Err(e) => {
                    tracing::warn!(error = %e, "pull ended early");
                    return Ok(None);
                }
            };
            let Ok((seq, handed_out)) = msg
                .info()
                .map(|info| (Seq(info.stream_sequence), info.delivered))
            else {
                // Not a JetStream message (no reply subject): nothing to hold.
                continue;
            };
            self.any = true;
            return Ok(Some(Delivery {
                msg,
                seq,
                handed_out,
            }));
        }
        Ok(None)
    }
}

impl Delivery {
    /// Where the answer to `dest`'s first attempt goes, if a provider waits.
    pub fn reply_to(&self, fleet: &Fleet, dest: &DestinationName) -> Option<super::ReplyTo> {
        let headers = self.msg.headers.as_ref()?;
        let value = headers.get(super::replies::REPLY_HEADER)?;
        fleet.reply_to(Some(value.as_str()), dest)
    }

    /// The stored message; an undecodable one is an error for its seq.
    pub fn message(&self) -> Result<Message, FleetError> {
        decode_message(&self.msg.payload).map_err(|e| FleetError::js("message decode", e))
    }

    /// Finished (delivered, dead-lettered or not routed here): the cursor
    /// may pass it. Waits for JetStream to confirm.
    pub async fn done(&self) -> Result<(), FleetError> {
        self.msg
            .double_ack()
            .await
            .map_err(|e| FleetError::js("ack", e))
    }

    /// Still being worked on: JetStream restarts its `ack_wait`.
    pub async fn in_progress(&self) -> Result<(), FleetError> {
        self.msg
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| FleetError::js("progress ack", e))
    }

    /// Not finished here (shutdown, a pause): handed out again, to any relay, after `delay`.
    pub async fn release(&self, delay: Option<Duration>) -> Result<(), FleetError> {
        self.msg
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| FleetError::js("nak", e))
    }
}
