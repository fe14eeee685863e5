//! The one place that turns records (sled values) into bytes and back.
//!
//! Every value starts with a format-version byte, then the bincode 2 (standard
//! config) encoding of that version's struct. Persisted structs are append-only:
//! fields are never reordered or removed; a change adds a new version and a
//! decoder arm for it. Keys are not built here: each tree's module owns its
//! key layout. Nothing here touches sled.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{MessageId, Seq, SourceName};

/// A record could not be decoded: unknown version or corrupt bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("empty record")]
    Empty,
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("record encoding failed: {0}")]
    Encode(String),
}

const V1: u8 = 1;
/// [`Message`] with `event_type` and `query`; [`DestinationState`] with
/// `replay_end`; an [`Attempt`] followed by its [`RetryRun`] (a failed
/// attempt of a retry run; other attempts are still written as V1);
/// [`UnorderedWindow`] with `early_done`. Other records are still written as V1.
const V2: u8 = 2;
/// [`DestinationState`] with `retry_epoch`.
const V3: u8 = 3;

fn encode_as<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(V1, value)
}

/// Splits off the version byte.
fn version(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    bytes
        .split_first()
        .map(|(v, rest)| (*v, rest))
        .ok_or(CodecError::Empty)
}

fn decode_body<T: DeserializeOwned>(rest: &[u8]) -> Result<T, CodecError> {
    decode_limited(rest).map_err(|e| CodecError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match version(bytes)? {
        (V1, rest) => decode_body(rest),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// bincode allocates what a length prefix claims before it reads those bytes,
/// so without a limit a corrupt prefix asks for any amount of memory and the
/// process aborts (found by the `record_decoder` fuzz target). A decode
/// claims at most 8 bytes per byte it reads (a one-byte varint counts as its
/// 8-byte integer; string bytes count once), so a limit of 8 × the input
/// refuses no valid record. bincode's limit is a constant: this takes the
/// smallest of a few that is large enough, which bounds what a corrupt record
/// can allocate to 16 × its size.
fn decode_limited<T: DeserializeOwned>(rest: &[u8]) -> Result<T, bincode::error::DecodeError> {
    fn with<T: DeserializeOwned, const LIMIT: usize>(
        rest: &[u8],
    ) -> Result<T, bincode::error::DecodeError> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        bincode::serde::decode_from_slice(rest, config).map(|(v, _)| v)
    }
    match rest.len().saturating_mul(8) {
        n if n <= 1 << 16 => with::<T, { 1 << 16 }>(rest),
        n if n <= 1 << 20 => with::<T, { 1 << 20 }>(rest),
        n if n <= 1 << 24 => with::<T, { 1 << 24 }>(rest),
        n if n <= 1 << 28 => with::<T, { 1 << 28 }>(rest),
        n if n <= 1 << 32 => with::<T, { 1 << 32 }>(rest),
        n if n <= 1 << 36 => with::<T, { 1 << 36 }>(rest),
        _ => with::<T, { usize::MAX }>(rest),
    }
}

/// One stored webhook (written as version 2). Field order is part of the
/// on-disk format: the first four fields double as [`MessageHead`], so
/// workers can route without decoding bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub source: SourceName,
    pub received_at_ms: u64,
    /// Computed once at ingest (routing); `None` when the source has none.
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    /// The inbound request's query string, without `?`; forwarded with every delivery.
    pub query: Option<String>,
    /// Inbound headers kept for forwarding and inspection (lowercase names).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Encoded as one byte string, not a sequence of u8 (an order of magnitude faster).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A message as format 1 wrote it (no event type, no query); read only.
#[derive(Deserialize)]
struct MessageV1 {
    id: MessageId,
    source: SourceName,
    received_at_ms: u64,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Self {
        Message {
            id: m.id,
            source: m.source,
            received_at_ms: m.received_at_ms,
            event_type: None,
            content_type: m.content_type,
            idempotency_key: m.idempotency_key,
            query: None,
            headers: m.headers,
            body: m.body,
        }
    }
}

/// The leading fields of a [`Message`], decodable from a prefix of its record
/// (a message's first part holds it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageHead {
    pub id: MessageId,
    pub source: SourceName,
    pub received_at_ms: u64,
    pub event_type: Option<String>,
}

/// The head of a version 1 message, which ends before `event_type`.
#[derive(Deserialize)]
struct MessageHeadV1 {
    id: MessageId,
    source: SourceName,
    received_at_ms: u64,
}

/// Encodes a message as one record; the log puts it in a frame or in parts.
pub fn encode_message(m: &Message) -> Result<Vec<u8>, CodecError> {
    encode_as(V2, m)
}

/// Decodes a whole message record, of either version.
pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    match version(bytes)? {
        (V1, rest) => decode_body::<MessageV1>(rest).map(Message::from),
        (V2, rest) => decode_body(rest),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Decodes only the head of a message from a prefix of its record.
pub fn decode_head(prefix: &[u8]) -> Result<MessageHead, CodecError> {
    match version(prefix)? {
        (V1, rest) => decode_body::<MessageHeadV1>(rest).map(|h| MessageHead {
            id: h.id,
            source: h.source,
            received_at_ms: h.received_at_ms,
            event_type: None,
        }),
        (V2, rest) => decode_body(rest),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// A log value holding whole messages (format 2): `FRAME_V1`, a count (u32
/// BE), then per message its seq (u64 BE), its length (u32 BE) and its
/// [`Message`] record (as [`encode_message`] made it, version byte included).
pub const FRAME_V1: u8 = 0x10;
/// A log value holding one part of a message too large for a frame (format
/// 2): `PART_V1`, the part's index and the message's part count (u32 BE
/// each), then that part of the message's record. Part 0 starts with the
/// record's head, so [`decode_head`] reads it as it reads a frame's message.
pub const PART_V1: u8 = 0x11;
/// Bytes of a frame before its first message.
pub const FRAME_HEADER: usize = 1 + 4;
/// Bytes of a frame per message besides its record: seq and length.
pub const FRAME_ENTRY_HEADER: usize = 8 + 4;
/// Bytes of a part before its share of the record.
pub const PART_HEADER: usize = 1 + 4 + 4;

/// Encodes whole messages (seq, record) as one frame value.
pub fn encode_frame<'a>(
    messages: impl ExactSizeIterator<Item = (Seq, &'a [u8])> + Clone,
) -> Result<Vec<u8>, CodecError> {
    let count = u32::try_from(messages.len())
        .map_err(|_| CodecError::Encode("too many messages for a frame".into()))?;
    let len = FRAME_HEADER
        + messages
            .clone()
            .map(|(_, b)| FRAME_ENTRY_HEADER + b.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(FRAME_V1);
    out.extend_from_slice(&count.to_be_bytes());
    for (seq, bytes) in messages {
        let n = u32::try_from(bytes.len())
            .map_err(|_| CodecError::Encode("message too large for a frame".into()))?;
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Encodes one message record as parts of at most `max_value` bytes each
/// (headers included).
pub fn encode_parts(record: &[u8], max_value: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let payload = max_value.saturating_sub(PART_HEADER).max(1);
    let count = u32::try_from(record.len().div_ceil(payload).max(1))
        .map_err(|_| CodecError::Encode("message too large".into()))?;
    let mut parts = Vec::with_capacity(count as usize);
    for (i, piece) in (0..count).zip(record.chunks(payload)) {
        let mut out = Vec::with_capacity(PART_HEADER + piece.len());
        out.push(PART_V1);
        out.extend_from_slice(&i.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(piece);
        parts.push(out);
    }
    Ok(parts)
}

/// A log value, decoded without copying: ranges point into the value's bytes.
#[derive(Debug, Clone)]
pub enum LogValue {
    /// A frame; walk it with [`FrameEntries`].
    Frame(FrameEntries),
    /// One part of a message: its index, the message's part count, and where
    /// the part's share of the record lies in the value.
    Part {
        index: u32,
        count: u32,
        payload: std::ops::Range<usize>,
    },
}

/// Reads a log value's kind and header.
pub fn decode_log_value(value: &[u8]) -> Result<LogValue, CodecError> {
    let u32_at = |at: usize| -> Result<u32, CodecError> {
        let b: [u8; 4] = value
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CodecError::Corrupt("log value header cut short".into()))?;
        Ok(u32::from_be_bytes(b))
    };
    match version(value)? {
        (FRAME_V1, _) => Ok(LogValue::Frame(FrameEntries {
            at: FRAME_HEADER,
            left: u32_at(1)?,
        })),
        (PART_V1, _) => {
            let (index, count) = (u32_at(1)?, u32_at(5)?);
            if index >= count {
                return Err(CodecError::Corrupt(format!("part {index} of {count}")));
            }
            Ok(LogValue::Part {
                index,
                count,
                payload: PART_HEADER..value.len(),
            })
        }
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// A walk over a frame's messages: each step reads 12 header bytes and
/// skips the record, so finding one message costs no copy.
#[derive(Debug, Clone)]
pub struct FrameEntries {
    at: usize,
    left: u32,
}

impl FrameEntries {
    /// The next message's seq and where its record lies in `frame` (the
    /// same bytes this walk was decoded from); `None` after the last.
    pub fn next(
        &mut self,
        frame: &[u8],
    ) -> Option<Result<(Seq, std::ops::Range<usize>), CodecError>> {
        if self.left == 0 {
            return None;
        }
        let header = frame.get(self.at..self.at + FRAME_ENTRY_HEADER);
        let Some(header) = header else {
            self.left = 0;
            return Some(Err(CodecError::Corrupt("frame cut short".into())));
        };
        let (seq, len) = header.split_at(8);
        let seq = Seq::from_be_bytes(seq.try_into().unwrap_or_default());
        let len = u32::from_be_bytes(len.try_into().unwrap_or_default()) as usize;
        let start = self.at + FRAME_ENTRY_HEADER;
        let Some(end) = start.checked_add(len).filter(|&e| e <= frame.len()) else {
            self.left = 0;
            return Some(Err(CodecError::Corrupt("frame entry cut short".into())));
        };
        self.at = end;
        self.left -= 1;
        Some(Ok((seq, start..end)))
    }

    /// Messages not yet walked.
    pub fn left(&self) -> u32 {
        self.left
    }
}

/// Outcome of one delivery attempt, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    /// HTTP status, if an answer came back.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (`None` on success); truncated to [`MAX_ERROR_LEN`].
    pub error: Option<String>,
}

/// Where a message's retry run at one destination stands after a failed
/// attempt; stored with that attempt (as version 2), so that `max_attempts`,
/// `max_age` and the next retry time hold across restarts. The run is the
/// one the destination's latest record belongs to while its `epoch` is the
/// destination's [`DestinationState::retry_epoch`]; a success ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRun {
    /// The destination's `retry_epoch` when the run began; an operator's
    /// resume or replay raises that, which ends every run begun before.
    pub epoch: u64,
    /// The attempt number that began the run (attempt numbers go on across
    /// runs), so the run has made `n - first + 1` attempts after attempt `n`.
    pub first: u32,
    /// Wall-clock ms of the run's first attempt: `max_age` counts from it.
    pub started_ms: u64,
    /// Wall-clock ms before which the next attempt is not made; `None` when
    /// the run is exhausted (dead-lettered, or blocking its destination).
    pub retry_at_ms: Option<u64>,
}

/// An [`Attempt`] as version 2 writes it: its fields, then its run.
#[derive(Serialize)]
struct AttemptInRunOut<'a> {
    attempt: &'a Attempt,
    run: &'a RetryRun,
}

#[derive(Deserialize)]
struct AttemptInRun {
    attempt: Attempt,
    run: RetryRun,
}

/// Encodes an attempt: version 1 alone, version 2 with the retry run of a
/// failed attempt.
pub fn encode_attempt_in(attempt: &Attempt, run: Option<&RetryRun>) -> Result<Vec<u8>, CodecError> {
    match run {
        None => encode(attempt),
        Some(run) => encode_as(V2, &AttemptInRunOut { attempt, run }),
    }
}

/// Decodes an attempt of either version, with its retry run if it has one.
pub fn decode_attempt_in(bytes: &[u8]) -> Result<(Attempt, Option<RetryRun>), CodecError> {
    match version(bytes)? {
        (V1, rest) => decode_body(rest).map(|a| (a, None)),
        (V2, rest) => decode_body::<AttemptInRun>(rest).map(|a| (a.attempt, Some(a.run))),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Encodes an [`Attempt`] that belongs to no retry run (version 1).
pub fn encode_attempt(v: &Attempt) -> Result<Vec<u8>, CodecError> {
    encode_attempt_in(v, None)
}

/// Decodes an [`Attempt`] of either version, without its retry run.
pub fn decode_attempt(b: &[u8]) -> Result<Attempt, CodecError> {
    decode_attempt_in(b).map(|(a, _)| a)
}

/// The attempts of one message at one destination, in one record (the
/// fleet keeps a message's history in one key; attempt `n` is entry
/// `n - 1 - earlier`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptHistory {
    pub attempts: Vec<Attempt>,
    /// The retry run the latest attempt left, if it failed in one.
    pub run: Option<RetryRun>,
    /// Attempts made before the first one kept (a history keeps the latest
    /// ones only), so the latest is attempt `earlier + attempts.len()`.
    pub earlier: u32,
}

/// A destination's health as the whole fleet sees it (`health.<dest>` in
/// the fleet's state bucket): each relay merges in what its own attempts
/// showed, so every relay's admin API tells the same story.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHealth {
    /// The first failed attempt after the last success, if the latest failed.
    pub failing_since_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// The latest attempt anywhere, and the seq it was for.
    pub last_attempt: Option<(Seq, Attempt)>,
    /// Whether `destination.failing` went out (and `recovered` has not yet):
    /// the one relay that flips it sends the event.
    pub reported_failing: bool,
}

impl FleetHealth {
    /// Folds in one relay's view (its figures since it started).
    pub fn merge(&mut self, local: &FleetHealth) {
        self.last_success_ms = self.last_success_ms.max(local.last_success_ms);
        let newer = match (&self.last_attempt, &local.last_attempt) {
            (Some((_, a)), Some((_, b))) => b.at_ms >= a.at_ms,
            (None, Some(_)) => true,
            _ => false,
        };
        if newer {
            self.last_attempt = local.last_attempt.clone();
        }
        let succeeded_last = match &self.last_attempt {
            Some((_, a)) => a.error.is_none(),
            None => true,
        };
        self.failing_since_ms = if succeeded_last {
            None
        } else {
            // The earliest failure either side saw after the last success.
            let after = |t: &u64| self.last_success_ms.is_none_or(|s| *t > s);
            [self.failing_since_ms, local.failing_since_ms]
                .into_iter()
                .flatten()
                .filter(after)
                .min()
                .or(self.last_attempt.as_ref().map(|(_, a)| a.at_ms))
        };
    }
}

/// A message given up on for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub at_ms: u64,
    pub attempts: u32,
    pub last_error: String,
}

/// Operator-controlled state of a destination; survives restarts (written
/// as version 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationState {
    pub paused: bool,
    /// Set when `on_exhausted = "block"` stopped the destination on this seq.
    pub blocked_on: Option<Seq>,
    /// A bounded replay in progress (`replay --to-seq`).
    pub replay_end: Option<ReplayEnd>,
    /// Raised by each operator action that gives unfinished messages a fresh
    /// run of attempts (a resume that releases a pause or a block, a
    /// replay): a [`RetryRun`] of an older epoch is over.
    pub retry_epoch: u64,
}

/// Where a bounded replay stops: once the cursor reaches `to`, it jumps to
/// `resume` (the cursor before the replay), so what followed `to` and was
/// already delivered is not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayEnd {
    pub to: Seq,
    pub resume: Seq,
}

/// A destination's state as version 1 wrote it (no bounded replays).
#[derive(Deserialize)]
struct DestinationStateV1 {
    paused: bool,
    blocked_on: Option<Seq>,
}

/// A destination's state as version 2 wrote it (no retry epoch).
#[derive(Deserialize)]
struct DestinationStateV2 {
    paused: bool,
    blocked_on: Option<Seq>,
    replay_end: Option<ReplayEnd>,
}

/// Encodes a [`DestinationState`].
pub fn encode_state(v: &DestinationState) -> Result<Vec<u8>, CodecError> {
    encode_as(V3, v)
}

/// Decodes a [`DestinationState`] of any version (older ones at epoch 0).
pub fn decode_state(bytes: &[u8]) -> Result<DestinationState, CodecError> {
    match version(bytes)? {
        (V1, rest) => decode_body::<DestinationStateV1>(rest).map(|s| DestinationState {
            paused: s.paused,
            blocked_on: s.blocked_on,
            ..DestinationState::default()
        }),
        (V2, rest) => decode_body::<DestinationStateV2>(rest).map(|s| DestinationState {
            paused: s.paused,
            blocked_on: s.blocked_on,
            replay_end: s.replay_end,
            retry_epoch: 0,
        }),
        (V3, rest) => decode_body(rest),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// A dedup index entry: the first message with this key, until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub seq: Seq,
    pub id: MessageId,
    pub expires_at_ms: u64,
}

/// An unordered destination's delivery window, saved at a clean stop: every seq
/// in (`cursor`, `scanned`] not in `open` is finished, and so is every seq
/// in `early_done` (above `scanned`: started ahead of the scan for a sync
/// reply). Written as version 2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnorderedWindow {
    pub cursor: Seq,
    pub scanned: Seq,
    pub open: Vec<Seq>,
    pub early_done: Vec<Seq>,
}

/// A window as version 1 wrote it (no sync replies).
#[derive(Deserialize)]
struct UnorderedWindowV1 {
    cursor: Seq,
    scanned: Seq,
    open: Vec<Seq>,
}

/// Encodes an [`UnorderedWindow`].
pub fn encode_window(v: &UnorderedWindow) -> Result<Vec<u8>, CodecError> {
    encode_as(V2, v)
}

/// Decodes an [`UnorderedWindow`] of either version.
pub fn decode_window(bytes: &[u8]) -> Result<UnorderedWindow, CodecError> {
    match version(bytes)? {
        (V1, rest) => decode_body::<UnorderedWindowV1>(rest).map(|w| UnorderedWindow {
            cursor: w.cursor,
            scanned: w.scanned,
            open: w.open,
            early_done: Vec::new(),
        }),
        (V2, rest) => decode_body(rest),
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Error strings stored in attempts and dead letters are cut to this many bytes.
pub const MAX_ERROR_LEN: usize = 512;

macro_rules! record_codec {
    ($t:ty, $enc:ident, $dec:ident) => {
        #[doc = concat!("Encodes a [`", stringify!($t), "`].")]
        pub fn $enc(v: &$t) -> Result<Vec<u8>, CodecError> {
            encode(v)
        }
        #[doc = concat!("Decodes a [`", stringify!($t), "`].")]
        pub fn $dec(b: &[u8]) -> Result<$t, CodecError> {
            decode(b)
        }
    };
}

record_codec!(DeadLetter, encode_dead_letter, decode_dead_letter);
record_codec!(DedupEntry, encode_dedup, decode_dedup);
record_codec!(AttemptHistory, encode_history, decode_history);
record_codec!(FleetHealth, encode_health, decode_health);

/// Reads a big-endian seq value (cursors, meta).
pub fn decode_seq(v: &[u8]) -> Result<Seq, CodecError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| CodecError::Corrupt(format!("seq value of {} bytes", v.len())))?;
    Ok(Seq::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            id: MessageId::generate(1),
            source: "demo".parse().unwrap(),
            received_at_ms: 1_700_000_000_000,
            event_type: Some("invoice.paid".into()),
            content_type: Some("application/json".into()),
            idempotency_key: Some("evt_1".into()),
            query: Some("account=acct_1&x=%20".into()),
            headers: vec![("x-github-event".into(), b"push".to_vec())],
            body: (0..=255u8).collect(),
        }
    }

    #[test]
    fn message_round_trips_and_head_decodes_from_a_prefix() {
        let m = sample();
        let bytes = encode_message(&m).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), m);
        let head = decode_head(&bytes[..64]).unwrap();
        assert_eq!((head.id, head.source), (m.id, m.source));
        assert_eq!(head.event_type, m.event_type);
    }

    /// Format 1 records (written before event types and query strings)
    /// still decode, with neither.
    #[test]
    fn version_1_messages_decode_without_event_type_or_query() {
        #[derive(Serialize)]
        struct V1Out<'a> {
            id: &'a MessageId,
            source: &'a SourceName,
            received_at_ms: u64,
            content_type: &'a Option<String>,
            idempotency_key: &'a Option<String>,
            headers: &'a Vec<(String, Vec<u8>)>,
            #[serde(with = "serde_bytes")]
            body: &'a Vec<u8>,
        }
        let m = sample();
        let bytes = encode(&V1Out {
            id: &m.id,
            source: &m.source,
            received_at_ms: m.received_at_ms,
            content_type: &m.content_type,
            idempotency_key: &m.idempotency_key,
            headers: &m.headers,
            body: &m.body,
        })
        .unwrap();
        assert_eq!(bytes[0], V1);
        let old = decode_message(&bytes).unwrap();
        let expected = Message {
            event_type: None,
            query: None,
            ..m.clone()
        };
        assert_eq!(old, expected);
        let head = decode_head(&bytes[..64]).unwrap();
        assert_eq!((head.id, head.event_type), (m.id, None));
    }

    #[test]
    fn unknown_version_and_garbage_are_errors_not_panics() {
        let mut bytes = encode_message(&sample()).unwrap();
        bytes[0] = 9;
        assert!(matches!(
            decode_message(&bytes),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode_message(&[]), Err(CodecError::Empty)));
        assert!(decode_message(&[1, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_state(&[1]).is_err());
    }

    #[test]
    fn destination_state_of_version_1_decodes_without_a_replay_end() {
        let v1 = encode(&(true, Some(Seq(7)))).unwrap();
        let st = decode_state(&v1).unwrap();
        assert_eq!(
            (st.paused, st.blocked_on, st.replay_end),
            (true, Some(Seq(7)), None)
        );
        let st = DestinationState {
            replay_end: Some(ReplayEnd {
                to: Seq(9),
                resume: Seq(40),
            }),
            ..st
        };
        assert_eq!(decode_state(&encode_state(&st).unwrap()).unwrap(), st);
    }

    #[test]
    fn destination_state_of_version_2_decodes_at_retry_epoch_0() {
        let end = ReplayEnd {
            to: Seq(9),
            resume: Seq(40),
        };
        let v2 = encode_as(V2, &(false, Some(Seq(3)), Some(end))).unwrap();
        let st = decode_state(&v2).unwrap();
        let want = DestinationState {
            blocked_on: Some(Seq(3)),
            replay_end: Some(end),
            ..DestinationState::default()
        };
        assert_eq!(st, want);
        let st = DestinationState {
            retry_epoch: 7,
            ..st
        };
        let bytes = encode_state(&st).unwrap();
        assert_eq!(bytes[0], V3);
        assert_eq!(decode_state(&bytes).unwrap(), st);
    }

    #[test]
    fn attempts_carry_their_retry_run_only_when_they_have_one() {
        let a = Attempt {
            at_ms: 1_700_000_000_000,
            status: Some(503),
            latency_ms: 12,
            error: Some("HTTP 503".into()),
        };
        // Without a run: version 1, as before runs were stored.
        let plain = encode_attempt(&a).unwrap();
        assert_eq!(plain[0], V1);
        assert_eq!(plain, encode_attempt_in(&a, None).unwrap());
        assert_eq!(decode_attempt_in(&plain).unwrap(), (a.clone(), None));
        let run = RetryRun {
            epoch: 2,
            first: 3,
            started_ms: 1_699_999_999_000,
            retry_at_ms: Some(1_700_000_002_000),
        };
        let in_run = encode_attempt_in(&a, Some(&run)).unwrap();
        assert_eq!(in_run[0], V2);
        assert_eq!(decode_attempt_in(&in_run).unwrap(), (a.clone(), Some(run)));
        // Readers of the history alone see the same attempt.
        assert_eq!(decode_attempt(&in_run).unwrap(), a);
        let exhausted = RetryRun {
            retry_at_ms: None,
            ..run
        };
        let bytes = encode_attempt_in(&a, Some(&exhausted)).unwrap();
        assert_eq!(decode_attempt_in(&bytes).unwrap().1, Some(exhausted));
        assert!(decode_attempt_in(&in_run[..in_run.len() - 1]).is_err());
    }

    #[test]
    fn corrupt_lengths_are_errors_not_allocations() {
        // From the record_decoder fuzz target: an id whose length prefix
        // claims ~7 * 10^18 bytes made the decoder allocate them (abort).
        let huge_id = [1, 0xfd, 0x03, 0x73, 0x65, 0x64, 0xc7, 0x37, 0x58, 0x64];
        assert!(matches!(
            decode_message(&huge_id),
            Err(CodecError::Corrupt(_))
        ));
        assert!(decode_head(&huge_id).is_err());
        // A length beyond isize::MAX (a capacity-overflow panic without the limit).
        let mut max = vec![1, 0xfd];
        max.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_message(&max).is_err());
        // Attempt.error: Some(string of 2^40 bytes).
        let mut attempt = vec![1, 0, 0, 0, 1, 0xfd];
        attempt.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode_attempt(&attempt).is_err());
    }

    #[test]
    fn the_decode_limit_refuses_no_valid_record() {
        // The worst claim per input byte: many one-byte varints.
        let w = UnorderedWindow {
            cursor: Seq(0),
            scanned: Seq(0),
            open: vec![Seq(1); 100_000],
            early_done: vec![Seq(2); 1000],
        };
        assert_eq!(decode_window(&encode_window(&w).unwrap()).unwrap(), w);
        // Version 1 (before sync replies) still reads, with nothing done early.
        let v1 = encode(&(Seq(3), Seq(9), vec![Seq(5)])).unwrap();
        let old = decode_window(&v1).unwrap();
        assert_eq!(
            (old.cursor, old.scanned, old.open),
            (Seq(3), Seq(9), vec![Seq(5)])
        );
        assert!(old.early_done.is_empty());
        let mut m = sample();
        m.headers = vec![(String::new(), Vec::new()); 50_000];
        m.body = vec![7; 3 << 20];
        assert_eq!(decode_message(&encode_message(&m).unwrap()).unwrap(), m);
    }

    #[test]
    fn frames_walk_without_copying_and_parts_carry_their_place() {
        let a = encode_message(&sample()).unwrap();
        let b = encode_message(&Message {
            body: vec![],
            ..sample()
        })
        .unwrap();
        let frame = encode_frame([(Seq(7), &a[..]), (Seq(8), &b[..])].into_iter()).unwrap();
        assert_eq!(
            frame.len(),
            FRAME_HEADER + 2 * FRAME_ENTRY_HEADER + a.len() + b.len()
        );
        let LogValue::Frame(mut entries) = decode_log_value(&frame).unwrap() else {
            panic!("not a frame");
        };
        let (seq, range) = entries.next(&frame).unwrap().unwrap();
        assert_eq!((seq, &frame[range]), (Seq(7), &a[..]));
        let (seq, range) = entries.next(&frame).unwrap().unwrap();
        assert_eq!(
            (seq, decode_message(&frame[range]).unwrap().body),
            (Seq(8), vec![])
        );
        assert!(entries.next(&frame).is_none());
        // Cut short: an error, not a panic or a slice past the end.
        let cut = &frame[..frame.len() - 1];
        let LogValue::Frame(mut entries) = decode_log_value(cut).unwrap() else {
            panic!("not a frame");
        };
        assert!(entries.next(cut).unwrap().is_ok());
        assert!(entries.next(cut).unwrap().is_err());

        let parts = encode_parts(&a, PART_HEADER + 100).unwrap();
        assert_eq!(parts.len(), a.len().div_ceil(100));
        let mut joined = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let LogValue::Part {
                index,
                count,
                payload,
            } = decode_log_value(part).unwrap()
            else {
                panic!("not a part");
            };
            assert_eq!((index as usize, count as usize), (i, parts.len()));
            joined.extend_from_slice(&part[payload]);
        }
        assert_eq!(joined, a);
        let id = decode_message(&a).unwrap().id;
        assert_eq!(decode_head(&parts[0][PART_HEADER..]).unwrap().id, id);
        assert!(matches!(
            decode_log_value(&[PART_V1, 0, 0, 0, 2, 0, 0, 0, 2]),
            Err(CodecError::Corrupt(_))
        ));
        assert!(matches!(
            decode_log_value(&[2, 0]),
            Err(CodecError::UnknownVersion(2))
        ));
    }

    fn attempt(at_ms: u64, ok: bool) -> (Seq, Attempt) {
        let error = (!ok).then(|| "HTTP 500".to_owned());
        let status = Some(if ok { 200 } else { 500 });
        (
            Seq(at_ms),
            Attempt {
                at_ms,
                status,
                latency_ms: 1,
                error,
            },
        )
    }

    fn seen(
        last: (Seq, Attempt),
        failing_since_ms: Option<u64>,
        last_success_ms: Option<u64>,
    ) -> FleetHealth {
        FleetHealth {
            failing_since_ms,
            last_success_ms,
            last_attempt: Some(last),
            reported_failing: false,
        }
    }

    #[test]
    fn fleet_health_is_failing_from_the_first_failure_after_the_last_success_anywhere() {
        // Relay a failed from t=10; relay b succeeded at 20, then failed at 30.
        let mut h = FleetHealth::default();
        h.merge(&seen(attempt(12, false), Some(10), None));
        assert_eq!(h.failing_since_ms, Some(10));
        h.merge(&seen(attempt(30, false), Some(30), Some(20)));
        assert_eq!(
            (h.failing_since_ms, h.last_success_ms),
            (Some(30), Some(20))
        );
        // Relay a's stale view (older attempt) changes nothing.
        h.merge(&seen(attempt(12, false), Some(10), None));
        assert_eq!(h.failing_since_ms, Some(30));
        assert_eq!(h.last_attempt.as_ref().map(|(s, _)| *s), Some(Seq(30)));
        // A success anywhere later ends it; the flag is left to the watcher.
        h.reported_failing = true;
        h.merge(&seen(attempt(40, true), None, Some(40)));
        assert_eq!((h.failing_since_ms, h.last_success_ms), (None, Some(40)));
        assert!(h.reported_failing);
        let back = decode_health(&encode_health(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
