//! Sync replies across the fleet: the relay that took a webhook in waits
//! for its answer, and any relay may deliver it. The stored message names
//! the waiting relay and the destination whose answer it waits for (header
//! [`REPLY_HEADER`]); the relay that makes that destination's first attempt
//! sends the answer (or word that there is none) over core NATS to the
//! subject that relay's worker of the destination listens on. Nothing of
//! this is stored: a relay gone meanwhile leaves a provider that has gone too.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Fleet, FleetError};
use crate::model::{DestinationName, Seq};

/// Stored header of a message whose provider waits: `<relay>.<destination>`.
pub(super) const REPLY_HEADER: &str = "Hookrelay-Reply";
const SEQ_HEADER: &str = "Hookrelay-Seq";
const STATUS_HEADER: &str = "Hookrelay-Status";
const TYPE_HEADER: &str = "Hookrelay-Content-Type";
const ENCODING_HEADER: &str = "Hookrelay-Content-Encoding";

/// A destination's answer to a message's first attempt, as the waiting
/// relay passes it on to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub body: Bytes,
}

/// Where a delivering relay sends a message's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo(String);

impl Fleet {
    /// The subject this relay's worker of `dest` hears answers on.
    fn reply_subject(&self, relay: &str, dest: &DestinationName) -> String {
        format!("_HOOKRELAY.{}.reply.{relay}.{dest}", self.cfg.stream)
    }

    /// The header value naming this relay as waiting on `dest`'s answer.
    pub(super) fn reply_header(&self, dest: &DestinationName) -> String {
        format!("{}.{dest}", self.relay_id)
    }

    /// The answers other relays (or this one) send for `dest` to this relay,
    /// as (seq, answer; `None`: there is none, use the fallback).
    pub async fn answers(
        &self,
        dest: &DestinationName,
    ) -> Result<impl futures_util::Stream<Item = (Seq, Option<Answer>)> + Send + use<>, FleetError>
    {
        let subject = self.reply_subject(&self.relay_id, dest);
        let sub = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| FleetError::js("reply subscription", e))?;
        Ok(sub.filter_map(|m| async move {
            let headers = m.headers?;
            let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
            let seq = Seq(text(SEQ_HEADER)?.parse().ok()?);
            let Some(status) = text(STATUS_HEADER).and_then(|s| s.parse().ok()) else {
                return Some((seq, None));
            };
            let answer = Answer {
                status,
                content_type: text(TYPE_HEADER),
                content_encoding: text(ENCODING_HEADER),
                body: m.payload,
            };
            Some((seq, Some(answer)))
        }))
    }

    /// Sends the answer to `seq` (or word that there is none) where its
    /// provider waits. Best effort: a lost answer means the fallback.
    pub async fn send_answer(&self, to: &ReplyTo, seq: Seq, answer: Option<&Answer>) {
        let mut headers = HeaderMap::new();
        headers.insert(SEQ_HEADER, seq.0.to_string().as_str());
        let mut body = Bytes::new();
        if let Some(a) = answer {
            headers.insert(STATUS_HEADER, a.status.to_string().as_str());
            if let Some(t) = &a.content_type {
                headers.insert(TYPE_HEADER, t.as_str());
            }
            if let Some(e) = &a.content_encoding {
                headers.insert(ENCODING_HEADER, e.as_str());
            }
            body = a.body.clone();
        }
        let sent = self
            .client
            .publish_with_headers(to.0.clone(), headers, body)
            .await;
        if let Err(e) = sent {
            // Too large for the server's max_payload, most likely: tell the
            // provider there is no answer rather than let it wait.
            tracing::warn!(seq = seq.0, error = %e, "cannot pass a sync reply on");
            let mut none = HeaderMap::new();
            none.insert(SEQ_HEADER, seq.0.to_string().as_str());
            let _ = self
                .client
                .publish_with_headers(to.0.clone(), none, Bytes::new())
                .await;
        }
    }

    /// Where the answer of `dest`'s first attempt at a message goes, if a
    /// provider waits for it (its stored header names `dest`).
    pub(super) fn reply_to(&self, header: Option<&str>, dest: &DestinationName) -> Option<ReplyTo> {
        let (relay, wanted) = header?.rsplit_once('.')?;
        (wanted == dest.as_str() && !relay.is_empty())
            .then(|| ReplyTo(self.reply_subject(relay, dest)))
    }
}
