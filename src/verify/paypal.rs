//! `paypal`: RSA PKCS#1 v1.5 SHA-256 (ring) over
//! `transmission_id|transmission_time|webhook_id|crc32(body)` (crc32 in
//! decimal) from the `PAYPAL-TRANSMISSION-ID`, `-TIME` and `-SIG` (base64)
//! headers, against the public key of the configured `cert_file`. The relay
//! makes no outbound call: `PAYPAL-CERT-URL` is ignored and the certificate is
//! trusted because the operator configured it. Tolerance on the transmission
//! time.

use std::time::{Duration, UNIX_EPOCH};

use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use super::common;
use super::{Check, Inbound, Passed, VerifyError};
use crate::keys::RsaPublicKey;

const ID: &str = "paypal-transmission-id";
const TIME: &str = "paypal-transmission-time";
const SIG: &str = "paypal-transmission-sig";
const ALGO: &str = "paypal-auth-algo";

#[derive(Debug)]
pub(super) struct Paypal {
    public_key: RsaPublicKey,
    webhook_id: String,
    tolerance: Duration,
}

impl Paypal {
    pub(super) fn new(public_key: RsaPublicKey, webhook_id: &str, tolerance: Duration) -> Paypal {
        Paypal {
            public_key,
            webhook_id: webhook_id.to_owned(),
            tolerance,
        }
    }
}

