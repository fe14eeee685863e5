//! Integration tests: the real relay, real sockets, real receivers.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod budgets;
mod cli;
mod console;
mod disk;
mod dist;
mod health;
mod inbound;
mod logs;
mod openapi;
mod operations;
mod ordering;
mod policies;
mod process;
mod reload;
mod replies;
mod routing;
mod sweep;
mod tls;
mod upgrade;
mod verify;
