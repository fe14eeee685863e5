//! Tree `cursors` (destination name → last finished seq, u64 BE) and tree
//! `unordered` (destination name → versioned [`UnorderedWindow`], written at a
//! clean stop and taken at the next start). A cursor means every seq at or
//! below it is finished for that destination. Delivery moves cursors forward
//! (compare-and-swap, so an operator's replay in between wins); the admin
//! API sets them. Touches one other tree, in one place: an operator's
//! rewind writes the cursor and the destination's state (`dest`) in one
//! transaction.

use super::codec::{self, DestinationState, UnorderedWindow};
use super::destinations::Destinations;
use super::StoreError;
use crate::model::{DestinationName, Seq};

/// Handle to the cursors; cheap to clone.
#[derive(Clone)]
pub struct Cursors {
    cursors: sled::Tree,
    windows: sled::Tree,
}

impl Cursors {
    pub(super) fn new(cursors: sled::Tree, windows: sled::Tree) -> Cursors {
        Cursors { cursors, windows }
    }

    /// The destination's cursor (0 when new).
    pub fn get(&self, dest: &DestinationName) -> Result<Seq, StoreError> {
        match self.cursors.get(dest.as_str())? {
            Some(v) => Ok(codec::decode_seq(&v)?),
            None => Ok(Seq(0)),
        }
    }

    /// Sets the cursor of a destination that has none yet; one it kept
    /// (a destination added back) stays.
    pub fn init_at(&self, dest: &DestinationName, seq: Seq) -> Result<(), StoreError> {
        let _ = self.cursors.compare_and_swap(
            dest.as_str(),
            None as Option<&[u8]>,
            Some(&seq.to_be_bytes()[..]),
        )?;
        Ok(())
    }

    /// Moves the destination's cursor (durable at the next flush).
    pub fn set(&self, dest: &DestinationName, seq: Seq) -> Result<(), StoreError> {
        self.cursors.insert(dest.as_str(), &seq.to_be_bytes())?;
        Ok(())
    }

    /// An operator's rewind (replay): moves the cursor to `cursor` and changes
    /// the destination's state with `change` (given the cursor it had),
    /// together, so a worker never sees one without the other. Blocking.
    pub fn rewind(
        &self,
        states: &Destinations,
        dest: &DestinationName,
        cursor: Seq,
        change: impl Fn(&mut DestinationState, Seq),
    ) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let key = dest.as_str().as_bytes();
        (&self.cursors, states.tree())
            .transaction(|(cursors, states)| {
                let mut state = match states.get(key)? {
                    Some(v) => {
                        codec::decode_state(&v).map_err(ConflictableTransactionError::Abort)?
                    }
                    None => DestinationState::default(),
                };
                let before = match cursors.get(key)? {
                    Some(v) => {
                        codec::decode_seq(&v).map_err(ConflictableTransactionError::Abort)?
                    }
                    None => Seq(0),
                };
                change(&mut state, before);
                let state =
                    codec::encode_state(&state).map_err(ConflictableTransactionError::Abort)?;
                states.insert(key, state)?;
                cursors.insert(key, &cursor.to_be_bytes())?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(e) => StoreError::Codec(e),
            })
    }

    /// Moves `dest`'s cursor from `from` to `to` only if it is still `from`
    /// (an operator's replay in between wins); true if it moved.
    pub fn advance(&self, dest: &DestinationName, from: Seq, to: Seq) -> Result<bool, StoreError> {
        let current = self.cursors.get(dest.as_str())?;
        let at = match &current {
            Some(v) => codec::decode_seq(v)?,
            None => Seq(0),
        };
        if at != from {
            return Ok(false);
        }
        let swapped =
            self.cursors
                .compare_and_swap(dest.as_str(), current, Some(&to.to_be_bytes()[..]))?;
        Ok(swapped.is_ok())
    }

    /// Saves an unordered destination's window at a graceful stop.
    pub fn save_window(
        &self,
        dest: &DestinationName,
        w: &UnorderedWindow,
    ) -> Result<(), StoreError> {
        self.windows
            .insert(dest.as_str(), codec::encode_window(w)?)?;
        Ok(())
    }

    /// Takes (reads and deletes) what [`Cursors::save_window`] saved.
    pub fn take_window(
        &self,
        dest: &DestinationName,
    ) -> Result<Option<UnorderedWindow>, StoreError> {
        let Some(v) = self.windows.remove(dest.as_str())? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_window(&v)?))
    }
}
