//! Key material, decoded once when the config loads and used as it is by
//! verification and delivery: Standard Webhooks `whsec_` keys (which sign
//! outbound deliveries too), Ed25519 public keys (Discord) and the RSA key of
//! a PEM certificate (PayPal), the inbound listeners' TLS certificate and
//! key; plus the one base64 and the one hex codec the crate uses.
//!
//! Owns decoding and the Standard Webhooks MAC. Must not read files, talk to
//! the network, or show key bytes: every key type's `Debug` is redacted and no
//! error carries input.

mod tls;
mod x509;

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use tls::{cert_chain_of_pem, private_key_of_pem, TlsIdentity, TlsKeyError};
#[cfg(any(test, feature = "fuzzing"))]
pub use x509::rsa_public_key;
pub use x509::rsa_public_key_of_pem;

/// Standard alphabet; decoding takes padded and unpadded input alike, since
/// secrets and signatures are written both ways in the wild. Encoding pads.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard-alphabet base64, padded or not.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.as_bytes()).ok()
}

/// Standard base64 with padding.
pub fn b64_encode(b: &[u8]) -> String {
    B64.encode(b)
}

/// Hex (either case) to bytes; `None` unless every character is a hex digit
/// and the length is even.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Lowercase hex.
pub fn hex_encode(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// A Standard Webhooks key: the bytes behind `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct WhsecKey(Vec<u8>);

impl WhsecKey {
    /// `whsec_<base64>`, or the base64 alone; `None` if not base64 or empty.
    pub fn parse(secret: &[u8]) -> Option<WhsecKey> {
        let b64 = secret.strip_prefix(b"whsec_").unwrap_or(secret);
        let key = b64_decode(std::str::from_utf8(b64).ok()?)?;
        (!key.is_empty()).then_some(WhsecKey(key))
    }

    /// HMAC-SHA256 over `id.timestamp.body`, the signed content of the spec.
    pub fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length, so this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }

    /// The `webhook-signature` value for one message: `v1,<base64 MAC>`.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        format!("v1,{}", b64_encode(&self.mac(id, timestamp, body)))
    }
}

impl fmt::Debug for WhsecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WhsecKey([redacted])")
    }
}

/// An Ed25519 public key (not secret, but long: shown shortened).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ed25519PublicKey(pub [u8; 32]);

impl Ed25519PublicKey {
    /// 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Ed25519PublicKey> {
        hex_decode(s)?.try_into().ok().map(Ed25519PublicKey)
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({}..)", hex_encode(&self.0[..4]))
    }
}

/// An RSA public key as PKCS#1 `RSAPublicKey` DER, the form ring verifies with.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey(pub Vec<u8>);

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublicKey({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        assert_eq!(hex_decode("00ffA0").unwrap(), vec![0, 255, 160]);
        assert_eq!(hex_encode(&[0, 255, 160]), "00ffa0");
        for bad in ["0", "zz", "0g", "+1", " 01", "é1"] {
            assert_eq!(hex_decode(bad), None, "{bad}");
        }
        assert_eq!(hex_decode(""), Some(vec![]));
    }

    /// Standard Webhooks spec test vector (SIGNATURES.md section 1.6).
    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        let key = WhsecKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn whsec_keys_parse_with_or_without_prefix_and_padding() {
        let a = WhsecKey::parse(b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let b = WhsecKey::parse(b"C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(a, b);
        assert!(WhsecKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_some());
        for bad in [&b"whsec_"[..], b"whsec_!!notbase64", b"", b"\xff"] {
            assert!(WhsecKey::parse(bad).is_none());
        }
        assert_eq!(format!("{a:?}"), "WhsecKey([redacted])");
    }

    #[test]
    fn ed25519_keys_are_64_hex_characters() {
        let k = Ed25519PublicKey::from_hex(&"ee".repeat(32)).unwrap();
        assert_eq!(k.0, [0xee; 32]);
        for bad in ["abcd", &"ee".repeat(33), &"zz".repeat(32)] {
            assert!(Ed25519PublicKey::from_hex(bad).is_none(), "{bad}");
        }
    }
}
