//! Integration tests: the real relay, real sockets, real receivers.

mod harness;
mod inbound;
mod ordering;
mod process;
mod verify;
