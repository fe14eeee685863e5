//! Tree `dest`: each destination's operator state (paused, blocked on a
//! seq), key the destination name, value a versioned [`DestinationState`].
//! Survives restarts. The admin API pauses and resumes, delivery blocks;
//! changes are compare-and-swap so neither overwrites the other. Must not
//! touch any other tree.

use super::codec::{self, DestinationState};
use super::StoreError;
use crate::model::DestinationName;

/// Handle to the destinations' operator state; cheap to clone.
#[derive(Clone)]
pub struct Destinations {
    tree: sled::Tree,
}

impl Destinations {
    pub(super) fn new(tree: sled::Tree) -> Destinations {
        Destinations { tree }
    }

    /// The tree, for the cursors' rewind transaction.
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Operator state of a destination.
    pub fn get(&self, dest: &DestinationName) -> Result<DestinationState, StoreError> {
        match self.tree.get(dest.as_str())? {
            Some(v) => Ok(codec::decode_state(&v)?),
            None => Ok(DestinationState::default()),
        }
    }

    /// Replaces the operator state of a destination.
    pub fn set(&self, dest: &DestinationName, state: &DestinationState) -> Result<(), StoreError> {
        self.tree
            .insert(dest.as_str(), codec::encode_state(state)?)?;
        Ok(())
    }

    /// Changes a destination's operator state atomically (compare-and-swap
    /// loop), so an operator's pause and a worker's block never overwrite each
    /// other. Returns the new state.
    pub fn update(
        &self,
        dest: &DestinationName,
        change: impl Fn(&mut DestinationState),
    ) -> Result<DestinationState, StoreError> {
        loop {
            let current = self.tree.get(dest.as_str())?;
            let mut state = match &current {
                Some(v) => codec::decode_state(v)?,
                None => DestinationState::default(),
            };
            change(&mut state);
            let new = codec::encode_state(&state)?;
            if self
                .tree
                .compare_and_swap(dest.as_str(), current, Some(new))?
                .is_ok()
            {
                return Ok(state);
            }
        }
    }
}
