//! The one place tests read a stopped relay's store, so that a renamed
//! `Store` method is a fix here only.

use std::path::Path;

use hookrelay::model::{DestinationName, Seq};
use hookrelay::store::Store;

/// A stopped relay's store, asked about by names and numbers.
pub struct StoreView(Store);

fn dest(name: &str) -> DestinationName {
    name.parse().expect("a valid destination name")
}

/// A dead letter as the store keeps it.
pub struct DeadLetter {
    pub attempts: u32,
    pub last_error: String,
}

impl StoreView {
    pub fn open(data: &Path) -> StoreView {
        StoreView(Store::open(data).expect("open the relay's store after it stopped"))
    }

    pub fn last_seq(&self) -> u64 {
        self.0.log().last_seq().unwrap().0
    }

    pub fn has_message(&self, seq: u64) -> bool {
        self.0.log().message(Seq(seq)).unwrap().is_some()
    }

    /// The `webhook-id` and body stored under `seq`.
    pub fn message(&self, seq: u64) -> Option<(String, Vec<u8>)> {
        self.0
            .log()
            .message(Seq(seq))
            .expect("read a message")
            .map(|m| (m.id.to_string(), m.body))
    }

    pub fn attempt_count(&self, destination: &str, seq: u64) -> usize {
        self.0
            .attempts()
            .list(&dest(destination), Seq(seq))
            .unwrap()
            .len()
    }

    /// The stored next retry time (wall-clock ms) of `seq` at `destination`:
    /// its latest attempt's retry run, if that is still waiting.
    pub fn retry_at_ms(&self, destination: &str, seq: u64) -> Option<u64> {
        let latest = self.0.attempts().latest(&dest(destination), Seq(seq));
        latest.unwrap()?.run?.retry_at_ms
    }

    pub fn cursor(&self, destination: &str) -> u64 {
        self.0.cursors().get(&dest(destination)).unwrap().0
    }

    pub fn dead_letter(&self, destination: &str, seq: u64) -> Option<DeadLetter> {
        self.0
            .dead_letters()
            .get(&dest(destination), Seq(seq))
            .unwrap()
            .map(|d| DeadLetter {
                attempts: d.attempts,
                last_error: d.last_error,
            })
    }

    pub fn dead_letter_count(&self, destination: &str) -> usize {
        self.0.dead_letters().count(&dest(destination))
    }
}
