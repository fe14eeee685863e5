//! The fleet's log: one stream, a subject per source (`S.log.<source>`, so
//! each destination's consumer is handed only its sources' messages). A
//! message is published with its
//! idempotency key as `Nats-Msg-Id` and counts as stored once JetStream
//! acknowledges it (stored on a majority of `replicas`).

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;

use super::{Fleet, FleetError};
use crate::model::{MessageId, Seq};
use crate::store::codec::{decode_message, encode_message};
use crate::store::{Message, NewMessage};

/// What the stream made of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Stored {
        seq: Seq,
        id: MessageId,
    },
    /// JetStream saw the `Nats-Msg-Id` inside its duplicate window: the first message's seq and id.
    Duplicate {
        seq: Seq,
        id: MessageId,
    },
}

impl Fleet {
    /// Publishes one webhook and waits for JetStream's acknowledgement.
    /// With `reply_from`, a provider waits on that destination's answer:
    /// the message names this relay as where it goes.
    pub async fn publish(
        &self,
        mut msg: NewMessage,
        reply_from: Option<&crate::model::DestinationName>,
    ) -> Result<Published, FleetError> {
        let now = crate::time::now_ms();
        let id = MessageId::generate(now);
        let key = msg.dedup.take().map(|(k, _)| k);
        let msg_id = key.as_ref().map(|k| format!("{}:{k}", msg.source));
        let subject = self.source_subject(&msg.source);
        let record = Message {
            id: id.clone(),
            source: msg.source,
            received_at_ms: now,
            event_type: msg.event_type,
            content_type: msg.content_type,
            idempotency_key: key,
            query: msg.query,
            headers: msg.headers,
            body: msg.body,
        };
        let bytes = encode_message(&record).map_err(|e| FleetError::js("encode", e))?;
        let mut publish = PublishMessage::build().payload(bytes.into());
        if let Some(msg_id) = msg_id {
            publish = publish.message_id(msg_id);
        }
        if let Some(dest) = reply_from {
            publish = publish.header(
                super::replies::REPLY_HEADER,
                self.reply_header(dest).as_str(),
            );
        }
        let ack = async { self.js.send_publish(subject, publish).await?.await };
        let ack = ack.await.map_err(|e| match e.kind() {
            // The stream's `max_bytes` with `discard = new`: JetStream's
            // "maximum bytes exceeded" (error code 10047 family).
            PublishErrorKind::Other if e.to_string().contains("maximum bytes exceeded") => {
                FleetError::Full
            }
            _ => FleetError::js("publish", e),
        })?;
        let seq = Seq(ack.sequence);
        if !ack.duplicate {
            return Ok(Published::Stored { seq, id });
        }
        // The id the provider already heard is the first message's.
        let first = self.message(seq).await?;
        Ok(Published::Duplicate {
            seq,
            id: first.map_or(id, |m| m.id),
        })
    }

    /// The message stored under `seq`, if it is still in the stream.
    pub async fn message(&self, seq: Seq) -> Result<Option<Message>, FleetError> {
        let raw = match self.stream.get_raw_message(seq.0).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(FleetError::js("message read", e)),
        };
        decode_message(&raw.payload)
            .map(Some)
            .map_err(|e| FleetError::js("message decode", e))
    }

    /// The oldest seq still in the stream (past the newest when empty).
    pub async fn first_seq(&self) -> Result<Seq, FleetError> {
        Ok(Seq(self.stream_state().await?.first_sequence))
    }

    /// The newest seq in the stream (0 when empty).
    pub async fn head(&self) -> Result<Seq, FleetError> {
        Ok(Seq(self.stream_state().await?.last_sequence))
    }

    /// The stream's counts and bounds as JetStream reports them now.
    async fn stream_state(&self) -> Result<async_nats::jetstream::stream::State, FleetError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| FleetError::js("stream info", e))?;
        Ok(info.state)
    }
}

impl Fleet {
    /// The subject `source`'s messages are stored under.
    pub(super) fn source_subject(&self, source: &crate::model::SourceName) -> String {
        format!("{}.{source}", self.subject)
    }

