//! `standard`: Standard Webhooks (and Svix, whose `svix-*` headers are taken
//! when the `webhook-*` ones are absent). HMAC-SHA256 over `id.timestamp.body`
//! with the base64 key after `whsec_`; `webhook-signature` is a space-separated
//! list of `v1,<base64>` (other versions are ignored); timestamp tolerance.

use std::time::Duration;

use subtle::{Choice, ConstantTimeEq};

use super::common::{self, MAX_CANDIDATES};
use super::{Check, Inbound, Passed, VerifyError};
use crate::keys::WhsecKey;

pub(super) struct Standard {
    keys: Vec<WhsecKey>,
    tolerance: Duration,
}

impl Standard {
    pub(super) fn new(keys: Vec<WhsecKey>, tolerance: Duration) -> Standard {
        Standard { keys, tolerance }
    }
}

/// The `v1` signatures of a `webhook-signature` header, decoded; one that does
/// not decode is kept as an empty candidate (it matches nothing). Entries
/// without a comma or of another version are skipped. `None` when there is no
/// `v1` entry at all, or more than [`MAX_CANDIDATES`].
pub(super) fn parse_signatures(header: &str) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        if version == "v1" {
            if out.len() == MAX_CANDIDATES {
                return None;
            }
            out.push(common::b64_decode(sig).unwrap_or_default());
        }
    }
    (!out.is_empty()).then_some(out)
}

