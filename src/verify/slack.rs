//! `slack`: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:ts:body">` with the
//! signing secret as written, `X-Slack-Request-Timestamp`, tolerance in both
//! directions. A verified `url_verification` request is answered here with its
//! challenge and never stored.

use std::time::Duration;

use serde::Deserialize;

use super::common;
use super::{Check, Inbound, Passed, Reply, VerifyError};
use crate::config::HmacAlgorithm;

const SIG: &str = "x-slack-signature";
const TS: &str = "x-slack-request-timestamp";

pub(super) struct Slack {
    keys: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl Slack {
    pub(super) fn new(keys: Vec<Vec<u8>>, tolerance: Duration) -> Slack {
        Slack { keys, tolerance }
    }
}

/// `v0=<64 hex>` to the 32 MAC bytes.
pub(super) fn parse_signature(header: &str) -> Option<Vec<u8>> {
    let mac = common::hex_decode(header.strip_prefix("v0=")?)?;
    (mac.len() == 32).then_some(mac)
}

#[derive(Deserialize)]
struct Challenge {
    #[serde(rename = "type")]
    kind: Option<String>,
    challenge: Option<String>,
}

/// The answer to a `url_verification` body, `None` for any other body.
fn url_verification(body: &[u8]) -> Option<Reply> {
    let c: Challenge = serde_json::from_slice(body).ok()?;
    match (c.kind.as_deref(), c.challenge) {
        (Some("url_verification"), Some(challenge)) => {
            Some(Reply::json(&serde_json::json!({ "challenge": challenge })))
        }
        _ => None,
    }
}

impl Check for Slack {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError> {
        let ts = common::header(req, TS)?;
        let ts_value = common::parse_unix(ts).ok_or(VerifyError::malformed(TS))?;
        let mac = parse_signature(common::header(req, SIG)?).ok_or(VerifyError::malformed(SIG))?;
        let parts = [b"v0:", ts.as_bytes(), b":", req.body];
        if !common::any_mac_matches(HmacAlgorithm::Sha256, &self.keys, &parts, &[mac]) {
            return Err(VerifyError::BadSignature);
        }
        common::check_fresh(ts_value, now, self.tolerance)?;
        Ok(match url_verification(req.body) {
            Some(reply) => Passed::Answer(reply),
            None => Passed::Authentic { provider_key: None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    // SL-1: Slack's docs example, as in python-slack-sdk's signature tests.
    const SL_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SL_TS: u64 = 1531420618;
    const SL_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SL_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn slack(secrets: &[&str]) -> Slack {
        let keys = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        Slack::new(keys, Duration::from_secs(300))
    }

    fn sl_req(ts: &str, sig: &str, body: &str) -> Req {
        req(
            &[
                ("X-Slack-Request-Timestamp", ts),
                ("X-Slack-Signature", sig),
            ],
            body,
        )
    }

    fn sign(secret: &str, ts: u64, body: &str) -> String {
        let t = ts.to_string();
        let parts = [b"v0:", t.as_bytes(), b":", body.as_bytes()];
        let mac = common::mac(HmacAlgorithm::Sha256, secret.as_bytes(), &parts).unwrap();
        format!("v0={}", common::hex_encode(&mac))
    }

    #[test]
    fn official_vector() {
        assert_eq!(SL_BODY.len(), 362);
        assert_eq!(sign(SL_SECRET, SL_TS, SL_BODY), SL_SIG);
        let r = sl_req("1531420618", SL_SIG, SL_BODY);
        assert_eq!(assert_accepts(&slack(&[SL_SECRET]), &r, SL_TS), None);
    }

    #[test]
    fn negatives() {
        let v = slack(&[SL_SECRET]);
        // The SDK's own negative case: the body with "------" appended.
        let r = sl_req("1531420618", SL_SIG, &format!("{SL_BODY}------"));
        assert_rejects(&v, &r, SL_TS, VerifyError::BadSignature);
        let r = sl_req("1531420619", SL_SIG, SL_BODY);
        assert_rejects(&v, &r, SL_TS, VerifyError::BadSignature);
        let r = sl_req("1531420618", SL_SIG, SL_BODY);
        assert_rejects(&slack(&["x"]), &r, SL_TS, VerifyError::BadSignature);
        assert_accepts(&slack(&["x", SL_SECRET]), &r, SL_TS);
        assert_rejects(&v, &r, SL_TS + 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, SL_TS - 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, crate::time::now_secs(), VerifyError::StaleTimestamp);

        let only_sig = req(&[("X-Slack-Signature", SL_SIG)], SL_BODY);
        assert_rejects(&v, &only_sig, SL_TS, VerifyError::MissingHeader(TS.into()));
        let only_ts = req(&[("X-Slack-Request-Timestamp", "1531420618")], SL_BODY);
        assert_rejects(&v, &only_ts, SL_TS, VerifyError::MissingHeader(SIG.into()));
        let huge = format!("v0={}", "a".repeat(60_000));
        for sig in [
            "garbage",
            "",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=",
            huge.as_str(),
        ] {
            let r = sl_req("1531420618", sig, SL_BODY);
            assert_rejects(&v, &r, SL_TS, VerifyError::malformed(SIG));
        }
        for ts in ["", "abc", "-1531420618", "1531420618.5"] {
            let r = sl_req(ts, SL_SIG, SL_BODY);
            assert_rejects(&v, &r, SL_TS, VerifyError::malformed(TS));
        }
    }

    #[test]
    fn url_verification_is_answered_after_verifying() {
        let v = slack(&[SL_SECRET]);
        let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let now = 1_700_000_000;
        let r = sl_req(&now.to_string(), &sign(SL_SECRET, now, body), body);
        match v.check(&r.inbound(), now) {
            Ok(Passed::Answer(reply)) => {
                let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
                assert_eq!(
                    json["challenge"],
                    "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
                );
                assert_eq!(reply.content_type, "application/json");
            }
            _ => panic!("challenge answered"),
        }
        // Unsigned, it is refused like anything else.
        let r = sl_req(&now.to_string(), &sign("other", now, body), body);
        assert_rejects(&v, &r, now, VerifyError::BadSignature);
        // An event callback is stored, not answered.
        let event = r#"{"type":"event_callback","event_id":"Ev1"}"#;
        let r = sl_req(&now.to_string(), &sign(SL_SECRET, now, event), event);
        assert_accepts(&v, &r, now);
    }
}
