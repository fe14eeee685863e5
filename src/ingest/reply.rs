//! Sync replies, the ingest side: a source with `reply` answers the
//! provider with its reply destination's answer to the message's first
//! attempt, when that is a 2xx within `timeout`, and with the configured
//! fallback otherwise. The webhook is stored durably first, as any other;
//! waiting changes only what the provider is told, never what is delivered.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::ReplyConfig;
use crate::delivery::reply::AppAnswer;
use crate::delivery::Control;
use crate::model::Seq;
use crate::store::OnStaged;

/// A source's `reply`, with the control of the destination that answers.
pub(super) struct SyncRoute {
    pub config: ReplyConfig,
    pub control: Arc<Control>,
}

impl SyncRoute {
    /// A provider about to wait: the appender's hook registers it under the
    /// message's seq before any worker can see the message.
    pub fn claim(&self) -> (OnStaged, Claim) {
        let (tx, rx) = oneshot::channel();
        let control = self.control.clone();
        let staged = Arc::new(OnceLock::new());
        let seq = staged.clone();
        let hook = OnStaged {
            from: self.config.destination.clone(),
            hook: Box::new(move |s| {
                let _ = seq.set(s);
                control.replies.register(s, tx);
            }),
        };
        let claim = Claim {
            rx: Some(rx),
            control: self.control.clone(),
            staged,
        };
        (hook, claim)
    }
}

/// The provider's side of a claim.
pub(super) struct Claim {
    rx: Option<oneshot::Receiver<AppAnswer>>,
    control: Arc<Control>,
    /// The seq the hook registered the waiter under, once it ran.
    staged: Arc<OnceLock<Seq>>,
}

impl Claim {
    /// Asks the worker to start `seq` (now durable) at once and waits for
    /// its answer until `deadline`; `None`: answer with the fallback.
    pub async fn answer(mut self, seq: Seq, deadline: Instant) -> Option<AppAnswer> {
        if Instant::now() >= deadline {
            return None;
        }
        let rx = self.rx.take()?;
        let waiting = Waiting {
            rx,
            control: &self.control,
            seq,
        };
        self.control.replies.start(seq);
        waiting.wait(deadline).await
    }
}

/// A claim never waited on (a failed append, a duplicate, a provider gone
/// during the append) leaves no waiter behind.
impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Some(seq) = self.staged.get() {
                self.control.replies.forget(*seq);
            }
        }
    }
}

/// A registered waiter; forgotten however the wait ends (answer, timeout,
/// the provider gone), so the table holds no waiter nobody waits on.
struct Waiting<'a> {
    rx: oneshot::Receiver<AppAnswer>,
    control: &'a Control,
    seq: Seq,
}

impl Waiting<'_> {
    async fn wait(mut self, deadline: Instant) -> Option<AppAnswer> {
        tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.rx.close();
        self.control.replies.forget(self.seq);
    }
}

/// The answer the provider gets: the app's (status, `content-type`, body;
/// nothing hop-by-hop) or the fallback.
pub(super) fn response(answer: Option<AppAnswer>, fallback: &ReplyConfig) -> Response<Full<Bytes>> {
    let (status, content_type, content_encoding, body) = match answer {
        Some(a) => (a.status, a.content_type, a.content_encoding, a.body),
        None => (
            fallback.status,
            Some(fallback.content_type.clone()),
            None,
            fallback.body.clone(),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_ENCODING, content_encoding),
    ] {
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
    resp
}
