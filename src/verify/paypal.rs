//! `paypal`: RSA PKCS#1 v1.5 SHA-256 (ring) over
//! `transmission_id|transmission_time|webhook_id|crc32(body)` (crc32 in
//! decimal) from the `PAYPAL-TRANSMISSION-ID`, `-TIME` and `-SIG` (base64)
//! headers, against the public key of the configured `cert_file`. The relay
//! makes no outbound call: `PAYPAL-CERT-URL` is ignored and the certificate is
//! trusted because the operator configured it. Tolerance on the transmission
//! time.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use super::common;
use super::{Check, Inbound, Passed, VerifyError};

const ID: &str = "paypal-transmission-id";
const TIME: &str = "paypal-transmission-time";
const SIG: &str = "paypal-transmission-sig";
const ALGO: &str = "paypal-auth-algo";

#[derive(Debug)]
pub(super) struct Paypal {
    /// PKCS#1 `RSAPublicKey` DER, as ring wants it.
    public_key: Vec<u8>,
    webhook_id: String,
    tolerance: Duration,
}

impl Paypal {
    pub(super) fn new(
        cert_file: &Path,
        webhook_id: &str,
        tolerance: Duration,
    ) -> Result<Paypal, String> {
        let shown = cert_file.display();
        let pem =
            std::fs::read(cert_file).map_err(|e| format!("cannot read cert_file {shown}: {e}"))?;
        let cert = match rustls_pemfile::certs(&mut pem.as_slice()).next() {
            Some(Ok(cert)) => cert,
            Some(Err(e)) => return Err(format!("cert_file {shown}: bad PEM: {e}")),
            None => return Err(format!("cert_file {shown}: no PEM certificate in it")),
        };
        let public_key = rsa_public_key(cert.as_ref())
            .map_err(|what| format!("cert_file {shown}: {what}"))?
            .to_vec();
        Ok(Paypal {
            public_key,
            webhook_id: webhook_id.to_owned(),
            tolerance,
        })
    }
}

/// One DER element: (tag, contents, what follows). Only what X.509 needs:
/// single-byte tags, definite lengths of at most 4 bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, r) = rest.split_at_checked(n)?;
        rest = r;
        bytes.iter().try_fold(0usize, |acc, &b| {
            acc.checked_mul(256)?.checked_add(usize::from(b))
        })?
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// `rsaEncryption`, 1.2.840.113549.1.1.1.
const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const SEQUENCE: u8 = 0x30;

/// The RSA public key (PKCS#1 DER) of an X.509 certificate, by walking
/// `Certificate.tbsCertificate.subjectPublicKeyInfo`.
pub(super) fn rsa_public_key(cert: &[u8]) -> Result<&[u8], &'static str> {
    const NOT_X509: &str = "not an X.509 certificate";
    let expect = |input, tag| match tlv(input) {
        Some((t, contents, rest)) if t == tag => Ok((contents, rest)),
        _ => Err(NOT_X509),
    };
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    if let Some((0xa0, _, r)) = tlv(rest) {
        rest = r;
    }
    // serialNumber, signature, issuer, validity, subject
    for tag in [0x02, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.1;
    }
    let (spki, _) = expect(rest, SEQUENCE)?;
    let (alg, rest) = expect(spki, SEQUENCE)?;
    let (oid, _) = expect(alg, 0x06)?;
    if oid != RSA_OID {
        return Err("the certificate's key is not RSA");
    }
    let (bits, _) = expect(rest, 0x03)?;
    match bits.split_first() {
        Some((0, key)) if !key.is_empty() => Ok(key),
        _ => Err(NOT_X509),
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
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
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

    fn paypal(cert: &str) -> Paypal {
        Paypal::new(Path::new(cert), WEBHOOK_ID, Duration::from_secs(300)).unwrap()
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
        let other_id = Paypal::new(Path::new(CERT), "OTHER", Duration::from_secs(300)).unwrap();
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

    #[test]
    fn setup_refuses_what_is_not_an_rsa_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let t = Duration::from_secs(300);
        let missing = dir.path().join("nope.pem");
        assert!(Paypal::new(&missing, "x", t)
            .unwrap_err()
            .contains("cannot read"));
        let empty = write("empty.pem", "");
        assert!(Paypal::new(&empty, "x", t)
            .unwrap_err()
            .contains("no PEM certificate"));
        let key_only = write("key.pem", include_str!("testdata/paypal_test_key.pem"));
        assert!(Paypal::new(&key_only, "x", t)
            .unwrap_err()
            .contains("no PEM certificate"));
        let junk = write(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
        );
        assert!(Paypal::new(&junk, "x", t)
            .unwrap_err()
            .contains("not an X.509"));
        let ec = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let ec = write("ec.pem", &ec.cert.pem());
        assert!(Paypal::new(&ec, "x", t).unwrap_err().contains("not RSA"));
    }

    #[test]
    fn der_walk_reads_the_key_openssl_reads() {
        let pem = std::fs::read(CERT).unwrap();
        let cert = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        let key = rsa_public_key(cert.as_ref()).unwrap();
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        let (tag, body, rest) = tlv(key).unwrap();
        assert_eq!((tag, rest.len()), (SEQUENCE, 0));
        let (tag, modulus, rest) = tlv(body).unwrap();
        assert_eq!((tag, modulus.len()), (0x02, 257));
        assert_eq!(tlv(rest).unwrap().1, &[1, 0, 1]);
        // Every truncation fails cleanly.
        for n in 0..cert.as_ref().len() {
            let _ = rsa_public_key(&cert.as_ref()[..n]);
        }
    }
}
