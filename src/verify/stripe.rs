//! `stripe`: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256
//! over `t.body` keyed with the endpoint secret as written (`whsec_` included,
//! not base64-decoded). Only `v1` counts (`v0` and others are ignored, against
//! downgrades). Tolerance in both directions. The idempotency key is the
//! event `id` of the JSON body, read only after the signature verified.

use std::time::Duration;

use serde::Deserialize;

use super::common::{self, MAX_CANDIDATES};
use super::{Check, Inbound, Passed, VerifyError};
use crate::config::HmacAlgorithm;

const HEADER: &str = "stripe-signature";

pub(super) struct Stripe {
    keys: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl Stripe {
    pub(super) fn new(keys: Vec<Vec<u8>>, tolerance: Duration) -> Stripe {
        Stripe { keys, tolerance }
    }
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Header<'a> {
    /// The timestamp as sent (it is signed as text).
    pub t: &'a str,
    pub ts: u64,
    /// Every `v1` value, hex-decoded; one that is not hex is kept empty.
    pub v1: Vec<Vec<u8>>,
}

/// Parses the header: comma-separated `key=value` pairs, exactly one valid
/// `t`, at least one `v1`. Any pair without `=` makes the whole header invalid
/// (as the official libraries do).
pub(super) fn parse(header: &str) -> Option<Header<'_>> {
    let mut t = None;
    let mut v1 = Vec::new();
    for pair in header.split(',') {
        let (k, v) = pair.split_once('=')?;
        match k {
            "t" if t.is_none() => t = Some((v, common::parse_unix(v)?)),
            "t" => return None,
            "v1" if v1.len() == MAX_CANDIDATES => return None,
            "v1" => v1.push(common::hex_decode(v).unwrap_or_default()),
            _ => {}
        }
    }
    let (t, ts) = t?;
    (!v1.is_empty()).then_some(Header { t, ts, v1 })
}

#[derive(Deserialize)]
struct Event {
    id: Option<String>,
}

/// The event id of a Stripe event body, if it is JSON with a string `id`.
fn event_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Event>(body)
        .ok()?
        .id
        .filter(|id| !id.is_empty())
        .map(|id| common::bounded_key(&id))
}

