//! The store's one error type. Owns the classification callers branch on;
//! must not map errors to HTTP answers (ingest and admin do, at their edge).

use std::path::PathBuf;
use std::sync::Arc;

use super::codec::CodecError;
use crate::model::Seq;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("data dir was written by a newer hookrelay (format {0})")]
    NewerFormat(u32),
    /// Every writer of a batch hears the one cause, hence the `Arc`.
    #[error("append batch failed: {0}")]
    BatchFailed(#[source] Arc<StoreError>),
    #[error("an earlier sync failed; restart to recover from disk")]
    Poisoned,
    /// The appender is gone: the relay is shutting down.
    #[error("storage is shutting down")]
    Closed,
    /// A store call on the blocking pool panicked or was cancelled.
    #[error("blocking store task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    #[error("message {0} is missing chunks")]
    Truncated(Seq),
    #[error("{0} other store handle(s) still open")]
    StillOpen(usize),
}

impl StoreError {
    /// The store call itself never finished (its task panicked or was
    /// cancelled), as opposed to the store reporting a failure: nothing says
    /// the disk is at fault.
    pub fn is_task_failure(&self) -> bool {
        matches!(self, StoreError::TaskFailed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_keeps_its_cause() {
        let e = StoreError::BatchFailed(Arc::new(StoreError::Truncated(Seq(3))));
        assert!(!e.is_task_failure());
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("message 3 is missing chunks"));
    }
}
