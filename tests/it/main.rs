//! Integration tests: the real relay, real sockets, real receivers.

mod admin;
mod harness;
mod inbound;
mod openapi;
mod operations;
mod ordering;
mod policies;
mod process;
mod sweep;
mod verify;
