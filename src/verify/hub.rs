//! `github` and `meta`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
//! body>` (the legacy SHA-1 `X-Hub-Signature` is never used). GitHub's
//! idempotency key is `X-GitHub-Hook-ID` + `X-GitHub-Delivery`; Meta has none
//! but answers the subscription handshake `GET ?hub.mode=subscribe&
//! hub.verify_token=...&hub.challenge=...` itself.

use bytes::Bytes;
use http::{Method, StatusCode};

use super::common;
use super::{Check, Inbound, Passed, Reply, VerifyError};
use crate::config::HmacAlgorithm;

const HEADER: &str = "x-hub-signature-256";

/// `sha256=<64 hex>` to the 32 MAC bytes.
pub(super) fn parse_sha256(header: &str) -> Option<Vec<u8>> {
    let mac = common::hex_decode(header.strip_prefix("sha256=")?)?;
    (mac.len() == 32).then_some(mac)
}

fn check_body(keys: &[Vec<u8>], req: &Inbound<'_>) -> Result<(), VerifyError> {
    let mac = parse_sha256(common::header(req, HEADER)?).ok_or(VerifyError::malformed(HEADER))?;
    if common::any_mac_matches(HmacAlgorithm::Sha256, keys, &[req.body], &[mac]) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

pub(super) struct Github {
    keys: Vec<Vec<u8>>,
}

impl Github {
    pub(super) fn new(keys: Vec<Vec<u8>>) -> Github {
        Github { keys }
    }
}

impl Check for Github {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        check_body(&self.keys, req)?;
        // The delivery GUID is shared by every hook subscribed to the event,
        // hence scoped by the hook id.
        let provider_key = common::key_from_header(req.headers, "x-github-delivery").map(|d| {
            let hook = common::key_from_header(req.headers, "x-github-hook-id").unwrap_or_default();
            common::bounded_key(&format!("{hook}:{d}"))
        });
        Ok(Passed::Authentic { provider_key })
    }
}

pub(super) struct Meta {
    keys: Vec<Vec<u8>>,
    verify_token: Vec<u8>,
}

impl Meta {
    pub(super) fn new(keys: Vec<Vec<u8>>, verify_token: Vec<u8>) -> Meta {
        Meta { keys, verify_token }
    }

    /// The subscription handshake: the challenge back as text when the mode is
    /// `subscribe` and the token matches (compared in constant time).
    fn handshake(&self, req: &Inbound<'_>) -> Result<Passed, VerifyError> {
        let query = req.uri.query().unwrap_or("").as_bytes();
        let mode = common::form_value(query, "hub.mode");
        let token = common::form_value(query, "hub.verify_token").unwrap_or_default();
        let challenge = common::form_value(query, "hub.challenge");
        let token_ok = bool::from(common::secret_eq(&token, &self.verify_token));
        match (mode.as_deref(), challenge) {
            (Some(b"subscribe"), Some(challenge)) if token_ok => Ok(Passed::Answer(Reply {
                status: StatusCode::OK,
                content_type: "text/plain; charset=utf-8",
                body: Bytes::from(challenge),
            })),
            _ => Err(VerifyError::HandshakeRefused),
        }
    }
}

