//! Routing: which messages a destination receives and in what shape (its
//! `event_types`, `filter` and `transform`), and each message's event type.
//! Evaluated with the config in force; pure (no store, no HTTP).

pub mod jq;
