//! One harness for every integration test: the relay in-process or as a
//! child process on ephemeral ports with a temp data dir, real HTTP receivers
//! that record what arrives, wait-until helpers, and a typed config builder.
//!
//! - [`config`]: `RelayConfig`, `Source`, `Dest`, `Verify`, `Retry` rendering relay.toml, and `write_file`;
//! - [`load`]: closed-loop senders as providers behave, and the checks of what a receiver saw (the crash loop and the power-loss test);
//! - [`relay`]: `TestRelay`, the relay in this process (`hookrelay::run`);
//! - [`process`]: `RelayProcess`, `hookrelay serve` as a child, found by its `--ready-file`;
//! - [`receiver`]: `Receiver`, a scriptable HTTP destination (status, headers, delay);
//! - [`requests`]: a client, `post`, `get`, `json_request`;
//! - [`tls`]: `TestPki` (a private CA issuing server certificates with `rcgen`), an HTTPS client (`https_send`, HTTP/1.1 or h2 by ALPN);
//! - [`store`]: `StoreView`, the one place tests read a stopped relay's store;
//! - [`wait`]: `wait_until` / `wait_for` with a deadline, and a blocking `wait_until_blocking`;
//! - `powercut.rs`: a FUSE file system that drops unsynced writes on command; not a module here, the power-loss test includes it alone (`#[path]`) so that no other test crate builds FUSE code.
//!
//! Each test crate uses part of it.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod load;
pub mod process;
pub mod receiver;
pub mod relay;
pub mod requests;
pub mod store;
pub mod tls;
pub mod wait;

pub use self::config::{write_file, Dest, RelayConfig, Retry, Source, Toml, Verify};
pub use self::process::{run_cli, RelayProcess, Running};
pub use self::receiver::{answer, Received, Receiver, Script};
pub use self::relay::TestRelay;
pub use self::requests::{call, client, get, json_request, post, post_ok, Answer};
pub use self::store::StoreView;
pub use self::tls::{https_send, HttpsAnswer, Leaf, Proto, TestPki};
pub use self::wait::{poll_until, wait_for, wait_until, wait_until_blocking};
