//! Operator events: the relay's reports about itself, appended to its own
//! log under the reserved source [`SOURCE`], so they are durable, ordered,
//! replayable and routed like webhooks (filters and transforms turn them
//! into Slack or Discord messages). Owns the event bodies, their merging and
//! the watcher that notices failing destinations and the disk budget; the
//! store and delivery only report what happened.
//!
//! Bounded: repeats of one type for one destination merge into the next one
//! sent (at most one a minute, carrying `"repeats": n`), all events together
//! are capped per minute, the queue to the appender is small and full means
//! dropped (logged), and nothing is stored while no destination lists
//! `hookrelay` in its `sources`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::delivery::Control;
use crate::model::{DestinationName, Seq, SourceName};
use crate::store::{Appender, NewMessage};

/// The source name of operator events; no `[[source]]` may take it.
pub const SOURCE: &str = "hookrelay";
/// Stored header naming the destination an event is about; that destination
/// never receives the event.
pub const ABOUT_HEADER: &str = "x-hookrelay-about";
/// One event per type and destination per this long; the rest merge.
pub const MERGE_WINDOW: Duration = Duration::from_secs(60);
/// At most this many events a minute in all (an event storm's bound).
const MAX_PER_MINUTE: u32 = 120;
/// Events waiting for the appender; more are dropped.
const QUEUE: usize = 256;
/// A destination is reported failing once its deliveries have failed this long.
pub const FAILING_AFTER: Duration = Duration::from_secs(60);
/// How often the watcher looks at destinations and the disk budget.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    DestinationFailing,
    DestinationRecovered,
    DestinationBlocked,
    MessageDeadLettered,
    StorageOverBudget,
    StorageRecovered,
    ConfigReloaded,
    ConfigReloadFailed,
    RelayStarted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DestinationFailing => "destination.failing",
            Kind::DestinationRecovered => "destination.recovered",
            Kind::DestinationBlocked => "destination.blocked",
            Kind::MessageDeadLettered => "message.dead_lettered",
            Kind::StorageOverBudget => "storage.over_budget",
            Kind::StorageRecovered => "storage.recovered",
            Kind::ConfigReloaded => "config.reloaded",
            Kind::ConfigReloadFailed => "config.reload_failed",
            Kind::RelayStarted => "relay.started",
        }
    }
}

/// What is merged per (type, destination): when the last one went out, and
/// how many were held back since.
#[derive(Default)]
struct Gate {
    last: HashMap<(Kind, Option<DestinationName>), (Instant, u64)>,
    minute: Option<Instant>,
    in_minute: u32,
}

/// Where events are sent from; cheap to clone. A handle whose relay has no
/// subscriber (or none yet) drops everything.
#[derive(Clone, Default)]
pub struct Events {
    tx: Option<mpsc::Sender<Value>>,
    gate: Arc<Mutex<Gate>>,
}

impl Events {
    /// A handle that sends nothing (no destination listens).
    pub fn none() -> Events {
        Events::default()
    }

    /// Appends events through `appender` until `shutdown` (or every handle
    /// is gone), when a destination subscribes; else a handle that drops
    /// them.
    pub fn spawn(
        subscribed: bool,
        appender: Appender,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Events {
        if !subscribed {
            return Events::none();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tracker.spawn(append_loop(appender, rx, shutdown));
        Events {
            tx: Some(tx),
            gate: Arc::default(),
        }
    }

    /// Reports `kind` (about destination `about`, if any) with `details`
    /// merged into the body `{"type", "at", "destination"?, ...}`.
    pub fn emit(&self, kind: Kind, about: Option<&DestinationName>, details: Value) {
        let Some(tx) = &self.tx else {
            return;
        };
        let Some(repeats) = self.admit(kind, about) else {
            return;
        };
        let mut body = json!({
            "type": kind.as_str(),
            "at": crate::time::rfc3339(crate::time::now_ms()),
        });
        if let (Some(map), Value::Object(more)) = (body.as_object_mut(), details) {
            if let Some(d) = about {
                map.insert("destination".into(), json!(d));
            }
            if repeats > 0 {
                map.insert("repeats".into(), json!(repeats));
            }
            map.extend(more);
        }
        match tx.try_send(body) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    event = kind.as_str(),
                    "operator event dropped: the queue is full"
                )
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(
                    event = kind.as_str(),
                    "operator event dropped: events have stopped"
                )
            }
        }
    }

    /// Whether an event may go now; how many of its kind were merged into it.
    fn admit(&self, kind: Kind, about: Option<&DestinationName>) -> Option<u64> {
        let mut g = self.gate.lock().ok()?;
        let now = Instant::now();
        if g.minute
            .is_none_or(|m| now.duration_since(m) >= Duration::from_secs(60))
        {
            g.minute = Some(now);
            g.in_minute = 0;
        }
        let key = (kind, about.cloned());
        if let Some((last, held)) = g.last.get_mut(&key) {
            if now.duration_since(*last) < MERGE_WINDOW {
                *held += 1;
                return None;
            }
        }
        if g.in_minute >= MAX_PER_MINUTE {
            return None;
        }
        g.in_minute += 1;
        let merged = g.last.insert(key, (now, 0)).map_or(0, |(_, held)| held);
        Some(merged)
    }
}

