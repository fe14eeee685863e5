//! Integration tests: the real relay, real sockets, real receivers.

mod admin;
mod harness;
mod inbound;
mod ordering;
mod process;
mod verify;
