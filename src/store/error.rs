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
    /// The fleet's JetStream (`backend = "nats"`).
    #[error("{0}")]
    Fleet(#[from] crate::fleet::FleetError),
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
    #[error("storage over max_disk_bytes or under min_free_bytes")]
    OverBudget,
    #[error("storage is shutting down")]
    Closed,
    /// A store call on the blocking pool panicked or was cancelled.
    #[error("blocking store task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    #[error("message {0} is missing parts")]
    Truncated(Seq),
    /// Appends fail rather than let sled's meta page grow past its blob
    /// threshold (see `log/segments.rs`).
    #[error("the log has {0} segments, the most it may have; retention must free some")]
    TooManySegments(usize),
    /// The data dir could not be brought to the current format.
    #[error("data dir migration failed: {0}")]
    Migration(String),
    #[error("{0} other store handle(s) still open")]
    StillOpen(usize),
    /// sled's lock on the data dir was still held after the wait: another
    /// process (or a store in this one) has it open.
    #[error(
        "data dir {} is in use by another hookrelay ({}); stop it or use another data_dir",
        .dir.display(),
        holder(*.pid)
    )]
    InUse {
        dir: PathBuf,
        /// The lock holder's pid, when the system says (Linux `/proc/locks`).
        pid: Option<u32>,
    },
}

/// Who holds the lock, for [`StoreError::InUse`].
fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => format!("pid {pid}, this very process"),
        Some(pid) => format!("pid {pid}"),
        None => "its pid could not be found".to_string(),
    }
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
        assert_eq!(source.as_deref(), Some("message 3 is missing parts"));
    }

    #[test]
    fn a_data_dir_in_use_names_the_dir_and_the_holder_when_known() {
        let e = StoreError::InUse {
            dir: PathBuf::from("/x/data"),
            pid: Some(1234),
        };
        assert_eq!(
            e.to_string(),
            "data dir /x/data is in use by another hookrelay (pid 1234); \
             stop it or use another data_dir"
        );
        let e = StoreError::InUse {
            dir: PathBuf::from("/x/data"),
            pid: None,
        };
        assert_eq!(
            e.to_string(),
            "data dir /x/data is in use by another hookrelay (its pid could not be found); \
             stop it or use another data_dir"
        );
    }
}
