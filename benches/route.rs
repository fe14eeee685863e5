//! Criterion benches of routing on a typical 2 KiB Stripe event: the
//! `event_types` check alone, plus a field filter, a transform, and building
//! the jq input object those two need.

use criterion::{criterion_group, criterion_main, Criterion};
use hookrelay::model::{MessageId, Seq};
use hookrelay::route::{Input, Pattern, Program, Rules};
use hookrelay::store::Message;

/// A Stripe `invoice.paid` event of about 2 KiB, as Stripe sends it.
fn stripe_invoice() -> Message {
    let lines: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":"il_{i:024}","amount":{},"currency":"usd","description":"Seat {i} of the Team plan","period":{{"start":1700000000,"end":1702592000}}}}"#, 1000 + i))
        .collect();
    let body = format!(
        r#"{{"id":"evt_1OZ","object":"event","api_version":"2023-10-16","created":1700000000,"livemode":true,"type":"invoice.paid","data":{{"object":{{"id":"in_1OZ","object":"invoice","amount_paid":12000,"currency":"usd","customer":"cus_P1","customer_email":"billing@example.com","lines":{{"data":[{}]}}}}}}}}"#,
        lines.join(",")
    );
    Message {
        id: MessageId::generate(1_700_000_000_000),
        source: "stripe".parse().unwrap(),
        received_at_ms: 1_700_000_000_000,
        event_type: Some("invoice.paid".into()),
        content_type: Some("application/json".into()),
        idempotency_key: Some("evt_1OZ".into()),
        query: None,
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            (
                "user-agent".into(),
                b"Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_vec(),
            ),
        ],
        body: body.into_bytes(),
    }
}

fn routing(c: &mut Criterion) {
    let m = stripe_invoice();
    assert!(
        (1800..2600).contains(&m.body.len()),
        "{} bytes",
        m.body.len()
    );
    let types = vec![Pattern::new("invoice.*"), Pattern::new("charge.failed")];
    let only_types = Rules {
        event_types: types.clone(),
        ..Rules::default()
    };
    let filtered = Rules {
        event_types: types.clone(),
        filter: Some(Program::compile(".body.livemode").unwrap()),
        transform: None,
    };
    let transformed = Rules {
        event_types: types,
        filter: Some(Program::compile(".body.livemode").unwrap()),
        transform: Some(
            Program::compile(r#"{text: "Stripe \(.event_type): \(.body.data.object.amount_paid / 100) \(.body.data.object.currency | ascii_upcase) for \(.body.data.object.customer_email)"}"#)
                .unwrap(),
        ),
    };
    let mut g = c.benchmark_group("route_2KiB_stripe");
    g.bench_function("event_types", |b| b.iter(|| only_types.decide(Seq(1), &m)));
    g.bench_function("input_object", |b| {
        b.iter(|| Input::stored(Seq(1), &m).to_val())
    });
    g.bench_function("body_parse", |b| {
        b.iter(|| jaq_json::read::parse_single(&m.body))
    });
    g.bench_function("rfc3339", |b| b.iter(|| hookrelay_time(m.received_at_ms)));
    g.bench_function("event_types+filter", |b| {
        b.iter(|| filtered.decide(Seq(1), &m))
    });
    g.bench_function("event_types+filter+transform", |b| {
        b.iter(|| transformed.decide(Seq(1), &m))
    });
    g.finish();
}

fn hookrelay_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

criterion_group!(benches, routing);
criterion_main!(benches);