impl Check for Standard {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError> {
        let family = if common::optional_header(req, "webhook-signature")?.is_none()
            && common::optional_header(req, "svix-signature")?.is_some()
        {
            "svix"
        } else {
            "webhook"
        };
        let [id_h, ts_h, sig_h] = ["id", "timestamp", "signature"].map(|n| format!("{family}-{n}"));
        let id = common::header(req, &id_h)?;
        let ts = common::header(req, &ts_h)?;
        let sig = common::header(req, &sig_h)?;
        // A `.` in the id would make `id.timestamp.body` ambiguous.
        if id.contains('.') {
            return Err(VerifyError::malformed(&id_h));
        }
        let ts_value = common::parse_unix(ts).ok_or_else(|| VerifyError::malformed(&ts_h))?;
        let candidates = parse_signatures(sig).ok_or_else(|| VerifyError::malformed(&sig_h))?;
        // Every key against every candidate, in constant time, always all of them.
        let mut ok = Choice::from(0);
        for key in &self.keys {
            let expected = key.mac(id, ts, req.body);
            for c in &candidates {
                ok |= expected.as_slice().ct_eq(c.as_slice());
            }
        }
        if !bool::from(ok) {
            return Err(VerifyError::BadSignature);
        }
        common::check_fresh(ts_value, now, self.tolerance)?;
        Ok(Passed::Authentic {
            provider_key: Some(common::bounded_key(id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    // SW-1: the Rust library's (and svix-webhooks') `test_sign`.
    const SW1_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW1_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW1_TS: u64 = 1649367553;
    const SW1_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SW1_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    // SW-2: the Python and JS libraries' "sign function works".
    const SW2_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW2_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW2_TS: u64 = 1614265330;
    const SW2_BODY: &str = r#"{"test": 2432232314}"#;
    const SW2_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key(secret: &str) -> WhsecKey {
        WhsecKey::parse(secret.as_bytes()).unwrap()
    }

    fn verifier(secret: &str) -> Standard {
        Standard::new(vec![key(secret)], Duration::from_secs(300))
    }

    fn sw_req(id: &str, ts: u64, sig: &str, body: &str) -> Req {
        req(
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", sig),
            ],
            body,
        )
    }

    #[test]
    fn official_vectors_verify() {
        let r = sw_req(SW1_ID, SW1_TS, SW1_SIG, SW1_BODY);
        let key = assert_accepts(&verifier(SW1_SECRET), &r, SW1_TS);
        assert_eq!(key.as_deref(), Some(SW1_ID));
        let r = sw_req(SW2_ID, SW2_TS, SW2_SIG, SW2_BODY);
        assert_accepts(&verifier(SW2_SECRET), &r, SW2_TS);
    }

    #[test]
    fn vectors_computed_here_match_the_published_ones() {
        let sig = key(SW2_SECRET).sign(SW2_ID, "1614265330", SW2_BODY.as_bytes());
        assert_eq!(sig, SW2_SIG);
    }

    #[test]
    fn unpadded_and_unprefixed_secrets_work() {
        // SW-2's secret is 32 base64 chars without padding; SW-1 without `whsec_`.
        let r = sw_req(SW1_ID, SW1_TS, SW1_SIG, SW1_BODY);
        assert_accepts(&verifier("C2FVsBQIhrscChlQIMV+b5sSYspob7oD"), &r, SW1_TS);
    }

    #[test]
    fn negative_fixtures_from_the_python_tests() {
        let v = verifier(SW2_SECRET);
        // Last character changed.
        let bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        let r = sw_req(SW2_ID, SW2_TS, bad, SW2_BODY);
        assert_rejects(&v, &r, SW2_TS, VerifyError::BadSignature);
        // Several signatures, other versions, one valid: passes.
        let multi = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,{0} {SW2_SIG} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            &SW2_SIG[3..]
        );
        assert_accepts(&v, &sw_req(SW2_ID, SW2_TS, &multi, SW2_BODY), SW2_TS);
        // Partial signatures fail.
        for partial in ["v1,", &SW2_SIG[..8]] {
            let r = sw_req(SW2_ID, SW2_TS, partial, SW2_BODY);
            assert_rejects(&v, &r, SW2_TS, VerifyError::BadSignature);
        }
        // The same valid signature under another version does not count.
        let r = sw_req(SW2_ID, SW2_TS, &format!("v1a,{}", &SW2_SIG[3..]), SW2_BODY);
        assert_rejects(&v, &r, SW2_TS, VerifyError::malformed("webhook-signature"));
    }

    #[test]
    fn tampering_wrong_secret_and_rotation() {
        let r = sw_req(SW2_ID, SW2_TS, SW2_SIG, r#"{"test": 2432232315}"#);
        assert_rejects(&verifier(SW2_SECRET), &r, SW2_TS, VerifyError::BadSignature);
        let r = sw_req("msg_other", SW2_TS, SW2_SIG, SW2_BODY);
        assert_rejects(&verifier(SW2_SECRET), &r, SW2_TS, VerifyError::BadSignature);
        let r = sw_req(SW2_ID, SW2_TS + 1, SW2_SIG, SW2_BODY);
        assert_rejects(&verifier(SW2_SECRET), &r, SW2_TS, VerifyError::BadSignature);
        let r = sw_req(SW2_ID, SW2_TS, SW2_SIG, SW2_BODY);
        assert_rejects(&verifier(SW1_SECRET), &r, SW2_TS, VerifyError::BadSignature);
        // Rotation: any configured secret is enough.
        let both = Standard::new(
            vec![key(SW1_SECRET), key(SW2_SECRET)],
            Duration::from_secs(300),
        );
        assert_accepts(&both, &r, SW2_TS);
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let v = verifier(SW2_SECRET);
        let r = sw_req(SW2_ID, SW2_TS, SW2_SIG, SW2_BODY);
        assert_accepts(&v, &r, SW2_TS + 300);
        assert_accepts(&v, &r, SW2_TS - 300);
        assert_rejects(&v, &r, SW2_TS + 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, SW2_TS - 301, VerifyError::StaleTimestamp);
        // With a real clock the 2021 vector is long stale.
        assert_rejects(&v, &r, crate::time::now_secs(), VerifyError::StaleTimestamp);
    }

    #[test]
    fn missing_and_malformed_headers() {
        let v = verifier(SW2_SECRET);
        let ts = SW2_TS.to_string();
        let all = [
            ("webhook-id", SW2_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", SW2_SIG),
        ];
        for skip in 0..3 {
            let headers: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, h)| *h)
                .collect();
            let want = VerifyError::MissingHeader(all[skip].0.to_string());
            assert_rejects(&v, &req(&headers, SW2_BODY), SW2_TS, want);
        }
        let huge = "v1,AAAA ".repeat(20_000);
        let cases = [
            ("webhook-timestamp", "-1614265330"),
            ("webhook-timestamp", "1614265330.0"),
            ("webhook-timestamp", ""),
            ("webhook-id", "msg.with.dots"),
            ("webhook-id", ""),
            ("webhook-signature", "garbage"),
            ("webhook-signature", ""),
            ("webhook-signature", huge.as_str()),
        ];
        for (name, value) in cases {
            let headers: Vec<_> = all
                .iter()
                .map(|&(n, v)| if n == name { (n, value) } else { (n, v) })
                .collect();
            let want = VerifyError::malformed(name);
            assert_rejects(&v, &req(&headers, SW2_BODY), SW2_TS, want);
        }
        // A repeated header is refused rather than guessed at.
        let mut headers = all.to_vec();
        headers.push(("webhook-signature", SW2_SIG));
        let want = VerifyError::malformed("webhook-signature");
        assert_rejects(&v, &req(&headers, SW2_BODY), SW2_TS, want);
    }

    #[test]
    fn svix_headers_are_accepted_too() {
        let ts = SW2_TS.to_string();
        let r = req(
            &[
                ("svix-id", SW2_ID),
                ("svix-timestamp", &ts),
                ("svix-signature", SW2_SIG),
            ],
            SW2_BODY,
        );
        let key = assert_accepts(&verifier(SW2_SECRET), &r, SW2_TS);
        assert_eq!(key.as_deref(), Some(SW2_ID));
    }
}
