//! Integration tests: the real relay, real sockets, real receivers.

mod admin;
mod harness;
mod inbound;
mod openapi;
mod ordering;
mod process;
mod verify;
