//! The OpenAPI document is kept true: every documented route is called on a
//! running relay, and each answer's status and JSON shape must be documented.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "openapi-token";

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = doc;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            resolve(doc, cur)
        }
        None => v,
    }
}

/// A small JSON-schema check covering what the document uses.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if v.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at}: null not allowed"))
        };
    }
    if let Some(options) = schema["oneOf"].as_array() {
        return if options.iter().any(|o| check(doc, o, v, at).is_ok()) {
            Ok(())
        } else {
            Err(format!("{at}: matches no oneOf"))
        };
    }
    let ok = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{at}: expected {}, got {v}", schema["type"]));
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in enum"));
        }
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let key = r.as_str().unwrap();
        if v.get(key).is_none() {
            return Err(format!("{at}: missing required {key}"));
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, val) in obj {
            match props.get(k) {
                Some(s) => check(doc, s, val, &format!("{at}.{k}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Object(_) => check(
                        doc,
                        &schema["additionalProperties"],
                        val,
                        &format!("{at}.{k}"),
                    )?,
                    _ => return Err(format!("{at}: undocumented property {k}")),
                },
            }
        }
    } else if let (Value::Object(_), Some(obj)) = (&schema["additionalProperties"], v.as_object()) {
        for (k, val) in obj {
            check(
                doc,
                &schema["additionalProperties"],
                val,
                &format!("{at}.{k}"),
            )?;
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

async fn call(
    addr: std::net::SocketAddr,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    token: bool,
) -> (StatusCode, Value) {
    let url = format!("http://{addr}{path}");
    json_request(method.clone(), &url, body, token.then_some(TOKEN)).await
}

/// GETs `path` and checks the answer's status and content type, without
/// reading a body that may never end.
async fn stream_head_is(addr: std::net::SocketAddr, path: &str, content_type: &str) {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    assert_eq!(resp.headers()["content-type"], content_type, "{path}");
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let rx = Receiver::answering(StatusCode::BAD_REQUEST).await;
    let relay = TestRelay::start(
        &RelayConfig::one_route(&rx.url("/"))
            .token(TOKEN)
            .edit_destination("d", |d| d.retry(Retry::default().attempts(1))),
    )
    .await;
    post(&client(), &relay.url("/s"), &[], "x").await.unwrap();
    relay
        .wait_admin("/api/v1/destinations/d/dead-letters", |_, v| {
            *v != serde_json::json!([])
        })
        .await;

    let (status, doc) = call(
        relay.admin,
        &Method::GET,
        "/api/v1/openapi.json",
        None,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        15,
        "every admin API route plus the document itself"
    );
    let mut called = 0;
    for (template, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let responses = op["responses"].as_object().unwrap();
            let body = op["requestBody"]["content"]["application/json"]["example"].clone();
            let body = (!body.is_null()).then_some(body);
            let good = template.replace("{name}", "d").replace("{seq}", "1");

            if op["responses"]["200"]["content"]["text/event-stream"].is_object() {
                // An endless stream: its head is checked, not its body.
                stream_head_is(relay.admin, &good, "text/event-stream").await;
                called += 1;
                let (status, _) = call(relay.admin, &method, &good, None, false).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{good}");
                let unknown = format!("{good}?source=nope");
                let (status, v) = call(relay.admin, &method, &unknown, None, true).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
                check(&doc, &doc["components"]["schemas"]["Error"], &v, &unknown).unwrap();
                let bad = format!("{good}?after_seq=x");
                let (status, _) = call(relay.admin, &method, &bad, None, true).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
                continue;
            }
            // The happy path (dead letter 1 exists, so redeliver is accepted too).
            let (status, v) = call(relay.admin, &method, &good, body.as_ref(), true).await;
            let documented = &responses
                .get(status.as_str())
                .unwrap_or_else(|| panic!("{method} {good}: {status} undocumented"));
            assert!(status.is_success(), "{method} {good}: {status} {v}");
            let schema = &resolve(&doc, documented)["content"]["application/json"]["schema"];
            check(&doc, schema, &v, &format!("{method} {good}")).unwrap();
            called += 1;

            // Each documented error status, provoked.
            let mut provoked = vec![(StatusCode::UNAUTHORIZED, good.clone(), false)];
            if template.contains("{name}") {
                provoked.push((
                    StatusCode::NOT_FOUND,
                    template.replace("{name}", "nope").replace("{seq}", "1"),
                    true,
                ));
            }
            if template.contains("{seq}") {
                provoked.push((
                    StatusCode::BAD_REQUEST,
                    template.replace("{name}", "d").replace("{seq}", "x"),
                    true,
                ));
            }
            for (want, path, token) in provoked {
                assert!(
                    responses.contains_key(want.as_str()),
                    "{method} {template}: {want} not documented"
                );
                let (status, v) = call(relay.admin, &method, &path, body.as_ref(), token).await;
                assert_eq!(status, want, "{method} {path}");
                check(&doc, &doc["components"]["schemas"]["Error"], &v, &path).unwrap();
            }
        }
    }
    assert_eq!(called, 15);
}
