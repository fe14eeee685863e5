//! Entry points of the cargo-fuzz targets in `tests/fuzz`, kept in the
//! library so `tests/fuzz_corpus.rs` replays the committed corpora on stable
//! through the same code. Each takes arbitrary bytes and must not panic: a
//! panic, including a failed check of an invariant here, is a finding.
//!
//! Not part of the relay's interface.

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::Path;

use crate::config::Config;
use crate::store::codec::{self, CodecError};
use crate::verify::Verifier;

/// `record_decoder`: the first byte picks a record type, the rest is the
/// stored value (version byte first). Whatever decodes must encode again and
/// decode to the same value; a message's bytes must also decode as its head.
pub fn record_decoder(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => message(value),
        1 => round_trip(value, codec::decode_attempt_in, |(a, run)| {
            codec::encode_attempt_in(a, run.as_ref())
        }),
        2 => round_trip(value, codec::decode_dead_letter, codec::encode_dead_letter),
        3 => round_trip(value, codec::decode_state, codec::encode_state),
        4 => round_trip(value, codec::decode_dedup, codec::encode_dedup),
        5 => round_trip(value, codec::decode_window, codec::encode_window),
        6 => {
            if let Ok(seq) = codec::decode_seq(value) {
                assert_eq!(seq.to_be_bytes(), value);
            }
        }
        _ => {
            if let Some((seq, chunk)) = crate::store::log::parse_key(value) {
                assert_eq!(crate::store::log::key(seq, chunk), value);
            }
            log_value(value);
        }
    }
}

/// A log value (frame or part): its walk stays inside the value, and every
/// record in a frame is checked as a message.
fn log_value(value: &[u8]) {
    match codec::decode_log_value(value) {
        Ok(codec::LogValue::Frame(mut entries)) => {
            while let Some(Ok((_, range))) = entries.next(value) {
                message(&value[range]);
            }
        }
        Ok(codec::LogValue::Part { payload, .. }) => {
            let _ = codec::decode_head(&value[payload]);
        }
        Err(_) => {}
    }
}

fn round_trip<T: PartialEq + Debug>(
    bytes: &[u8],
    decode: fn(&[u8]) -> Result<T, CodecError>,
    encode: fn(&T) -> Result<Vec<u8>, CodecError>,
) {
    let Ok(value) = decode(bytes) else {
        return;
    };
    let encoded =
        encode(&value).unwrap_or_else(|e| panic!("{value:?} decoded but not encoded: {e}"));
    match decode(&encoded) {
        Ok(again) => assert_eq!(again, value),
        Err(e) => panic!("{value:?} encoded but not decoded: {e}"),
    }
}

fn message(bytes: &[u8]) {
    let head = codec::decode_head(bytes);
    let Ok(m) = codec::decode_message(bytes) else {
        return;
    };
    // Workers filter on the head alone; it must agree with the whole message.
    let same_head = |head: &codec::MessageHead| {
        head.id == m.id && head.source == m.source && head.received_at_ms == m.received_at_ms
    };
    assert!(head.as_ref().is_ok_and(same_head), "{head:?} for {m:?}");
    round_trip(bytes, codec::decode_message, codec::encode_message);
    if let Ok(encoded) = codec::encode_message(&m) {
        let head = codec::decode_head(&encoded);
        assert!(head.as_ref().is_ok_and(same_head), "{head:?} for {m:?}");
    }
}

/// Keys whose values the config module treats as secrets.
const SECRET_KEYS: &[&str] = &["secret", "secrets", "token", "verify_token", "signing"];

/// Only secrets carrying this marker are checked for leaks, so a secret that
/// happens to equal a word of a message is not a finding.
const MARKER: &str = "SeCrEt";

/// What the fuzz config's environment variables hold.
const ENV_SECRET: &str = "SeCrEt-from-the-environment";

