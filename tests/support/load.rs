//! Load as providers send it, and the checks of what arrived, shared by the
//! proof runs that kill the relay (`crash_loop.rs`) or cut its power
//! (`power_loss.rs`).
//!
//! - [`load_client`]: one closed-loop sender; message n+1 only once n was
//!   answered `200`, an unanswered one sent again first (same body, same
//!   `x-delivery-id`), and every answer recorded in a [`Ledger`];
//! - [`arrivals`], [`missing`], [`check_destination`]: what a receiver saw,
//!   held against what was acknowledged and stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::process::{Launch, RelayProcess};
use super::receiver::Receiver;
use super::requests::get;

/// How long one inbound request may go unanswered by a live relay.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// splitmix64: a fixed pseudo-random function of its input.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The unsigned integer in the environment variable `name`, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, not {v:?}")),
    )
}

/// `hookrelay serve` on `config`, quiet about single deliveries, without an
/// admin token from the environment.
pub fn relay(config: &std::path::Path) -> Launch {
    RelayProcess::command(config)
        .env("RUST_LOG", "info,hookrelay::delivery=warn")
        .env_remove("HOOKRELAY_ADMIN_TOKEN")
}

/// The relay's view of every destination.
pub async fn destinations(relay: &RelayProcess) -> Vec<serde_json::Value> {
    let a = get(&relay.admin_url("/api/v1/destinations")).await;
    assert_eq!(a.status, StatusCode::OK);
    a.json.as_array().expect("a list of destinations").clone()
}

// ---------------------------------------------------------------- senders

/// What the senders know: the answers to the messages acked.
#[derive(Default)]
pub struct Ledger {
    /// (client, n) → (seq, id) from the relay's `200`.
    pub acked: HashMap<(usize, u64), (u64, String)>,
    /// Sends that got no `200` (the relay died, or answered something else).
    pub unanswered: usize,
    /// Resends answered `"duplicate": true`: the unanswered send had been stored.
    pub stored_anyway: usize,
    /// Non-200 answers by status.
    pub refused: BTreeMap<u16, usize>,
}

/// One sender's place: the next new message, and the one to send again
/// first because its last send got no answer.
#[derive(Default)]
pub struct Sender {
    pub next: u64,
    pub pending: Option<u64>,
}

/// Client `client`'s message `n`: distinct for every (client, n).
pub fn body_of(client: usize, n: u64) -> String {
    format!("{{\"client\":{client},\"n\":{n}}}")
}

pub fn parse_body(body: &[u8]) -> Option<(usize, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((v["client"].as_u64()? as usize, v["n"].as_u64()?))
}

/// One [`load_client`] per sender, posting to `url` until `stop`.
pub fn spawn_clients(
    url: &str,
    senders: &[Arc<Mutex<Sender>>],
    stop: &Arc<AtomicBool>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    senders
        .iter()
        .enumerate()
        .map(|(k, sender)| {
            tokio::spawn(load_client(
                k,
                url.to_owned(),
                sender.clone(),
                stop.clone(),
                ledger.clone(),
                false,
            ))
        })
        .collect()
}

/// What the senders ended with: each one's count of messages, and the ledger.
pub struct Tally {
    pub sent: Vec<u64>,
    pub acked: HashMap<(usize, u64), (u64, String)>,
    pub unanswered: usize,
    pub stored_anyway: usize,
    pub refused: BTreeMap<u16, usize>,
}

