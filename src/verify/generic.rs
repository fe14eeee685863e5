//! The generic schemes: `hmac` (a configured header holding an HMAC of the
//! body: algorithm, hex or base64, optional prefix), `token` (a shared token in
//! a configured header, or `Authorization: Bearer`), and `basic` (HTTP Basic
//! with the configured username and the secret as password).

use http::HeaderName;

use super::common;
use super::{Check, Inbound, Passed, VerifyError};
use crate::config::{HmacAlgorithm, SigEncoding};

pub(super) struct HmacHeader {
    keys: Vec<Vec<u8>>,
    header: HeaderName,
    algorithm: HmacAlgorithm,
    encoding: SigEncoding,
    prefix: Option<String>,
}

impl HmacHeader {
    pub(super) fn new(
        keys: Vec<Vec<u8>>,
        header: HeaderName,
        algorithm: HmacAlgorithm,
        encoding: SigEncoding,
        prefix: Option<String>,
    ) -> HmacHeader {
        HmacHeader {
            keys,
            header,
            algorithm,
            encoding,
            prefix,
        }
    }
}

/// The MAC bytes of a header value: the prefix (when configured) is required,
/// then the encoded MAC.
pub(super) fn parse_mac(
    value: &str,
    prefix: Option<&str>,
    encoding: SigEncoding,
) -> Option<Vec<u8>> {
    let encoded = match prefix {
        Some(p) => value.strip_prefix(p)?,
        None => value,
    };
    let mac = match encoding {
        SigEncoding::Hex => common::hex_decode(encoded)?,
        SigEncoding::Base64 => common::b64_decode(encoded)?,
    };
    (!mac.is_empty()).then_some(mac)
}

impl Check for HmacHeader {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        let name = self.header.as_str();
        let mac = parse_mac(
            common::header(req, name)?,
            self.prefix.as_deref(),
            self.encoding,
        )
        .ok_or_else(|| VerifyError::malformed(name))?;
        if !common::any_mac_matches(self.algorithm, &self.keys, &[req.body], &[mac]) {
            return Err(VerifyError::BadSignature);
        }
        Ok(Passed::Authentic { provider_key: None })
    }
}

pub(super) struct Token {
    secrets: Vec<Vec<u8>>,
    /// `None`: `Authorization: Bearer <token>`.
    header: Option<HeaderName>,
}

impl Token {
    pub(super) fn new(secrets: Vec<Vec<u8>>, header: Option<HeaderName>) -> Token {
        Token { secrets, header }
    }
}

/// `<scheme> <credentials>` of an `Authorization` header, the scheme matched
/// case-insensitively.
pub(super) fn auth_param<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    let rest = rest.trim_start_matches(' ');
    (s.eq_ignore_ascii_case(scheme) && !rest.is_empty()).then_some(rest)
}

impl Check for Token {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        let given = match &self.header {
            Some(h) => common::header(req, h.as_str())?,
            None => {
                let name = http::header::AUTHORIZATION.as_str();
                auth_param(common::header(req, name)?, "Bearer")
                    .ok_or_else(|| VerifyError::malformed(name))?
            }
        };
        if !bool::from(common::any_secret_eq(given.as_bytes(), &self.secrets)) {
            return Err(VerifyError::BadCredentials);
        }
        Ok(Passed::Authentic { provider_key: None })
    }
}

pub(super) struct Basic {
    passwords: Vec<Vec<u8>>,
    username: Vec<u8>,
}

impl Basic {
    pub(super) fn new(passwords: Vec<Vec<u8>>, username: &str) -> Basic {
        Basic {
            passwords,
            username: username.as_bytes().to_vec(),
        }
    }
}

