//! The storage seam: one relay's sled store or the fleet's JetStream, behind
//! the calls delivery and the admin API make about one destination and one
//! message (its record, its attempts, its dead letter, the destination's
//! operator state). Ingest reaches either through [`crate::store::Appender`].
//! How a destination's messages are fed to its worker differs (a cursor
//! over the sled log, a JetStream consumer), and stays in `delivery`.

use std::sync::Arc;

use crate::fleet::Fleet;
use crate::model::{DestinationName, Seq};
use crate::store::{
    Attempt, DeadLetter, DestinationState, Latest, Message, RetryRun, Store, StoreError,
};

/// Where the log and the delivery state live.
#[derive(Clone)]
pub enum Backend {
    Sled(Store),
    Fleet(Arc<Fleet>),
}

impl Backend {
    /// The sled store, when this relay runs on one.
    pub fn sled(&self) -> Option<&Store> {
        match self {
            Backend::Sled(s) => Some(s),
            Backend::Fleet(_) => None,
        }
    }

    /// One stored message (sled: read on the blocking pool).
    pub async fn message(&self, seq: Seq) -> Result<Option<Message>, StoreError> {
        match self {
            Backend::Sled(s) => s.blocking(move |s| s.log().message(seq)).await,
            Backend::Fleet(f) => Ok(f.message(seq).await?),
        }
    }

    /// The latest attempt of `seq` at `dest`.
    pub async fn latest(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Option<Latest>, StoreError> {
        match self {
            Backend::Sled(s) => s.attempts().latest(dest, seq),
            Backend::Fleet(f) => Ok(f.latest(dest, seq).await?),
        }
    }

    /// Every attempt of `seq` at `dest`, oldest first.
    pub async fn attempts(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Vec<Attempt>, StoreError> {
        match self {
            Backend::Sled(s) => s.attempts().list(dest, seq),
            Backend::Fleet(f) => Ok(f.history(dest, seq).await?.attempts),
        }
    }

    /// Records attempt `n` of `seq` with the retry run it leaves, if any.
    pub async fn record(
        &self,
        dest: &DestinationName,
        seq: Seq,
        n: u32,
        attempt: &Attempt,
        run: Option<&RetryRun>,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.attempts().record_in(dest, seq, n, attempt, run),
            Backend::Fleet(f) => Ok(f.record(dest, seq, n, attempt, run).await?),
        }
    }

    pub async fn dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<Option<DeadLetter>, StoreError> {
        match self {
            Backend::Sled(s) => s.dead_letters().get(dest, seq),
            Backend::Fleet(f) => Ok(f.dead_letter(dest, seq).await?),
        }
    }

    pub async fn add_dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
        dead: &DeadLetter,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.dead_letters().add(dest, seq, dead),
            Backend::Fleet(f) => Ok(f.add_dead_letter(dest, seq, dead).await?),
        }
    }

    pub async fn remove_dead_letter(
        &self,
        dest: &DestinationName,
        seq: Seq,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.dead_letters().remove(dest, seq),
            Backend::Fleet(f) => Ok(f.remove_dead_letter(dest, seq).await?),
        }
    }

    /// A destination's operator state (paused, blocked, retry epoch, replay end).
    pub async fn state(&self, dest: &DestinationName) -> Result<DestinationState, StoreError> {
        match self {
            Backend::Sled(s) => s.destinations().get(dest),
            Backend::Fleet(f) => Ok(f.state(dest).await?),
        }
    }

    /// Changes a destination's operator state; returns the new one.
    pub async fn update_state(
        &self,
        dest: &DestinationName,
        f: impl Fn(&mut DestinationState),
    ) -> Result<DestinationState, StoreError> {
        match self {
            Backend::Sled(s) => s.destinations().update(dest, f),
            Backend::Fleet(fl) => Ok(fl.update_state(dest, f).await?),
        }
    }
}