/// Sends once more, to the live relay at `url`, what each sender's last
/// send left unanswered; then what the senders sent and the ledger. Every
/// message sent must have been acknowledged by then.
pub async fn finish_sending(
    url: &str,
    senders: &[Arc<Mutex<Sender>>],
    ledger: &Arc<Mutex<Ledger>>,
) -> Tally {
    for (k, sender) in senders.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        load_client(
            k,
            url.to_owned(),
            sender.clone(),
            stop,
            ledger.clone(),
            true,
        )
        .await;
        assert!(
            sender.lock().unwrap().pending.is_none(),
            "client {k}: a live relay answered"
        );
    }
    let sent: Vec<u64> = senders.iter().map(|s| s.lock().unwrap().next).collect();
    let l = ledger.lock().unwrap();
    assert_eq!(
        l.acked.len() as u64,
        sent.iter().sum::<u64>(),
        "every message sent was acked in the end"
    );
    Tally {
        sent,
        acked: l.acked.clone(),
        unanswered: l.unanswered,
        stored_anyway: l.stored_anyway,
        refused: l.refused.clone(),
    }
}

/// One sender, as a provider behaves: message n+1 only once n was answered
/// `200`; a message without an answer is sent again (same body, same
/// delivery id) before anything new. Stops at `stop` or at the first send
/// without an answer (the relay is gone); with `once`, after one send.
pub async fn load_client(
    k: usize,
    url: String,
    sender: Arc<Mutex<Sender>>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    once: bool,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .retry_canceled_requests(false)
        .build_http();
    while !stop.load(SeqCst) {
        let (n, resend) = {
            let mut s = sender.lock().unwrap();
            match s.pending.take() {
                Some(n) => (n, true),
                None => {
                    s.next += 1;
                    (s.next - 1, false)
                }
            }
        };
        let req = Request::post(&url)
            .header("content-type", "application/json")
            .header("x-delivery-id", format!("c{k}-{n}"))
            .body(Full::new(Bytes::from(body_of(k, n))))
            .unwrap();
        let answer = tokio::time::timeout(ANSWER_DEADLINE, async {
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        })
        .await
        .unwrap_or_else(|_| {
            panic!("client {k}: no answer to message {n} within {ANSWER_DEADLINE:?}")
        });
        let mut ledger = ledger.lock().unwrap();
        match answer {
            Ok((StatusCode::OK, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
                let seq = v["seq"].as_u64().expect("seq in the answer");
                let id = v["id"].as_str().expect("id in the answer").to_string();
                if v["duplicate"] == true {
                    assert!(resend, "c{k}-{n}: a first send answered as a duplicate");
                    ledger.stored_anyway += 1;
                }
                ledger.acked.insert((k, n), (seq, id));
            }
            other => {
                sender.lock().unwrap().pending = Some(n);
                ledger.unanswered += 1;
                if let Ok((status, _)) = other {
                    *ledger.refused.entry(status.as_u16()).or_default() += 1;
                }
                return;
            }
        }
        if once {
            return;
        }
    }
}

// ---------------------------------------------------------------- receivers

/// One request as a receiver saw it, in arrival order.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub seq: u64,
    pub id: String,
    pub body: Bytes,
    /// Answered 2xx.
    pub ok: bool,
}

/// Everything `rx` answered so far.
pub fn arrivals(rx: &Receiver) -> Vec<Arrival> {
    rx.all()
        .into_iter()
        .map(|(r, status)| Arrival {
            seq: r
                .header("x-hookrelay-seq")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            id: r.header("webhook-id").unwrap_or("").to_string(),
            body: r.body,
            ok: status.is_success(),
        })
        .collect()
}

/// Acked webhooks that `log` has not (yet) answered 2xx.
pub fn missing(log: &[Arrival], acked: &HashMap<(usize, u64), (u64, String)>) -> Vec<(usize, u64)> {
    let got: HashSet<&[u8]> = log
        .iter()
        .filter(|a| a.ok)
        .map(|a| a.body.as_ref())
        .collect();
    acked
        .keys()
        .filter(|(k, n)| !got.contains(body_of(*k, *n).as_bytes()))
        .copied()
        .collect()
}

pub struct DestReport {
    pub requests: usize,
    pub refused: usize,
    pub delivered: usize,
}

