//! `GET /api/v1/stream`: Server-Sent Events, one per message as it is
//! stored (`id:` its seq, `event: message`, `data:` the message as JSON).
//! Reads the log after a seq and waits on the head; holds at most one read
//! of messages, and none while the client does not read; ends when the
//! client goes away or the relay stops. Never writes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;

use super::api::message_json;
use super::AdminBody;
use crate::backend::Backend;
use crate::model::{Seq, SourceName};
use crate::store::Scan;

/// Most messages, and about the most body bytes, one read of the log takes.
const READ_MESSAGES: usize = 64;
const READ_BYTES: usize = 1 << 20;
/// Log entries one read looks at, at most (a source filter may skip many).
const READ_SCAN: usize = 4096;
/// A comment this often keeps idle proxies from closing the stream, and
/// finds a client that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Where a stream starts and what it shows.
pub struct Tail {
    backend: Backend,
    head: watch::Receiver<Seq>,
    source: Option<SourceName>,
    /// Every message up to this seq was sent or skipped.
    after: Seq,
    /// Events read and not yet sent.
    pending: VecDeque<Bytes>,
}

impl Tail {
    /// A stream of the messages after `after` (the head when `None`), of one
    /// source or all.
    pub fn new(
        backend: Backend,
        head: watch::Receiver<Seq>,
        source: Option<SourceName>,
        after: Option<Seq>,
    ) -> Tail {
        let after = after.unwrap_or_else(|| *head.borrow());
        let hello = format!(": hookrelay stream after seq {}\n\n", after.0);
        Tail {
            backend,
            head,
            source,
            after,
            pending: VecDeque::from([Bytes::from(hello)]),
        }
    }

    /// The `text/event-stream` response.
    pub fn into_response(self) -> Response<AdminBody> {
        let stream = futures_util::stream::unfold(self, |t| t.next());
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// The next frame: a pending event, else the next read of the log, else
    /// a keepalive once idle. `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Tail)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(Frame::data(event)), self));
            }
            let head = *self.head.borrow_and_update();
            if self.after < head {
                if let Err(e) = self.read(head).await {
                    tracing::warn!(error = %e, "message stream ended by a store error");
                    return None;
                }
                continue;
            }
            tokio::select! {
                // The appender is gone: the relay is stopping.
                changed = self.head.changed() => changed.ok()?,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    return Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), self));
                }
            }
        }
    }

    /// Reads the next messages up to `head` into `pending`.
    async fn read(&mut self, head: Seq) -> Result<(), crate::store::StoreError> {
        let (after, source) = (self.after, self.source.clone());
        let wanted = move |src: &SourceName| source.as_ref().is_none_or(|want| want == src);
        let scans = match &self.backend {
            Backend::Sled(store) => {
                store
                    .blocking(move |s| {
                        let limits = (READ_MESSAGES, READ_BYTES);
                        s.log().read_ahead(after, head, READ_SCAN, limits, wanted)
                    })
                    .await?
            }
            // The head here is the fleet's as last read (each second).
            Backend::Fleet(fleet) => {
                let keep = |m: &crate::store::Message| wanted(&m.source);
                let (found, last) = fleet.scan(after, (READ_MESSAGES, READ_SCAN), keep).await?;
                let mut scans: Vec<Scan> = found
                    .into_iter()
                    .map(|(seq, m)| Scan::Found(seq, Box::new(m)))
                    .collect();
                // Nothing left to read at all (purged, say): up to the head.
                let upto = if last == after { head } else { last };
                scans.push(Scan::Nothing(upto));
                scans
            }
        };
        for scan in scans {
            match scan {
                Scan::Found(seq, m) => {
                    let data = serde_json::Value::Object(message_json(seq, &m));
                    let event = format!("id: {}\nevent: message\ndata: {data}\n\n", seq.0);
                    self.pending.push_back(Bytes::from(event));
                    self.after = seq;
                }
                Scan::Nothing(upto) => self.after = self.after.max(upto),
            }
        }
        Ok(())
    }
}
