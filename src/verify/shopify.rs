//! `shopify`: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>` with
//! the app's client secret (the newer unprefixed `shopify-hmac-sha256` when
//! the prefixed one is absent). No timestamp. Idempotency key:
//! `X-Shopify-Event-Id`, else `X-Shopify-Webhook-Id`.

use super::common;
use super::{Check, Inbound, Passed, VerifyError};
use crate::config::HmacAlgorithm;

const HEADER: &str = "x-shopify-hmac-sha256";
const HEADER_UNPREFIXED: &str = "shopify-hmac-sha256";

pub(super) struct Shopify {
    keys: Vec<Vec<u8>>,
}

impl Shopify {
    pub(super) fn new(keys: Vec<Vec<u8>>) -> Shopify {
        Shopify { keys }
    }
}

/// Base64 of exactly 32 bytes.
pub(super) fn parse(header: &str) -> Option<Vec<u8>> {
    common::b64_decode(header).filter(|m| m.len() == 32)
}

impl Check for Shopify {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        let name = if common::optional_header(req, HEADER)?.is_none()
            && common::optional_header(req, HEADER_UNPREFIXED)?.is_some()
        {
            HEADER_UNPREFIXED
        } else {
            HEADER
        };
        let mac = parse(common::header(req, name)?).ok_or(VerifyError::malformed(name))?;
        if !common::any_mac_matches(HmacAlgorithm::Sha256, &self.keys, &[req.body], &[mac]) {
            return Err(VerifyError::BadSignature);
        }
        let provider_key = common::key_from_header(req.headers, "x-shopify-event-id")
            .or_else(|| common::key_from_header(req.headers, "x-shopify-webhook-id"));
        Ok(Passed::Authentic { provider_key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    // SH-1: shopify-app-js validate.test.ts "returns true for valid request".
    const SH_SECRET: &str = "test_secret_key";
    const SH_BODY: &str = r#"{"foo": "bar"}"#;
    const SH_SIG: &str = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=";

    fn shopify(secrets: &[&str]) -> Shopify {
        Shopify::new(secrets.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    fn sh_req(sig: &str, body: &str, extra: &[(&str, &str)]) -> Req {
        let mut h = vec![
            ("X-Shopify-Hmac-Sha256", sig),
            ("X-Shopify-Topic", "products/create"),
            ("X-Shopify-Shop-Domain", "shop1.myshopify.io"),
            ("X-Shopify-API-Version", "2023-01"),
        ];
        h.extend_from_slice(extra);
        req(&h, body)
    }

    #[test]
    fn official_vector_and_keys() {
        let v = shopify(&[SH_SECRET]);
        let r = sh_req(SH_SIG, SH_BODY, &[("X-Shopify-Webhook-Id", "123456789")]);
        assert_eq!(assert_accepts(&v, &r, 0).as_deref(), Some("123456789"));
        let r = sh_req(
            SH_SIG,
            SH_BODY,
            &[
                ("X-Shopify-Webhook-Id", "123456789"),
                ("X-Shopify-Event-Id", "evt-98"),
            ],
        );
        assert_eq!(assert_accepts(&v, &r, 0).as_deref(), Some("evt-98"));
        assert_eq!(assert_accepts(&v, &sh_req(SH_SIG, SH_BODY, &[]), 0), None);
        // Unpadded base64 and the unprefixed header name.
        let r = req(
            &[("shopify-hmac-sha256", SH_SIG.trim_end_matches('='))],
            SH_BODY,
        );
        assert_accepts(&v, &r, 0);
    }

    #[test]
    fn negatives() {
        let v = shopify(&[SH_SECRET]);
        let r = sh_req(SH_SIG, r#"{"foo":"bar"}"#, &[]);
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);
        let r = sh_req(SH_SIG, SH_BODY, &[]);
        assert_rejects(&shopify(&["other"]), &r, 0, VerifyError::BadSignature);
        assert_accepts(&shopify(&["other", SH_SECRET]), &r, 0);
        let missing = VerifyError::MissingHeader(HEADER.into());
        assert_rejects(&v, &req(&[], SH_BODY), 0, missing);
        let huge = "A".repeat(50_000);
        // A hex MAC is not Shopify's encoding.
        let hex = "076ded5cdebad60674a885a946b82dcc113d5d20e8e72694bbac1f9a1bb76bb8";
        for h in ["garbage!", "", "B23tXN681gZ0", hex, huge.as_str()] {
            let r = sh_req(h, SH_BODY, &[]);
            assert_rejects(&v, &r, 0, VerifyError::malformed(HEADER));
        }
    }
}