/// `config_parser`: the bytes as `relay.toml` through the real load path
/// (parse, validate, then each source's verifier as startup builds it).
/// Besides not panicking: no error message and no `Debug` of the loaded
/// config shows a secret value.
pub fn config_parser(data: &[u8]) {
    // `Config::load` refuses a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| name.starts_with("FUZZ_").then(|| ENV_SECRET.to_string());
    // Relative paths resolve under a directory that does not exist.
    let file = Path::new("/nonexistent/hookrelay-fuzz/relay.toml");
    let secrets = checkable_secrets(text);
    let assert_hidden = |shown: &str| {
        for s in &secrets {
            assert!(!shown.contains(s.as_str()), "secret {s:?} shown in {shown}");
        }
    };
    match Config::from_str_with_env(text, file, &env) {
        Ok(config) => {
            assert_hidden(&format!("{config:?}"));
            for source in &config.sources {
                assert_hidden(&format!("{:?}", Verifier::new(source)));
            }
        }
        Err(e) => assert_hidden(&format!("{e} {e:?}")),
    }
}

/// The secret values of `text` that nothing else in it could explain if they
/// showed up in a message: each carries [`MARKER`], appears once in the text,
/// and is part of no other key or value. The environment's secret is always
/// one, unless the text spells it out.
fn checkable_secrets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !text.contains(ENV_SECRET) {
        out.push(ENV_SECRET.to_string());
    }
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return out;
    };
    let mut secrets = Vec::new();
    let mut others = Vec::new();
    collect(&toml::Value::Table(table), false, &mut secrets, &mut others);
    let unique: HashSet<&String> = secrets
        .iter()
        .filter(|s| s.contains(MARKER) && text.matches(s.as_str()).count() == 1)
        .filter(|s| secrets.iter().filter(|o| o.contains(s.as_str())).count() == 1)
        .filter(|s| !others.iter().any(|o| o.contains(s.as_str())))
        .collect();
    out.extend(unique.into_iter().cloned());
    out
}

/// Splits every string of `value` into secret values and everything else
/// (keys, other values, numbers and dates as text).
fn collect(value: &toml::Value, secret: bool, secrets: &mut Vec<String>, others: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if secret => secrets.push(s.clone()),
        toml::Value::Array(items) => {
            for item in items {
                collect(item, secret, secrets, others);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                others.push(key.clone());
                collect(item, SECRET_KEYS.contains(&key.as_str()), secrets, others);
            }
        }
        other => others.push(match other {
            toml::Value::String(s) => s.clone(),
            scalar => scalar.to_string(),
        }),
    }
}

/// `signature_headers`: the first byte picks a verify scheme (or the raw
/// parsers), the rest is a request; see the verify module's fuzz helper for
/// the input form and the checks.
pub fn signature_headers(data: &[u8]) {
    crate::verify::fuzz::signature_headers(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_secrets_that_nothing_else_explains_are_checked() {
        let text = r#"
[admin]
token = "SeCrEt-admin"
[[source]]
name = "s"
path = "/s"
verify = { scheme = "stripe", secrets = ["SeCrEt-one", "SeCrEt-one-more", "plain-secret"] }
dedup_header = "x-SeCrEt-admin-copy"
"#;
        let found = checkable_secrets(text);
        assert!(found.contains(&ENV_SECRET.to_string()));
        // In another value, inside another secret, unmarked: all skipped.
        for skipped in ["SeCrEt-admin", "SeCrEt-one", "plain-secret"] {
            assert!(!found.iter().any(|s| s == skipped), "{skipped}");
        }
        assert!(found.iter().any(|s| s == "SeCrEt-one-more"));
    }

    #[test]
    fn loaded_and_refused_configs_keep_marked_secrets_hidden() {
        let cases: [&[u8]; 3] = [
            // Loads: Debug shows `[redacted]`.
            b"[admin]\ntoken = \"SeCrEt-admin\"\n[[source]]\nname = \"s\"\npath = \"/s\"\nverify = { scheme = \"github\", secret = \"SeCrEt-gh\" }\n",
            // Refused: the messages name keys, not secret values.
            b"[[source]]\nname = \"s\"\npath = \"/s\"\nverify = { scheme = \"nope\", secret = \"SeCrEt-gh\" }\n",
            b"[admin]\ntoken = [\"SeCrEt-list\"]\n",
        ];
        for text in cases {
            let marked = checkable_secrets(std::str::from_utf8(text).unwrap());
            assert!(marked
                .iter()
                .any(|s| s.starts_with("SeCrEt-") && s != ENV_SECRET));
            config_parser(text);
        }
    }
}