impl Check for Meta {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        if req.method == Method::GET {
            return self.handshake(req);
        }
        check_body(&self.keys, req)?;
        Ok(Passed::Authentic { provider_key: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    // GH-1: GitHub's docs, "Validating webhook deliveries".
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &str = "Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github(secrets: &[&str]) -> Github {
        Github::new(secrets.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    fn meta() -> Meta {
        Meta::new(vec![GH_SECRET.as_bytes().to_vec()], b"tok en/+1".to_vec())
    }

    fn gh_req(sig: &str, body: &str) -> Req {
        req(
            &[
                ("X-Hub-Signature-256", sig),
                ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                ("X-GitHub-Hook-ID", "292430182"),
                ("X-GitHub-Event", "push"),
            ],
            body,
        )
    }

    #[test]
    fn official_vector_verifies_and_the_key_is_hook_plus_delivery() {
        let key = assert_accepts(&github(&[GH_SECRET]), &gh_req(GH_SIG, GH_BODY), 0);
        assert_eq!(
            key.as_deref(),
            Some("292430182:72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        // Upper-case hex is the same MAC.
        let upper = format!("sha256={}", GH_SIG[7..].to_uppercase());
        assert_accepts(&github(&[GH_SECRET]), &gh_req(&upper, GH_BODY), 0);
        // Without a delivery id there is no provider key.
        let r = req(&[("X-Hub-Signature-256", GH_SIG)], GH_BODY);
        assert_eq!(assert_accepts(&github(&[GH_SECRET]), &r, 0), None);
    }

    #[test]
    fn tampered_wrong_secret_rotation() {
        let v = github(&[GH_SECRET]);
        assert_rejects(
            &v,
            &gh_req(GH_SIG, "Hello, World?"),
            0,
            VerifyError::BadSignature,
        );
        let r = gh_req(GH_SIG, GH_BODY);
        assert_rejects(&github(&["nope"]), &r, 0, VerifyError::BadSignature);
        assert_accepts(&github(&["nope", GH_SECRET]), &r, 0);
    }

    #[test]
    fn missing_and_malformed() {
        let v = github(&[GH_SECRET]);
        let missing = VerifyError::MissingHeader(HEADER.into());
        assert_rejects(&v, &req(&[], GH_BODY), 0, missing.clone());
        // The legacy SHA-1 header alone is not accepted.
        let sha1 = [(
            "X-Hub-Signature",
            "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
        )];
        assert_rejects(&v, &req(&sha1, GH_BODY), 0, missing);
        let huge = format!("sha256={}", "ab".repeat(30_000));
        let bad = [
            "garbage",
            "",
            "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
            "sha256=",
            "sha256=zz",
            &GH_SIG[..GH_SIG.len() - 2],
            "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            huge.as_str(),
        ];
        for h in bad {
            let r = gh_req(h, GH_BODY);
            assert_rejects(&v, &r, 0, VerifyError::malformed(HEADER));
        }
    }

    #[test]
    fn meta_posts_verify_like_github_without_a_key() {
        let r = gh_req(GH_SIG, GH_BODY);
        assert_eq!(assert_accepts(&meta(), &r, 0), None);
        assert_rejects(&meta(), &gh_req(GH_SIG, "x"), 0, VerifyError::BadSignature);
        let other = Meta::new(vec![b"other".to_vec()], b"t".to_vec());
        assert_rejects(
            &other,
            &gh_req(GH_SIG, GH_BODY),
            0,
            VerifyError::BadSignature,
        );
        let missing = VerifyError::MissingHeader(HEADER.into());
        assert_rejects(&meta(), &req(&[], GH_BODY), 0, missing);
        let huge = "f".repeat(60_000);
        for h in ["garbage", "", huge.as_str()] {
            let r = req(&[("X-Hub-Signature-256", h)], GH_BODY);
            assert_rejects(&meta(), &r, 0, VerifyError::malformed(HEADER));
        }
    }

    fn get(query: &str) -> Req {
        let mut r = req(&[], "");
        r.method = Method::GET;
        r.uri = format!("/hooks/meta?{query}").parse().unwrap();
        r
    }

    #[test]
    fn meta_handshake() {
        let v = meta();
        let ok = get("hub.mode=subscribe&hub.verify_token=tok+en%2F%2B1&hub.challenge=1158201444");
        match v.check(&ok.inbound(), 0) {
            Ok(Passed::Answer(reply)) => {
                assert_eq!(reply.status, StatusCode::OK);
                assert_eq!(reply.body.as_ref(), b"1158201444");
                assert!(reply.content_type.starts_with("text/plain"));
            }
            _ => panic!("handshake answered"),
        }
        let refused = [
            "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
            "hub.mode=subscribe&hub.verify_token=tok+en%2F%2B&hub.challenge=1",
            "hub.mode=unsubscribe&hub.verify_token=tok+en%2F%2B1&hub.challenge=1",
            "hub.mode=subscribe&hub.verify_token=tok+en%2F%2B1",
            "hub.mode=subscribe&hub.challenge=1",
            "",
            "%%%&&&===",
        ];
        for q in refused {
            assert!(
                matches!(
                    v.check(&get(q).inbound(), 0),
                    Err(VerifyError::HandshakeRefused)
                ),
                "{q}"
            );
        }
    }
}