/// `Basic <base64 of user:password>` to (user, password).
pub(super) fn parse_basic(value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let decoded = common::b64_decode(auth_param(value, "Basic")?)?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

impl Check for Basic {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        let name = http::header::AUTHORIZATION.as_str();
        let (user, password) =
            parse_basic(common::header(req, name)?).ok_or_else(|| VerifyError::malformed(name))?;
        let ok = common::secret_eq(&user, &self.username)
            & common::any_secret_eq(&password, &self.passwords);
        if !bool::from(ok) {
            return Err(VerifyError::BadCredentials);
        }
        Ok(Passed::Authentic { provider_key: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req};

    fn hmac(alg: HmacAlgorithm, enc: SigEncoding, prefix: Option<&str>) -> HmacHeader {
        HmacHeader::new(
            vec![b"It's a Secret to Everybody".to_vec()],
            HeaderName::from_static("x-signature"),
            alg,
            enc,
            prefix.map(str::to_owned),
        )
    }

    #[test]
    fn generic_hmac_reproduces_github_shopify_and_sha1() {
        // GitHub's documented vector through the generic scheme.
        let gh = hmac(HmacAlgorithm::Sha256, SigEncoding::Hex, Some("sha256="));
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_accepts(&gh, &req(&[("x-signature", sig)], "Hello, World!"), 0);
        assert_rejects(
            &gh,
            &req(&[("x-signature", sig)], "Hello, World?"),
            0,
            VerifyError::BadSignature,
        );
        // Prefix required when configured.
        let bare = &sig[7..];
        assert_rejects(
            &gh,
            &req(&[("x-signature", bare)], "Hello, World!"),
            0,
            VerifyError::malformed("x-signature"),
        );
        // The legacy sha1 value of the same inputs (self-computed in SIGNATURES.md).
        let sha1 = hmac(HmacAlgorithm::Sha1, SigEncoding::Hex, Some("sha1="));
        let s1 = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
        assert_accepts(&sha1, &req(&[("x-signature", s1)], "Hello, World!"), 0);
        // Shopify's vector through the generic scheme (base64, no prefix).
        let shop = HmacHeader::new(
            vec![b"test_secret_key".to_vec()],
            HeaderName::from_static("x-signature"),
            HmacAlgorithm::Sha256,
            SigEncoding::Base64,
            None,
        );
        let r = req(
            &[(
                "x-signature",
                "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=",
            )],
            r#"{"foo": "bar"}"#,
        );
        assert_accepts(&shop, &r, 0);
    }

    #[test]
    fn generic_hmac_sha512() {
        let v = hmac(HmacAlgorithm::Sha512, SigEncoding::Base64, None);
        let mac = common::mac(
            HmacAlgorithm::Sha512,
            b"It's a Secret to Everybody",
            &[b"body"],
        )
        .unwrap();
        assert_eq!(mac.len(), 64);
        let sig = crate::keys::b64_encode(&mac);
        assert_accepts(&v, &req(&[("x-signature", &sig)], "body"), 0);
        assert_rejects(
            &v,
            &req(&[("x-signature", &sig)], "bodY"),
            0,
            VerifyError::BadSignature,
        );
        // A SHA-256-sized value can never match.
        let short = crate::keys::b64_encode(&mac[..32]);
        assert_rejects(
            &v,
            &req(&[("x-signature", &short)], "body"),
            0,
            VerifyError::BadSignature,
        );
    }

    #[test]
    fn generic_hmac_missing_and_malformed() {
        let v = hmac(HmacAlgorithm::Sha256, SigEncoding::Hex, Some("sha256="));
        let name = "x-signature";
        assert_rejects(
            &v,
            &req(&[], "x"),
            0,
            VerifyError::MissingHeader(name.into()),
        );
        let huge = format!("sha256={}", "0".repeat(60_000));
        for value in ["garbage", "", "sha256=", "sha256=xyz", huge.as_str()] {
            let r = req(&[(name, value)], "x");
            let want = if value == huge {
                VerifyError::BadSignature
            } else {
                VerifyError::malformed(name)
            };
            assert_rejects(&v, &r, 0, want);
        }
    }

    #[test]
    fn token_in_a_header_or_bearer() {
        let v = Token::new(
            vec![b"old".to_vec(), b"s3cr3t".to_vec()],
            Some(HeaderName::from_static("x-gitlab-token")),
        );
        assert_accepts(&v, &req(&[("X-Gitlab-Token", "s3cr3t")], "{}"), 0);
        assert_accepts(&v, &req(&[("X-Gitlab-Token", "old")], "{}"), 0);
        for bad in ["s3cr3", "s3cr3t ", "S3CR3T", "s3cr3ts3cr3t"] {
            assert_rejects(
                &v,
                &req(&[("X-Gitlab-Token", bad)], "{}"),
                0,
                VerifyError::BadCredentials,
            );
        }
        assert_rejects(
            &v,
            &req(&[("X-Gitlab-Token", "")], "{}"),
            0,
            VerifyError::malformed("x-gitlab-token"),
        );
        assert_rejects(
            &v,
            &req(&[("Authorization", "Bearer s3cr3t")], "{}"),
            0,
            VerifyError::MissingHeader("x-gitlab-token".into()),
        );

        let bearer = Token::new(vec![b"s3cr3t".to_vec()], None);
        assert_accepts(
            &bearer,
            &req(&[("Authorization", "Bearer s3cr3t")], "{}"),
            0,
        );
        assert_accepts(
            &bearer,
            &req(&[("Authorization", "bearer  s3cr3t")], "{}"),
            0,
        );
        assert_rejects(
            &bearer,
            &req(&[("Authorization", "Bearer nope")], "{}"),
            0,
            VerifyError::BadCredentials,
        );
        let huge = format!("Bearer {}", "x".repeat(60_000));
        for bad in ["s3cr3t", "Basic s3cr3t", "Bearer", "Bearer ", ""] {
            assert_rejects(
                &bearer,
                &req(&[("Authorization", bad)], "{}"),
                0,
                VerifyError::malformed("authorization"),
            );
        }
        assert_rejects(
            &bearer,
            &req(&[("Authorization", &huge)], "{}"),
            0,
            VerifyError::BadCredentials,
        );
        assert_rejects(
            &bearer,
            &req(&[], "{}"),
            0,
            VerifyError::MissingHeader("authorization".into()),
        );
    }

    #[test]
    fn basic_auth() {
        let v = Basic::new(vec![b"pa:ss".to_vec(), b"new".to_vec()], "relay");
        let b = |user: &str, pass: &str| {
            format!(
                "Basic {}",
                crate::keys::b64_encode(format!("{user}:{pass}").as_bytes())
            )
        };
        assert_accepts(&v, &req(&[("Authorization", &b("relay", "pa:ss"))], ""), 0);
        assert_accepts(&v, &req(&[("Authorization", &b("relay", "new"))], ""), 0);
        for (u, p) in [
            ("relay", "nope"),
            ("other", "pa:ss"),
            ("relay", ""),
            ("", "pa:ss"),
        ] {
            assert_rejects(
                &v,
                &req(&[("Authorization", &b(u, p))], ""),
                0,
                VerifyError::BadCredentials,
            );
        }
        let no_colon = format!("Basic {}", crate::keys::b64_encode(b"relaypa"));
        let huge = format!("Basic {}", "A".repeat(60_000));
        for bad in [
            "Basic",
            "Basic !!!",
            "Bearer cmVsYXk6cGFzcw==",
            no_colon.as_str(),
            huge.as_str(),
            "",
        ] {
            assert_rejects(
                &v,
                &req(&[("Authorization", bad)], ""),
                0,
                VerifyError::malformed("authorization"),
            );
        }
        assert_rejects(
            &v,
            &req(&[], ""),
            0,
            VerifyError::MissingHeader("authorization".into()),
        );
    }
}
