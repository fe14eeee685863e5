//! Criterion benches of the append path: record encoding, and a durable append
//! alone and with 32 concurrent writers sharing one group commit.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookrelay::config::Durability;
use hookrelay::model::MessageId;
use hookrelay::store::{codec, spawn_appender, NewMessage, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn message(body: usize) -> NewMessage {
    NewMessage {
        source: "bench".parse().unwrap(),
        event_type: None,
        query: None,
        content_type: Some("application/json".into()),
        headers: vec![("x-github-event".into(), b"push".to_vec())],
        body: vec![b'x'; body],
        dedup: None,
        on_staged: None,
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for size in [1024usize, 64 * 1024] {
        let m = codec::Message {
            id: MessageId::generate(1),
            source: "bench".parse().unwrap(),
            received_at_ms: 1,
            event_type: None,
            content_type: Some("application/json".into()),
            idempotency_key: None,
            query: None,
            headers: vec![],
            body: vec![b'x'; size],
        };
        let bytes = codec::encode_message(&m).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &m, |b, m| {
            b.iter(|| codec::encode_message(m).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &bytes, |b, bytes| {
            b.iter(|| codec::decode_message(bytes).unwrap())
        });
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("append_fsync_1KiB");
    g.measurement_time(Duration::from_secs(5));
    for writers in [1usize, 32] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (head, _rx) = watch::channel(store.log().last_seq().unwrap());
        let tracker = TaskTracker::new();
        let appender = rt.block_on(async {
            spawn_appender(
                store,
                Durability::Fsync,
                head,
                Default::default(),
                &tracker,
                CancellationToken::new(),
            )
            .unwrap()
        });
        g.throughput(Throughput::Elements(writers as u64));
        g.bench_function(BenchmarkId::new("writers", writers), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = Vec::with_capacity(writers);
                    for _ in 0..writers {
                        let a = appender.clone();
                        tasks.push(tokio::spawn(async move { a.append(message(1024)).await }));
                    }
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, append);
criterion_main!(benches);