impl Check for Stripe {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError> {
        let h = parse(common::header(req, HEADER)?).ok_or(VerifyError::malformed(HEADER))?;
        let parts = [h.t.as_bytes(), b".", req.body];
        if !common::any_mac_matches(HmacAlgorithm::Sha256, &self.keys, &parts, &h.v1) {
            return Err(VerifyError::BadSignature);
        }
        common::check_fresh(h.ts, now, self.tolerance)?;
        Ok(Passed::Authentic {
            provider_key: event_id(req.body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req};

    // ST-1: stripe-dotnet EventUtilityTest with event_test_signature.json.
    const ST1_BODY: &[u8] = include_bytes!("testdata/stripe_event_test_signature.json");
    const ST1_SECRET: &str = "webhook_secret";
    const ST1_TS: u64 = 1533204620;
    const ST1_HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";

    // Self-computed compact vector from SIGNATURES.md.
    const COMPACT_SECRET: &str = "whsec_test_secret";
    const COMPACT_BODY: &str = r#"{"id":"evt_test","object":"event"}"#;
    const COMPACT_HEADER: &str =
        "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724";

    fn verifier(secrets: &[&str]) -> Stripe {
        let keys = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        Stripe::new(keys, Duration::from_secs(300))
    }

    fn st_req(header: &str, body: &[u8]) -> crate::verify::tests::Req {
        req(&[("Stripe-Signature", header)], body)
    }

    #[test]
    fn official_vector_verifies_and_yields_the_event_id() {
        assert_eq!(ST1_BODY.len(), 484);
        let key = assert_accepts(
            &verifier(&[ST1_SECRET]),
            &st_req(ST1_HEADER, ST1_BODY),
            ST1_TS,
        );
        assert_eq!(key.as_deref(), Some("evt_123"));
        let key = assert_accepts(
            &verifier(&[COMPACT_SECRET]),
            &st_req(COMPACT_HEADER, COMPACT_BODY.as_bytes()),
            1_700_000_000,
        );
        assert_eq!(key.as_deref(), Some("evt_test"));
    }

    #[test]
    fn the_trailing_newline_is_part_of_the_signed_body() {
        let trimmed = &ST1_BODY[..ST1_BODY.len() - 1];
        let r = st_req(ST1_HEADER, trimmed);
        assert_rejects(
            &verifier(&[ST1_SECRET]),
            &r,
            ST1_TS,
            VerifyError::BadSignature,
        );
    }

    #[test]
    fn the_whsec_prefix_is_part_of_the_key() {
        let r = st_req(COMPACT_HEADER, COMPACT_BODY.as_bytes());
        let v = verifier(&["test_secret"]);
        assert_rejects(&v, &r, 1_700_000_000, VerifyError::BadSignature);
    }

    /// `header` over ST1's body is refused as malformed.
    fn assert_malformed(v: &Stripe, header: &str) {
        let r = st_req(header, ST1_BODY);
        assert_rejects(v, &r, ST1_TS, VerifyError::malformed(HEADER));
    }

    #[test]
    fn v0_only_or_no_v1_fails() {
        let v = verifier(&[ST1_SECRET]);
        assert_malformed(
            &v,
            "t=1533204620,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef",
        );
        // The valid MAC under a scheme name other than v1 does not count.
        assert_malformed(
            &v,
            "t=1533204620,v2=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
        );
    }

    #[test]
    fn dotnet_incorrect_header_values_all_fail() {
        let v = verifier(&[ST1_SECRET]);
        let cases = [
            "t=,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7",
            "t,v1=,v0=",
            "t,v1=,v0",
            "t,v1=,",
            "t,,",
            ",,",
            "t",
        ];
        for h in cases {
            assert_eq!(parse(h), None, "{h}");
            assert_malformed(&v, h);
        }
    }

    #[test]
    fn rotation_and_multiple_v1() {
        let r = st_req(ST1_HEADER, ST1_BODY);
        assert_accepts(&verifier(&["old", ST1_SECRET]), &r, ST1_TS);
        assert_rejects(&verifier(&["old"]), &r, ST1_TS, VerifyError::BadSignature);
        let h = format!("t=1533204620,v1={},{}", "00".repeat(32), &ST1_HEADER[13..]);
        assert_accepts(&verifier(&[ST1_SECRET]), &st_req(&h, ST1_BODY), ST1_TS);
    }

    #[test]
    fn tampered_stale_missing_and_malformed() {
        let v = verifier(&[ST1_SECRET]);
        let mut tampered = ST1_BODY.to_vec();
        tampered[10] ^= 1;
        let r = st_req(ST1_HEADER, &tampered);
        assert_rejects(&v, &r, ST1_TS, VerifyError::BadSignature);
        let shifted = ST1_HEADER.replace("t=1533204620", "t=1533204621");
        assert_rejects(
            &v,
            &st_req(&shifted, ST1_BODY),
            ST1_TS,
            VerifyError::BadSignature,
        );

        let r = st_req(ST1_HEADER, ST1_BODY);
        assert_accepts(&v, &r, ST1_TS + 300);
        assert_rejects(&v, &r, ST1_TS + 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, ST1_TS - 301, VerifyError::StaleTimestamp);

        let missing = VerifyError::MissingHeader(HEADER.into());
        assert_rejects(&v, &req(&[], ST1_BODY), ST1_TS, missing);
        let huge = format!("t=1533204620{}", ",v1=00".repeat(5000));
        let doubled_t = format!("t=1,{ST1_HEADER}");
        for h in [
            "garbage",
            "",
            "t=abc,v1=00",
            huge.as_str(),
            doubled_t.as_str(),
        ] {
            assert_malformed(&v, h);
        }
    }

    #[test]
    fn event_id_is_optional() {
        assert_eq!(event_id(b"not json"), None);
        assert_eq!(event_id(br#"{"id": 5}"#), None);
        assert_eq!(event_id(br#"{"id": ""}"#), None);
        assert_eq!(event_id(br#"{"object":"event"}"#), None);
        assert_eq!(
            event_id(br#"{"id":"evt_1","x":[1,{}]}"#).as_deref(),
            Some("evt_1")
        );
    }
}
