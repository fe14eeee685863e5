//! `discord`: Ed25519 (ring) over `X-Signature-Timestamp + body`, signature in
//! `X-Signature-Ed25519` (hex), the application's public key from the config;
//! tolerance on the timestamp. A verified PING interaction (`{"type":1}`) is
//! answered here with `{"type":1}` and never stored.

use std::time::Duration;

use ring::signature::{UnparsedPublicKey, ED25519};
use serde::Deserialize;

use super::common;
use super::{Check, Inbound, Passed, Reply, VerifyError};
use crate::keys::Ed25519PublicKey;

const SIG: &str = "x-signature-ed25519";
const TS: &str = "x-signature-timestamp";

pub(super) struct Discord {
    public_key: Ed25519PublicKey,
    tolerance: Duration,
}

impl Discord {
    pub(super) fn new(public_key: Ed25519PublicKey, tolerance: Duration) -> Discord {
        Discord {
            public_key,
            tolerance,
        }
    }
}

/// 128 hex characters to the 64 signature bytes.
pub(super) fn parse_signature(header: &str) -> Option<Vec<u8>> {
    common::hex_decode(header).filter(|s| s.len() == 64)
}

/// Ed25519 verification of `message` (RFC 8032, via ring).
pub(super) fn ed25519_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: Option<u64>,
}

impl Check for Discord {
    fn check(&self, req: &Inbound<'_>, now: u64) -> Result<Passed, VerifyError> {
        let sig = parse_signature(common::header(req, SIG)?).ok_or(VerifyError::malformed(SIG))?;
        let ts = common::header(req, TS)?;
        let ts_value = common::parse_unix(ts).ok_or(VerifyError::malformed(TS))?;
        let mut message = Vec::with_capacity(ts.len() + req.body.len());
        message.extend_from_slice(ts.as_bytes());
        message.extend_from_slice(req.body);
        if !ed25519_verify(&self.public_key.0, &message, &sig) {
            return Err(VerifyError::BadSignature);
        }
        common::check_fresh(ts_value, now, self.tolerance)?;
        let ping = serde_json::from_slice::<Interaction>(req.body).is_ok_and(|i| i.kind == Some(1));
        Ok(if ping {
            Passed::Answer(Reply::json(&serde_json::json!({ "type": 1 })))
        } else {
            Passed::Authentic { provider_key: None }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn hex(s: &str) -> Vec<u8> {
        common::hex_decode(s).unwrap()
    }

    /// RFC 8032 section 7.1, TESTs 1 to 3: (public key, message, signature).
    const RFC8032: [(&str, &str, &str); 3] = [
        (
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn rfc8032_vectors() {
        for (pk, msg, sig) in RFC8032 {
            let (pk, msg, sig) = (hex(pk), hex(msg), hex(sig));
            assert!(ed25519_verify(&pk, &msg, &sig));
            let mut bad = sig.clone();
            bad[0] ^= 1;
            assert!(!ed25519_verify(&pk, &msg, &bad));
            let mut other = msg.clone();
            other.push(0);
            assert!(!ed25519_verify(&pk, &other, &sig));
        }
        // RFC 8032 TEST 1 keys with TEST 2's signature.
        assert!(!ed25519_verify(&hex(RFC8032[0].0), &[], &hex(RFC8032[1].2)));
    }

    // Self-computed Discord-style vector (SIGNATURES.md): seed 32 x 0x01.
    const PUB: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    const TS_1: u64 = 1_700_000_000;
    const PING_SIG: &str = "9ef52e0980512fc86504213828935ead2d8ad69632af84e31aae7c0a1593a04f81779d871c1d68240dce56038c60788e51e59a6c3f14c72a4183c785b1e8b70e";

    fn discord() -> Discord {
        Discord::new(
            Ed25519PublicKey::from_hex(PUB).unwrap(),
            Duration::from_secs(300),
        )
    }

    fn dc_req(sig: &str, ts: &str, body: &str) -> Req {
        req(
            &[("X-Signature-Ed25519", sig), ("X-Signature-Timestamp", ts)],
            body,
        )
    }

    fn sign(ts: u64, body: &str) -> String {
        let kp = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
        assert_eq!(kp.public_key().as_ref(), hex(PUB).as_slice());
        let msg = format!("{ts}{body}");
        common::hex_encode(kp.sign(msg.as_bytes()).as_ref())
    }

    #[test]
    fn ping_is_answered_after_verifying() {
        assert_eq!(sign(TS_1, r#"{"type":1}"#), PING_SIG);
        let r = dc_req(PING_SIG, "1700000000", r#"{"type":1}"#);
        match discord().check(&r.inbound(), TS_1) {
            Ok(Passed::Answer(reply)) => assert_eq!(reply.body.as_ref(), br#"{"type":1}"#),
            _ => panic!("ping answered"),
        }
    }

    #[test]
    fn other_interactions_are_stored() {
        let body = r#"{"type":2,"id":"123","data":{"name":"hi"}}"#;
        let r = dc_req(&sign(TS_1, body), "1700000000", body);
        assert_eq!(assert_accepts(&discord(), &r, TS_1), None);
    }

    #[test]
    fn negatives() {
        let v = discord();
        // Tampered body, timestamp, signature; another key.
        let r = dc_req(PING_SIG, "1700000000", r#"{"type": 1}"#);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        let r = dc_req(PING_SIG, "1700000001", r#"{"type":1}"#);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        let flipped = format!("0{}", &PING_SIG[1..]);
        let r = dc_req(&flipped, "1700000000", r#"{"type":1}"#);
        assert_rejects(&v, &r, TS_1, VerifyError::BadSignature);
        let other = Discord::new(
            Ed25519PublicKey::from_hex(RFC8032[0].0).unwrap(),
            Duration::from_secs(300),
        );
        let r = dc_req(PING_SIG, "1700000000", r#"{"type":1}"#);
        assert_rejects(&other, &r, TS_1, VerifyError::BadSignature);
        // Stale, future.
        assert_rejects(&v, &r, TS_1 + 301, VerifyError::StaleTimestamp);
        assert_rejects(&v, &r, TS_1 - 301, VerifyError::StaleTimestamp);
        // Missing, malformed.
        let only_ts = req(&[("X-Signature-Timestamp", "1700000000")], "{}");
        assert_rejects(&v, &only_ts, TS_1, VerifyError::MissingHeader(SIG.into()));
        let only_sig = req(&[("X-Signature-Ed25519", PING_SIG)], "{}");
        assert_rejects(&v, &only_sig, TS_1, VerifyError::MissingHeader(TS.into()));
        let huge = "ab".repeat(30_000);
        for sig in ["garbage", "", &PING_SIG[..126], huge.as_str()] {
            let r = dc_req(sig, "1700000000", r#"{"type":1}"#);
            assert_rejects(&v, &r, TS_1, VerifyError::malformed(SIG));
        }
        for ts in ["", "x", "1.7e9"] {
            let r = dc_req(PING_SIG, ts, r#"{"type":1}"#);
            assert_rejects(&v, &r, TS_1, VerifyError::malformed(TS));
        }
    }
}