async fn append_loop(
    appender: Appender,
    mut rx: mpsc::Receiver<Value>,
    shutdown: CancellationToken,
) {
    let source: SourceName = match SOURCE.parse() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut draining = false;
    loop {
        let body = if draining {
            match rx.recv().await {
                Some(b) => b,
                None => return,
            }
        } else {
            tokio::select! {
                b = rx.recv() => match b { Some(b) => b, None => return },
                _ = shutdown.cancelled() => {
                    // What was reported before the end is still stored: the
                    // appender outlives this task.
                    rx.close();
                    draining = true;
                    continue;
                }
            }
        };
        let kind = body["type"].as_str().map(str::to_owned);
        let about = body["destination"]
            .as_str()
            .map(|d| vec![(ABOUT_HEADER.to_owned(), d.as_bytes().to_vec())])
            .unwrap_or_default();
        let msg = NewMessage {
            source: source.clone(),
            event_type: kind.clone(),
            content_type: Some("application/json".into()),
            query: None,
            headers: about,
            body: body.to_string().into_bytes(),
            dedup: None,
            on_staged: None,
        };
        match appender.append(msg).await {
            Ok(_) => tracing::info!(
                event = kind.as_deref().unwrap_or(""),
                "operator event stored"
            ),
            Err(e) => tracing::warn!(error = %e, "operator event not stored"),
        }
    }
}

/// Whether a message is an operator event about `dest` (which must not receive it).
pub fn is_about(
    source: &SourceName,
    headers: &[(String, Vec<u8>)],
    dest: &DestinationName,
) -> bool {
    source.as_str() == SOURCE
        && headers
            .iter()
            .any(|(k, v)| k == ABOUT_HEADER && v.as_slice() == dest.as_str().as_bytes())
}

/// Watches the destinations' health and the disk budget, and reports changes:
/// failing for [`FAILING_AFTER`], recovered, over budget, back under it. In a
/// fleet the health is the fleet's, and of the relays that see a destination
/// fail or recover, the one that marks it so in the fleet's bucket reports it.
pub fn spawn_watcher(
    events: Events,
    (controls, backend): (Vec<(DestinationName, Arc<Control>)>, Backend),
    disk: Arc<crate::store::DiskGuard>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    if events.tx.is_none() {
        return;
    }
    tracker.spawn(async move {
        let mut watch = Watch::default();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let seen = match &backend {
                Backend::Sled(_) => controls.iter().map(|(name, c)| local_health(name, c)).collect(),
                Backend::Fleet(fleet) => fleet_health(fleet, &controls, &mut watch).await,
            };
            let over = disk.refusing();
            for (kind, about, details) in watch.step(crate::time::now_ms(), &seen, over) {
                if let (Backend::Fleet(fleet), Some(dest)) = (&backend, &about) {
                    if matches!(kind, Kind::DestinationFailing | Kind::DestinationRecovered) {
                        let failing = kind == Kind::DestinationFailing;
                        match fleet.flip_reported(dest, failing).await {
                            Ok(true) => {}
                            // Another relay reported it.
                            Ok(false) => continue,
                            Err(e) => {
                                tracing::warn!(destination = %dest, error = %e, "cannot mark a destination's health as reported");
                                continue;
                            }
                        }
                    }
                }
                events.emit(kind, about.as_ref(), details);
            }
        }
    });
}

/// What this relay's own attempts at `name` showed.
fn local_health(name: &DestinationName, c: &Control) -> Health {
    let last = c.last_attempt();
    Health {
        name: name.clone(),
        failing_since_ms: c.failing_since_ms(),
        last_error: last.as_ref().and_then(|a| a.error.clone()),
        last_status: last.and_then(|a| a.status),
    }
}

/// What every relay's attempts showed, each destination's report state
/// taken from the fleet (a destination whose health cannot be read is left
/// out this round).
async fn fleet_health(
    fleet: &crate::fleet::Fleet,
    controls: &[(DestinationName, Arc<Control>)],
    watch: &mut Watch,
) -> Vec<Health> {
    let mut seen = Vec::with_capacity(controls.len());
    for (name, _) in controls {
        let h = match fleet.health(name).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(destination = %name, error = %e, "cannot read the destination's health");
                continue;
            }
        };
        watch.failing.insert(name.clone(), h.reported_failing);
        let last = h.last_attempt.map(|(_, a)| a);
        seen.push(Health {
            name: name.clone(),
            failing_since_ms: h.failing_since_ms,
            last_error: last.as_ref().and_then(|a| a.error.clone()),
            last_status: last.and_then(|a| a.status),
        });
    }
    seen
}

