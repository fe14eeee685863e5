//! `/metrics`: Prometheus (OpenMetrics text) exposition through
//! `prometheus-client`. Counters live where the work happens (ingest stats,
//! delivery controls, store); each scrape takes a snapshot of them. Label values
//! come only from config names and fixed outcome words, never from requests.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Admin;
use crate::backend::Backend;
use crate::ingest::RejectReason;

/// Renders the metrics page.
#[derive(Debug, Default)]
pub struct Metrics;

/// Histograms by one label value.
type Series = Vec<(String, Histogram)>;

/// One destination's gauges.
#[derive(Debug)]
struct DestRow {
    name: String,
    lag: u64,
    in_flight: u64,
    dead_letters: u64,
    oldest_pending_seconds: u64,
    state: &'static str,
}

/// One scrape's values.
#[derive(Debug, Default)]
struct Snapshot {
    /// (source, outcome, count)
    received: Vec<(String, &'static str, u64)>,
    /// (destination, outcome, count)
    deliveries: Vec<(String, &'static str, u64)>,
    /// (source, answer, count), for sources with `reply`
    replies: Vec<(String, &'static str, u64)>,
    destinations: Vec<DestRow>,
    log_entries: u64,
    storage_bytes: u64,
    /// (destination, attempt durations)
    delivery_duration: Series,
    /// (source, time to the durable answer)
    ingest_duration: Series,
    flush_batch_size: Option<Histogram>,
    sync_duration: Option<Histogram>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics
    }

    /// The current metrics as an HTTP answer.
    pub async fn render(&self, admin: &Admin) -> Response<Full<Bytes>> {
        // sled reads file metadata for this: off the async threads.
        let size = match admin.store() {
            Ok(store) => store.blocking(|s| s.size_on_disk()).await.unwrap_or(0),
            Err(_) => 0,
        };
        let snapshot = snapshot(admin, size).await;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(error = %e, "metrics encoding failed");
            return crate::listen::error(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable");
        }
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        resp
    }
}

async fn snapshot(admin: &Admin, storage_bytes: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for (src, st) in admin.sources().iter() {
        let name = src.name.to_string();
        s.received
            .push((name.clone(), "stored", st.received.load(Relaxed)));
        s.received
            .push((name.clone(), "duplicate", st.duplicates.load(Relaxed)));
        s.received
            .push((name.clone(), "handshake", st.handshakes.load(Relaxed)));
        for reason in RejectReason::ALL {
            s.received
                .push((name.clone(), reason.as_str(), st.rejected_for(reason)));
        }
        if src.reply.is_some() {
            let app = st.replied_by_app.load(Relaxed);
            let fallback = st.replied_with_fallback.load(Relaxed);
            s.replies.push((name.clone(), "app", app));
            s.replies.push((name.clone(), "fallback", fallback));
        }
        s.ingest_duration.push((name, st.ingest_duration.0.clone()));
    }
    let head = *admin.head.borrow();
    for entry in admin.destinations().iter() {
        let (d, c) = &**entry;
        let name = d.name.to_string();
        s.delivery_duration
            .push((name.clone(), c.duration.0.clone()));
        let (delivered, failed, dead) = c.counters();
        s.deliveries.push((name.clone(), "delivered", delivered));
        s.deliveries.push((name.clone(), "failed", failed));
        s.deliveries.push((name.clone(), "dead_lettered", dead));
        s.deliveries.push((name.clone(), "skipped", c.skipped()));
        let now = crate::time::now_ms();
        let state = admin.backend.state(&d.name).await.unwrap_or_default();
        let (lag, oldest, dead_letters, failing) = match &admin.backend {
            Backend::Sled(store) => {
                let cursor = store.cursors().get(&d.name).unwrap_or_default();
                let pending = super::health::pending(store, d, cursor, head).await;
                let (lag, oldest) = match pending {
                    Ok(p) => (p.lag, p.oldest_received_ms),
                    Err(_) => (head.0.saturating_sub(cursor.0), None),
                };
                let failing = c.failing_since_ms().is_some();
                (
                    lag,
                    oldest,
                    store.dead_letters().count(&d.name) as u64,
                    failing,
                )
            }
            // A scrape reads the consumer and the fleet's health, not the
            // dead letters (a scan of keys).
            Backend::Fleet(fleet) => {
                let lag = fleet.position(&d.name).await.map_or(0, |(_, lag)| lag);
                let health = fleet.health(&d.name).await.unwrap_or_default();
                (lag, None, 0, health.failing_since_ms.is_some())
            }
        };
        s.destinations.push(DestRow {
            name: name.clone(),
            lag,
            in_flight: c.in_flight() as u64,
            dead_letters,
            oldest_pending_seconds: oldest.map_or(0, |at| now.saturating_sub(at) / 1000),
            state: super::health::state_word(&state, failing),
        });
    }
    s.storage_bytes = storage_bytes;
    if let Backend::Sled(store) = &admin.backend {
        let first = store.log().first_seq().ok().flatten();
        s.log_entries = first.map_or(0, |f| head.0.saturating_sub(f.0) + 1);
        let commit = store.commit_stats();
        s.flush_batch_size = Some(commit.batch_size.0.clone());
        s.sync_duration = Some(commit.sync_duration.0.clone());
    }
    s
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "hookrelay_received",
                "Inbound requests by source and outcome (stored, duplicate, handshake, or a rejection reason).",
                "source",
                &self.received,
            ),
            (
                "hookrelay_deliveries",
                "Delivery attempts by destination and outcome since start.",
                "destination",
                &self.deliveries,
            ),
            (
                "hookrelay_sync_replies",
                "Sync replies by source and answer (app: the destination's own, fallback: the configured one).",
                "source",
                &self.replies,
            ),
        ];
        for (name, help, label, rows) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, outcome, n) in rows {
                let labels = [(label, value.as_str()), ("outcome", outcome)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        type Pick = fn(&DestRow) -> u64;
        let gauges: [(&str, &str, Pick); 4] = [
            (
                "hookrelay_destination_lag",
                "Messages of the destination's sources after its cursor.",
                |d| d.lag,
            ),
            (
                "hookrelay_destination_in_flight",
                "Attempts in flight.",
                |d| d.in_flight,
            ),
            (
                "hookrelay_destination_dead_letters",
                "Dead letters recorded.",
                |d| d.dead_letters,
            ),
            (
                "hookrelay_destination_oldest_pending_seconds",
                "Age of the oldest message waiting for the destination (0 when none).",
                |d| d.oldest_pending_seconds,
            ),
        ];
        for (name, help, pick) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for d in &self.destinations {
                let labels = [("destination", d.name.as_str())];
                ConstGauge::new(pick(d) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "hookrelay_destination_state",
            "1 for the destination's current state (active, failing, paused, blocked), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for d in &self.destinations {
            for state in super::health::STATES {
                let labels = [("destination", d.name.as_str()), ("state", state)];
                ConstGauge::new(i64::from(d.state == state)).encode(m.encode_family(&labels)?)?;
            }
        }
        let m = enc.encode_descriptor(
            "hookrelay_log_entries",
            "Messages in the log (head minus first seq, plus one).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.log_entries as i64).encode(m)?;
        let m = enc.encode_descriptor(
            "hookrelay_storage_bytes",
            "Bytes the sled database uses on disk.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.storage_bytes as i64).encode(m)?;

        let labelled: [(&str, &str, &str, &Series); 2] = [
            (
                "hookrelay_delivery_duration_seconds",
                "Duration of each delivery attempt.",
                "destination",
                &self.delivery_duration,
            ),
            (
                "hookrelay_ingest_duration_seconds",
                "Time from an inbound request's start to its durable 200, for stored messages.",
                "source",
                &self.ingest_duration,
            ),
        ];
        for (name, help, label, series) in labelled {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (value, h) in series {
                let labels = [(label, value.as_str())];
                h.encode(m.encode_family(&labels)?)?;
            }
        }
        let unlabelled = [
            (
                "hookrelay_flush_batch_size",
                "Messages per group-commit batch.",
                &self.flush_batch_size,
            ),
            (
                "hookrelay_sync_duration_seconds",
                "Duration of one durable sync (sled flush + fdatasync).",
                &self.sync_duration,
            ),
        ];
        for (name, help, h) in unlabelled {
            if let Some(h) = h {
                h.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
            }
        }
        Ok(())
    }
}
