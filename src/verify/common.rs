//! Helpers every scheme shares: reading headers under one policy, HMAC,
//! constant-time comparison, timestamps (hex and base64 come from
//! [`crate::keys`]), and
//! `application/x-www-form-urlencoded` parsing. Nothing here panics on input.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use super::{Inbound, VerifyError};
use crate::config::HmacAlgorithm;
pub(super) use crate::keys::{b64_decode, hex_decode, hex_encode};

/// More candidate signatures than this in one header is refused as malformed
/// (rotation needs two or three; this bounds the work an attacker can ask for).
pub(super) const MAX_CANDIDATES: usize = 16;

/// Idempotency keys longer than this are replaced by their SHA-256.
const MAX_KEY_BYTES: usize = 200;

/// The one value of header `name` as text.
///
/// Policy: absent is [`VerifyError::MissingHeader`]; present more than once,
/// empty, or not visible ASCII is [`VerifyError::MalformedHeader`].
pub(super) fn header<'a>(req: &Inbound<'a>, name: &str) -> Result<&'a str, VerifyError> {
    optional_header(req, name)?.ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
}

/// Same as [`header`], with absence as `None`.
pub(super) fn optional_header<'a>(
    req: &Inbound<'a>,
    name: &str,
) -> Result<Option<&'a str>, VerifyError> {
    let headers: &'a http::HeaderMap = req.headers;
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = || VerifyError::MalformedHeader(name.to_owned());
    if values.next().is_some() {
        return Err(malformed());
    }
    match value.to_str() {
        Ok(s) if !s.is_empty() => Ok(Some(s)),
        _ => Err(malformed()),
    }
}

/// An idempotency key from header `name`: its first value, when it is
/// non-empty visible ASCII. Keys are not secrets, and not authenticated either.
pub(super) fn key_from_header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(bounded_key)
}

/// The key itself, or `sha256:<hex>` of it when it is longer than
/// [`MAX_KEY_BYTES`], so the dedup index stays small.
pub(super) fn bounded_key(key: &str) -> String {
    if key.len() <= MAX_KEY_BYTES {
        key.to_owned()
    } else {
        format!("sha256:{}", hex_encode(&Sha256::digest(key.as_bytes())))
    }
}

/// HMAC of the concatenation of `parts` under `key`. HMAC takes keys of any
/// length, so this is always `Some`; `None` would mean "matches nothing".
pub(super) fn mac(alg: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut m = <M as Mac>::new_from_slice(key).ok()?;
        for p in parts {
            m.update(p);
        }
        Some(m.finalize().into_bytes().to_vec())
    }
    match alg {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

/// Whether any candidate equals the HMAC of `parts` under any key. Every pair
/// is compared in constant time and all pairs are always compared.
pub(super) fn any_mac_matches(
    alg: HmacAlgorithm,
    keys: &[Vec<u8>],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> bool {
    let mut ok = Choice::from(0);
    for key in keys {
        let Some(expected) = mac(alg, key, parts) else {
            continue;
        };
        for c in candidates {
            ok |= expected.as_slice().ct_eq(c.as_slice());
        }
    }
    ok.into()
}

/// Constant-time equality of a presented credential and a configured one.
/// Both are hashed first, so not even the length of the secret leaks.
pub(super) fn secret_eq(given: &[u8], expected: &[u8]) -> Choice {
    Sha256::digest(given).ct_eq(&Sha256::digest(expected))
}

/// Whether `given` equals any of `secrets`, comparing against all of them.
pub(super) fn any_secret_eq(given: &[u8], secrets: &[Vec<u8>]) -> Choice {
    secrets
        .iter()
        .fold(Choice::from(0), |ok, s| ok | secret_eq(given, s))
}

/// Unix seconds written as 1 to 19 ASCII digits (no sign, no spaces).
pub(super) fn parse_unix(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Replay protection: `ts` must be within `tolerance` of `now`, in either direction.
pub(super) fn check_fresh(ts: u64, now: u64, tolerance: Duration) -> Result<(), VerifyError> {
    if ts.abs_diff(now) > tolerance.as_secs() {
        Err(VerifyError::StaleTimestamp)
    } else {
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` pairs, as browsers and the `url`
/// crate read them: split on `&`, skip empty pieces, split each on the first
/// `=`, `+` is a space, `%XX` is a byte, and a `%` not followed by two hex
/// digits stays as it is.
pub(super) fn form_pairs(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    input
        .split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&c| c == b'=') {
            Some(i) => (form_decode(&p[..i]), form_decode(&p[i + 1..])),
            None => (form_decode(p), Vec::new()),
        })
        .collect()
}

/// The first value of `name` in a query string or form body.
pub(super) fn form_value(input: &[u8], name: &str) -> Option<Vec<u8>> {
    form_pairs(input)
        .into_iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v)
}

fn form_decode(input: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex);
                let lo = input.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi << 4) | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether the request's `Content-Type` is `essence` (case-insensitive,
/// parameters such as `charset` ignored).
pub(super) fn content_type_is(req: &Inbound<'_>, essence: &str) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(essence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_timestamps_are_plain_digits() {
        assert_eq!(parse_unix("1614265330"), Some(1614265330));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.5",
            "99999999999999999999",
            "0x10",
        ] {
            assert_eq!(parse_unix(bad), None, "{bad}");
        }
    }

    #[test]
    fn tolerance_is_symmetric_and_inclusive() {
        let t = Duration::from_secs(300);
        assert!(check_fresh(1000, 1300, t).is_ok());
        assert!(check_fresh(1300, 1000, t).is_ok());
        assert_eq!(check_fresh(1000, 1301, t), Err(VerifyError::StaleTimestamp));
        assert_eq!(check_fresh(1301, 1000, t), Err(VerifyError::StaleTimestamp));
        assert_eq!(
            check_fresh(0, u64::MAX, t),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn form_decoding_matches_browsers() {
        let pairs = form_pairs(b"a=1&&b=x+y%2Bz&c&d=%zz%4&e=%41=");
        let text: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let want = [
            ("a", "1"),
            ("b", "x y+z"),
            ("c", ""),
            ("d", "%zz%4"),
            ("e", "A="),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(text, want);
        assert_eq!(form_value(b"x=1&x=2", "x"), Some(b"1".to_vec()));
    }

    #[test]
    fn long_keys_are_hashed() {
        assert_eq!(bounded_key("abc"), "abc");
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let k = bounded_key(&long);
        assert!(k.starts_with("sha256:") && k.len() == 7 + 64);
        assert_ne!(k, bounded_key(&"k".repeat(MAX_KEY_BYTES + 2)));
    }

    #[test]
    fn secret_comparison() {
        assert!(bool::from(secret_eq(b"abc", b"abc")));
        assert!(!bool::from(secret_eq(b"abc", b"abd")));
        assert!(!bool::from(secret_eq(b"abc", b"abcd")));
        let s = vec![b"one".to_vec(), b"two".to_vec()];
        assert!(bool::from(any_secret_eq(b"two", &s)));
        assert!(!bool::from(any_secret_eq(b"three", &s)));
    }
}