/// One destination's health as the watcher sees it.
#[derive(Debug, Clone)]
pub struct Health {
    pub name: DestinationName,
    pub failing_since_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
}

/// What the watcher has reported so far: the changes it still owes.
#[derive(Debug, Default)]
pub struct Watch {
    failing: HashMap<DestinationName, bool>,
    over_budget: bool,
}

impl Watch {
    /// The events due at `now_ms` for these destinations and budget state.
    pub fn step(
        &mut self,
        now_ms: u64,
        destinations: &[Health],
        over_budget: bool,
    ) -> Vec<(Kind, Option<DestinationName>, Value)> {
        let mut out = Vec::new();
        let after = FAILING_AFTER.as_millis() as u64;
        for h in destinations {
            let reported = self.failing.get(&h.name).copied().unwrap_or(false);
            match h.failing_since_ms {
                Some(since) if !reported && now_ms.saturating_sub(since) >= after => {
                    let details = json!({
                        "failing_since": crate::time::rfc3339(since),
                        "last_error": h.last_error,
                        "last_status": h.last_status,
                    });
                    out.push((Kind::DestinationFailing, Some(h.name.clone()), details));
                    self.failing.insert(h.name.clone(), true);
                }
                None if reported => {
                    out.push((Kind::DestinationRecovered, Some(h.name.clone()), json!({})));
                    self.failing.insert(h.name.clone(), false);
                }
                _ => {}
            }
        }
        if over_budget != self.over_budget {
            let kind = if over_budget {
                Kind::StorageOverBudget
            } else {
                Kind::StorageRecovered
            };
            out.push((kind, None, json!({})));
            self.over_budget = over_budget;
        }
        out
    }
}

/// The body details of a dead letter.
pub fn dead_letter(seq: Seq, attempts: u32, last_error: &str) -> Value {
    json!({ "seq": seq.0, "attempts": attempts, "last_error": last_error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(failing_since_ms: Option<u64>) -> Health {
        Health {
            name: "app".parse().unwrap(),
            failing_since_ms,
            last_error: Some("HTTP 503".into()),
            last_status: Some(503),
        }
    }

    #[test]
    fn failing_is_reported_after_a_minute_once_and_recovery_after_it() {
        let mut w = Watch::default();
        let kinds = |v: Vec<(Kind, Option<DestinationName>, Value)>| -> Vec<Kind> {
            v.into_iter().map(|e| e.0).collect()
        };
        assert!(w.step(10_000, &[health(Some(1_000))], false).is_empty());
        let due = w.step(61_000, &[health(Some(1_000))], false);
        assert_eq!(due[0].2["last_error"], "HTTP 503");
        assert_eq!(kinds(due), [Kind::DestinationFailing]);
        assert!(
            w.step(200_000, &[health(Some(1_000))], false).is_empty(),
            "once"
        );
        assert_eq!(
            kinds(w.step(201_000, &[health(None)], false)),
            [Kind::DestinationRecovered]
        );
        assert!(w.step(202_000, &[health(None)], false).is_empty());
        // Recovering before the minute is up reports nothing at all.
        assert!(w.step(203_000, &[health(Some(202_500))], false).is_empty());
        assert!(w.step(204_000, &[health(None)], false).is_empty());
        assert_eq!(kinds(w.step(205_000, &[], true)), [Kind::StorageOverBudget]);
        assert!(w.step(206_000, &[], true).is_empty());
        assert_eq!(kinds(w.step(207_000, &[], false)), [Kind::StorageRecovered]);
    }

    #[test]
    fn repeats_merge_per_type_and_destination_and_storms_are_capped() {
        let (tx, mut rx) = mpsc::channel(1000);
        let events = Events {
            tx: Some(tx),
            gate: Arc::default(),
        };
        let a: DestinationName = "a".parse().unwrap();
        let b: DestinationName = "b".parse().unwrap();
        for _ in 0..5 {
            events.emit(Kind::MessageDeadLettered, Some(&a), json!({}));
        }
        events.emit(Kind::MessageDeadLettered, Some(&b), json!({}));
        events.emit(Kind::DestinationBlocked, Some(&a), json!({}));
        let mut got = Vec::new();
        while let Ok(v) = rx.try_recv() {
            got.push((
                v["type"].as_str().unwrap().to_owned(),
                v["destination"].clone(),
            ));
        }
        assert_eq!(got.len(), 3, "{got:?}");
        // A storm of distinct destinations stops at the cap.
        for i in 0..500 {
            let d: DestinationName = format!("d{i}").parse().unwrap();
            events.emit(Kind::MessageDeadLettered, Some(&d), json!({}));
        }
        let mut more = 0;
        while rx.try_recv().is_ok() {
            more += 1;
        }
        assert_eq!(more + 3, MAX_PER_MINUTE as usize);
    }
}
