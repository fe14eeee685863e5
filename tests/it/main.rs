//! Integration tests: the real relay, real sockets, real receivers.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cli;
mod dist;
mod inbound;
mod logs;
mod openapi;
mod operations;
mod ordering;
mod policies;
mod process;
mod sweep;
mod upgrade;
mod verify;