    /// Deletes the messages every destination has finished (its consumer's
    /// ack floor passed them) that are also older than `retention`, as sled's
    /// retention does; what any destination still owes stays, whatever its
    /// age. Returns how many went. Any relay may run it: it is idempotent.
    pub async fn purge_finished(
        &self,
        dests: &[crate::model::DestinationName],
        retention: std::time::Duration,
    ) -> Result<u64, FleetError> {
        // Every durable consumer on the stream counts, not only this
        // relay's destinations: during a rolling config change another
        // relay's may still owe messages. A configured one not created yet
        // (its worker is starting) holds everything back until next round.
        // A consumer of a destination no longer configured anywhere (no
        // relay pulls from it) holds nothing back, or it would hold the
        // stream forever.
        // Read first: whatever is stored after the consumers are looked at
        // is at or above it, so kept.
        let cutoff = crate::time::now_ms().saturating_sub(retention.as_millis() as u64);
        let young = self.seq_at_time(cutoff).await?;
        let mut floor = u64::MAX;
        let mut configured = 0;
        let mut consumers = self.stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| FleetError::js("consumer list", e))?;
            let Some(durable) = &info.config.durable_name else {
                continue;
            };
            let ours = dests
                .iter()
                .any(|d| *durable == super::feed::consumer_name(self.stream_name(), d));
            if ours {
                configured += 1;
            }
            // A consumer with nothing pending owes nothing (its floor stops
            // at its sources' last message, maybe far below the head);
            // anything of its sources stored after this look is at or
            // above `young`, which is kept.
            let owes = info.num_pending > 0 || info.num_ack_pending > 0;
            if owes && (ours || info.num_waiting > 0 || info.num_ack_pending > 0) {
                floor = floor.min(info.ack_floor.stream_sequence);
            }
        }
        if configured < dests.len() {
            return Ok(0);
        }
        let keep_from = floor.saturating_add(1).min(young.0);
        let first = self.first_seq().await?.0;
        if keep_from <= first {
            return Ok(0);
        }
        let purged = self
            .stream
            .purge()
            .sequence(keep_from)
            .await
            .map_err(|e| FleetError::js("purge", e))?;
        Ok(purged.purged)
    }
}

impl Fleet {
    /// Up to `limit` messages after `after` that `keep` wants, oldest first,
    /// reading at most `cap` messages through one ordered consumer (the
    /// stream streamed, not one request per message). Also the last seq
    /// read, so a caller can go on past what it skipped.
    pub async fn scan(
        &self,
        after: Seq,
        (limit, cap): (usize, usize),
        keep: impl Fn(&Message) -> bool,
    ) -> Result<(Vec<(Seq, Message)>, Seq), FleetError> {
        use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
        let consumer = self
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.0.saturating_add(1),
                },
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| FleetError::js("log read", e))?;
        let mut out = Vec::new();
        let mut last = after;
        if consumer.cached_info().num_pending == 0 || limit == 0 {
            return Ok((out, last));
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| FleetError::js("log read", e))?;
        for _ in 0..cap {
            let Some(m) = super::next_read(&mut messages, "log read").await? else {
                break;
            };
            let m = m.map_err(|e| FleetError::js("log read", e))?;
            let info = m.info().map_err(|e| FleetError::js("message info", e))?;
            let (seq, pending) = (Seq(info.stream_sequence), info.pending);
            let msg =
                decode_message(&m.payload).map_err(|e| FleetError::js("message decode", e))?;
            last = seq;
            if keep(&msg) {
                out.push((seq, msg));
            }
            if out.len() >= limit || pending == 0 {
                break;
            }
        }
        Ok((out, last))
    }

    /// [`Fleet::scan`] for the API's listing: by source and event type, as metadata.
    pub async fn list_messages(
        &self,
        (source, event_type): (Option<&crate::model::SourceName>, Option<&str>),
        after: Seq,
        limits: (usize, usize),
    ) -> Result<Vec<crate::store::MessageMeta>, FleetError> {
        let keep = |msg: &Message| {
            source.is_none_or(|s| *s == msg.source)
                && event_type.is_none_or(|t| msg.event_type.as_deref() == Some(t))
        };
        let (found, _) = self.scan(after, limits, keep).await?;
        Ok(found
            .iter()
            .map(|(seq, m)| crate::store::MessageMeta::of(*seq, m))
            .collect())
    }
}