/// An RFC 3339 time (UTC) to Unix seconds.
pub(super) fn parse_time(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

impl Check for Paypal {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError> {
        if let Some(algo) = common::optional_header(req, ALGO)? {
            if algo != "SHA256withRSA" {
                return Err(VerifyError::malformed(ALGO));
            }
        }
        let id = common::header(req, ID)?;
        let time = common::header(req, TIME)?;
        let sig = common::header(req, SIG)?;
        // A `|` would make the signed string ambiguous.
        if id.contains('|') {
            return Err(VerifyError::malformed(ID));
        }
        let ts = parse_time(time)
            .filter(|_| !time.contains('|'))
            .ok_or(VerifyError::malformed(TIME))?;
        let sig = common::b64_decode(sig)
            .filter(|s| !s.is_empty())
            .ok_or(VerifyError::malformed(SIG))?;
        let crc = crc32fast::hash(req.body);
        let message = format!("{id}|{time}|{}|{crc}", self.webhook_id);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key.0)
            .verify(message.as_bytes(), &sig)
            .map_err(|_| VerifyError::BadSignature)?;
        common::check_fresh(ts, now, self.tolerance)?;
        Ok(Passed::Authentic { provider_key: None })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    pub(crate) const CERT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/verify/testdata/paypal_test_cert.pem"
    );
    const OTHER_CERT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/verify/testdata/paypal_other_cert.pem"
    );
    pub(crate) const WEBHOOK_ID: &str = "1JE4291016473214C";

    // Self-computed with `openssl dgst -sha256 -sign` and Python's zlib.crc32
    // (PayPal publishes no vector): the signed string is
    // `69cd13f0-...|2016-02-18T20:01:35Z|1JE4291016473214C|2254320635`.
    const TID: &str = "69cd13f0-d67a-11e5-baa3-778b53f4ae55";
    const TIME_1: &str = "2016-02-18T20:01:35Z";
    const TS_1: u64 = 1455825695;
    const BODY: &str = r#"{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.SALE.COMPLETED","resource":{"id":"80021663DE681814L"}}"#;
    const SIG_1: &str = "njLREduVyTF11nDnhqo/2ueAjCMSZQoEUgr/A+a3wllt4vORl82f1t4/fJmKKVXW2SlMi35TJIbOSqaj2Ilo0ZwUI63aklsQ5Ctu2MBffuRKOf/zpl9MDxdxZm8BLCuUO848sMTTrDeJADNqBMpRcs21IlXdATUARVRBkxCt1h/zu77RpDeL3ZsDgPGiM/tIj7YhBkAc9mIQisrPJ11DconF25/YEf3bcsAXY+Hy9MUVlpO0GR+sb6Os3RuvgKYZ+KuGqZGBUcw/ZbucwJsvlDeg6FkwNz4ofeXZbv2X9ivFojeZshH1rT1YiVOlJR35HCy19q+ZxwOfyxRNvOS2XA==";

    fn key_of(cert: &str) -> RsaPublicKey {
        crate::keys::rsa_public_key_of_pem(&std::fs::read(cert).unwrap()).unwrap()
    }

    fn paypal(cert: &str) -> Paypal {
        Paypal::new(key_of(cert), WEBHOOK_ID, Duration::from_secs(300))
    }

    fn pp_req(id: &str, time: &str, sig: &str, body: &str) -> Req {
        req(
            &[
                ("PAYPAL-TRANSMISSION-ID", id),
                ("PAYPAL-TRANSMISSION-TIME", time),
                ("PAYPAL-TRANSMISSION-SIG", sig),
                ("PAYPAL-AUTH-ALGO", "SHA256withRSA"),
                (
                    "PAYPAL-CERT-URL",
                    "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270",
                ),
            ],
            body,
        )
    }

    #[test]
    fn crc_and_time() {
        assert_eq!(crc32fast::hash(BODY.as_bytes()), 2254320635);
        assert_eq!(parse_time(TIME_1), Some(TS_1));
        assert_eq!(parse_time("2016-02-18T20:01:35.123Z"), Some(TS_1));
        for bad in ["", "yesterday", "2016-02-30T20:01:35Z", "1455825695"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn openssl_signature_verifies() {
        let v = paypal(CERT);
        let r = pp_req(TID, TIME_1, SIG_1, BODY);
        assert_eq!(assert_accepts(&v, &r, TS_1), None);
        assert_accepts(&v, &r, TS_1 + 300);
    }

    #[test]
    fn negatives() {
        let v = paypal(CERT);
        let r = pp_req(TID, TIME_1, SIG_1, &BODY.replace("COMPLETED", "DENIED"));
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        let r = pp_req("69cd13f0-d67a-11e5-baa3-778b53f4ae56", TIME_1, SIG_1, BODY);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        let r = pp_req(TID, "2016-02-18T20:01:36Z", SIG_1, BODY);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        // Another webhook id, another certificate.
        let other_id = Paypal::new(key_of(CERT), "OTHER", Duration::from_secs(300));
        let r = pp_req(TID, TIME_1, SIG_1, BODY);
        assert_rejects(&other_id, &r, TS_1, VerifyError::BadSignature);
        assert_rejects(&paypal(OTHER_CERT), &r, TS_1, VerifyError::BadSignature);
        // Stale and future.
        assert_rejects(&v, &r, TS_1 + 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, TS_1 - 301, VerifyError::StaleTimestamp);
        // Missing headers.
        for name in [ID, TIME, SIG] {
            let mut r = pp_req(TID, TIME_1, SIG_1, BODY);
            r.headers.remove(name);
            assert_rejects(&v, &r, TS_1, VerifyError::MissingHeader(name.into()));
        }
        // Malformed headers.
        let huge = "A".repeat(50_000);
        for (name, value) in [
            (SIG, "garbage!"),
            (SIG, ""),
            (SIG, "===="),
            (TIME, "garbage"),
            (TIME, ""),
            (TIME, "2016-02-18T20:01:35Z|x"),
            (ID, "a|b"),
            (ID, ""),
            (ALGO, "SHA1withRSA"),
            (TIME, huge.as_str()),
        ] {
            let mut r = pp_req(TID, TIME_1, SIG_1, BODY);
            r.headers.insert(name, value.parse().unwrap());
            assert_rejects(&v, &r, TS_1, VerifyError::malformed(name));
        }
        let mut r = pp_req(TID, TIME_1, &huge, BODY);
        r.headers.remove(ALGO);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
    }
}
