//! Latency and size histograms shared by the stages that observe them and the
//! admin `/metrics` page that renders them. Buckets are fixed here, once.
//! Also the log target of the per-webhook lines.

use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The `tracing` target of the one `info` line per accepted webhook and per
/// delivered message, so `RUST_LOG=info,hookrelay::webhooks=warn` quiets
/// exactly them (failed attempts, dead letters and refusals keep their own
/// targets and stay).
pub const WEBHOOKS: &str = "hookrelay::webhooks";

/// A histogram of seconds, 1 ms to ~16 s.
#[derive(Debug, Clone)]
pub struct Seconds(pub Histogram);

impl Default for Seconds {
    fn default() -> Self {
        Seconds(Histogram::new(exponential_buckets(0.001, 2.0, 15)))
    }
}

impl Seconds {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// A histogram of counts, 1 to 1024.
#[derive(Debug, Clone)]
pub struct Count(pub Histogram);

impl Default for Count {
    fn default() -> Self {
        Count(Histogram::new(exponential_buckets(1.0, 2.0, 11)))
    }
}

impl Count {
    /// Records one count.
    pub fn observe(&self, n: usize) {
        self.0.observe(n as f64);
    }
}