/// Checks everything destination `name`'s receiver saw (`log`) against what
/// was sent (`sent[k]` messages by client k) and acked, and against the
/// final log head:
///
/// - nothing arrived that was never sent, a seq never carried two bodies or
///   ids, and a webhook never came under two seqs;
/// - every acked webhook arrived with the seq and id it was acked with, and
///   every stored seq arrived;
/// - `strict`: the first deliveries came in log order without gaps (so each
///   sender's messages first arrived in the order it sent them), and no
///   request ever went past the first seq not yet delivered.
pub fn check_destination(
    name: &str,
    strict: bool,
    log: &[Arrival],
    acked: &HashMap<(usize, u64), (u64, String)>,
    sent: &[u64],
    head: u64,
    seed: u64,
) -> DestReport {
    // seq → (body, id) as first seen, and body → seq: one message per seq, ever.
    let mut by_seq: HashMap<u64, (Bytes, String)> = HashMap::new();
    let mut seq_of: HashMap<Bytes, u64> = HashMap::new();
    // Strict: the seqs delivered so far are exactly 1..=prefix.
    let mut prefix = 0u64;
    let mut first: HashMap<u64, usize> = HashMap::new();
    // Per sender, the n of its last first delivery.
    let mut last_n: HashMap<usize, u64> = HashMap::new();
    let mut delivered = 0;
    for (i, a) in log.iter().enumerate() {
        let ctx = || format!("{name}, arrival #{i} (seq {}, seed {seed})", a.seq);
        // (b) nothing arrives that was never sent.
        let (k, n) = parse_body(&a.body)
            .unwrap_or_else(|| panic!("{}: a body nobody sent: {:?}", ctx(), a.body));
        assert!(
            k < sent.len() && n < sent[k],
            "{}: c{k}-{n} was never sent",
            ctx()
        );
        assert!(
            a.seq >= 1 && a.seq <= head,
            "{}: seq outside 1..={head}",
            ctx()
        );
        let (body, id) = by_seq
            .entry(a.seq)
            .or_insert_with(|| (a.body.clone(), a.id.clone()));
        assert_eq!(body, &a.body, "{}: one seq, two bodies", ctx());
        assert_eq!(id, &a.id, "{}: one seq, two webhook-ids", ctx());
        let s = *seq_of.entry(a.body.clone()).or_insert(a.seq);
        assert_eq!(s, a.seq, "{}: one message under two seqs", ctx());
        if let Some((seq, id)) = acked.get(&(k, n)) {
            assert_eq!(
                (a.seq, &a.id),
                (*seq, id),
                "{}: not the acked seq and id",
                ctx()
            );
        }
        if strict {
            // Strict: nothing is sent past the first message not yet delivered.
            assert!(
                a.seq <= prefix + 1,
                "{}: sent while seq {} was not yet delivered",
                ctx(),
                prefix + 1
            );
        }
        if !a.ok {
            continue;
        }
        delivered += 1;
        if first.contains_key(&a.seq) {
            continue;
        }
        first.insert(a.seq, i);
        if strict {
            // (c) first deliveries in log order, without gaps...
            assert_eq!(
                a.seq,
                prefix + 1,
                "{}: first deliveries out of order",
                ctx()
            );
            prefix = a.seq;
            // ...so each sender's messages first arrive in the order it sent them.
            if let Some(prev) = last_n.insert(k, n) {
                assert!(
                    prev < n,
                    "{}: c{k}-{n} first delivered after c{k}-{prev}",
                    ctx()
                );
            }
        }
    }
    // (a) every stored message, acked ones included, was delivered.
    for seq in 1..=head {
        assert!(
            first.contains_key(&seq),
            "{name}: seq {seq} never delivered (seed {seed})"
        );
    }
    for ((k, n), (seq, _)) in acked {
        assert!(
            first.contains_key(seq),
            "{name}: acked c{k}-{n} (seq {seq}) never delivered (seed {seed})"
        );
    }
    DestReport {
        requests: log.len(),
        refused: log.iter().filter(|a| !a.ok).count(),
        delivered,
    }
}
