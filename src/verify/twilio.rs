//! `twilio`: `X-Twilio-Signature: <base64 HMAC-SHA1>` keyed with the Auth
//! Token, over the public URL Twilio requested followed by the form
//! parameters sorted by name (`name` + `value`, no separators). The relay sits
//! behind a proxy, so the URL is the configured `public_url` with the
//! request's own query string (when it has one) in place of any configured one.
//!
//! JSON bodies use the `bodySHA256` variant: the query carries the hex SHA-256
//! of the body, which must match, and the signature covers the URL alone.
//! Like Twilio's libraries, the URL is tried as configured, with the default
//! port added, and with an explicit port removed. No timestamp.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::common;
use super::{Check, Inbound, Passed, VerifyError};
use crate::config::HmacAlgorithm;

const HEADER: &str = "x-twilio-signature";

pub(super) struct Twilio {
    keys: Vec<Vec<u8>>,
    /// `public_url` without its query: as configured, with and without port.
    bases: Vec<String>,
    /// The query of `public_url`, used when the request has none.
    configured_query: Option<String>,
}

impl Twilio {
    /// `public_url` was checked at config load to be an http(s) URL with a
    /// host; one that still yields no variant is used as written.
    pub(super) fn new(keys: Vec<Vec<u8>>, public_url: &str) -> Twilio {
        let (base, query) = match public_url.split_once('?') {
            Some((b, q)) => (b, Some(q.to_owned())),
            None => (public_url, None),
        };
        let base = base.split('#').next().unwrap_or(base);
        let bases = url_variants(base).unwrap_or_else(|| vec![base.to_owned()]);
        Twilio {
            keys,
            bases,
            configured_query: query.filter(|q| !q.is_empty()),
        }
    }

    /// Every URL Twilio may have signed for this request.
    fn urls(&self, req: &Inbound<'_>) -> Vec<String> {
        let query = req
            .uri
            .query()
            .filter(|q| !q.is_empty())
            .or(self.configured_query.as_deref());
        self.bases
            .iter()
            .map(|b| match query {
                Some(q) => format!("{b}?{q}"),
                None => b.clone(),
            })
            .collect()
    }
}

/// `url` as given, with the scheme's default port added (if it has none), and
/// with its explicit port removed (if it has one); duplicates dropped.
pub(super) fn url_variants(url: &str) -> Option<Vec<String>> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = uri.authority()?.as_str();
    let after_scheme = &url[url.find("://")? + 3..];
    let rest = after_scheme.strip_prefix(authority)?;
    let (with, without) = match uri.port() {
        Some(p) => {
            let bare = authority.strip_suffix(&format!(":{}", p.as_str()))?;
            (authority.to_owned(), bare.to_owned())
        }
        None => (format!("{authority}:{default_port}"), authority.to_owned()),
    };
    let mut out = vec![url.to_owned()];
    for a in [with, without] {
        let v = format!("{scheme}://{a}{rest}");
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Some(out)
}

/// Form parameters in Twilio's signing order: names sorted, and for each name
/// its distinct values sorted (as twilio-python does), `name` + `value` each.
pub(super) fn signed_params(body: &[u8]) -> Vec<u8> {
    let mut pairs = common::form_pairs(body);
    pairs.sort();
    pairs.dedup();
    let mut out = Vec::with_capacity(body.len());
    for (k, v) in pairs {
        out.extend_from_slice(&k);
        out.extend_from_slice(&v);
    }
    out
}

/// Base64 of exactly 20 bytes (an HMAC-SHA1).
pub(super) fn parse_signature(header: &str) -> Option<Vec<u8>> {
    common::b64_decode(header).filter(|m| m.len() == 20)
}

impl Check for Twilio {
    fn check(&self, req: &Inbound<'_>, _now: u64) -> Result<Passed, VerifyError> {
        let sig =
            parse_signature(common::header(req, HEADER)?).ok_or(VerifyError::malformed(HEADER))?;
        let urls = self.urls(req);
        // Every URL variant carries the same query; read it from the first.
        let query = urls
            .first()
            .and_then(|u| u.split_once('?'))
            .map_or(&b""[..], |(_, q)| q.as_bytes());
        let params = match common::form_value(query, "bodySHA256") {
            Some(claimed) => {
                let actual = Sha256::digest(req.body);
                let claimed = std::str::from_utf8(&claimed)
                    .ok()
                    .and_then(common::hex_decode)
                    .unwrap_or_default();
                if !bool::from(actual.as_slice().ct_eq(&claimed)) {
                    return Err(VerifyError::BadSignature);
                }
                Vec::new()
            }
            None if common::content_type_is(req, "application/x-www-form-urlencoded") => {
                signed_params(req.body)
            }
            None => Vec::new(),
        };
        let sigs = [sig];
        let ok = urls.iter().fold(false, |ok, url| {
            let parts = [url.as_bytes(), &params];
            ok | common::any_mac_matches(HmacAlgorithm::Sha1, &self.keys, &parts, &sigs)
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        Ok(Passed::Authentic { provider_key: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{assert_accepts, assert_rejects, req, Req};

    // TW-1 and TW-2: twilio-python tests/unit/test_request_validator.py.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php";
    const QUERY: &str = "foo=1&bar=2";
    const FORM: &str = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    const FORM_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const FORM_SIG_443: &str = "kvajT1Ptam85bY51eRf/AJRuM3w=";
    const FORM_SIG_HTTP_80: &str = "0ZXoZLH/DfblKGATFgpif+LLRf4=";
    const FORM_SIG_PORT_1234: &str = "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=";
    const MULTI_FORM: &str = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    const MULTI_SIG: &str = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_SIG: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";

    fn twilio(url: &str) -> Twilio {
        Twilio::new(vec![TOKEN.as_bytes().to_vec()], url)
    }

    fn form_req(query: &str, sig: &str, body: &str) -> Req {
        let mut r = req(
            &[
                ("X-Twilio-Signature", sig),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
            ],
            body,
        );
        r.uri = format!("/hooks/twilio?{query}").parse().unwrap();
        r
    }

    #[test]
    fn official_form_vectors() {
        let r = form_req(QUERY, FORM_SIG, FORM);
        assert_eq!(assert_accepts(&twilio(URL), &r, 0), None);
        // Twilio may have signed the URL with the default port spelled out;
        // and an operator may have configured it that way.
        let r = form_req(QUERY, FORM_SIG_443, FORM);
        assert_accepts(&twilio(URL), &r, 0);
        let r = form_req(QUERY, FORM_SIG, FORM);
        assert_accepts(&twilio("https://mycompany.com:443/myapp.php"), &r, 0);
        let r = form_req(QUERY, FORM_SIG_HTTP_80, FORM);
        assert_accepts(&twilio("http://mycompany.com/myapp.php"), &r, 0);
        let r = form_req(QUERY, FORM_SIG_PORT_1234, FORM);
        assert_accepts(&twilio("http://mycompany.com:1234/myapp.php"), &r, 0);
        // Multi-valued parameters.
        let r = form_req(QUERY, MULTI_SIG, MULTI_FORM);
        assert_accepts(&twilio(URL), &r, 0);
        // The query may also be part of the configured URL.
        let mut r = form_req(QUERY, FORM_SIG, FORM);
        r.uri = "/hooks/twilio".parse().unwrap();
        assert_accepts(&twilio(&format!("{URL}?{QUERY}")), &r, 0);
    }

    #[test]
    fn the_signed_string_matches_the_documented_one() {
        let s = format!("{URL}?{QUERY}").into_bytes();
        let p = signed_params(FORM.as_bytes());
        let want = "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212";
        assert_eq!([s, p].concat(), want.as_bytes());
    }

    #[test]
    fn official_json_vector() {
        let query = format!("{QUERY}&bodySHA256={JSON_HASH}");
        let mut r = req(
            &[
                ("X-Twilio-Signature", JSON_SIG),
                ("Content-Type", "application/json"),
            ],
            JSON_BODY,
        );
        r.uri = format!("/hooks/twilio?{query}").parse().unwrap();
        assert_accepts(&twilio(URL), &r, 0);
        // The body no longer matches its hash.
        r.body = br#"{"property": "value", "boolean": false}"#.to_vec();
        assert_rejects(&twilio(URL), &r, 0, VerifyError::BadSignature);
    }

    #[test]
    fn negatives() {
        let v = twilio(URL);
        // Tampered parameter, missing query, wrong token, another URL.
        let r = form_req(QUERY, FORM_SIG, &FORM.replace("1234", "1235"));
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);
        let r = form_req("foo=1", FORM_SIG, FORM);
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);
        let r = form_req(QUERY, FORM_SIG, FORM);
        let wrong = Twilio::new(vec![b"54321".to_vec()], URL);
        assert_rejects(&wrong, &r, 0, VerifyError::BadSignature);
        let rotated = Twilio::new(vec![b"54321".to_vec(), TOKEN.into()], URL);
        assert_accepts(&rotated, &r, 0);
        assert_rejects(
            &twilio("https://other.com/myapp.php"),
            &r,
            0,
            VerifyError::BadSignature,
        );
        // Not form-encoded: the parameters are not part of the signed string.
        let mut r = form_req(QUERY, FORM_SIG, FORM);
        r.headers
            .insert("content-type", "text/plain".parse().unwrap());
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);

        let mut r = form_req(QUERY, FORM_SIG, FORM);
        r.headers.remove(HEADER);
        assert_rejects(&v, &r, 0, VerifyError::MissingHeader(HEADER.into()));
        let huge = "A".repeat(40_000);
        for sig in ["garbage!", "", "RSOYDt4T1cUTdK1PDd93", huge.as_str()] {
            let r = form_req(QUERY, sig, FORM);
            assert_rejects(&v, &r, 0, VerifyError::malformed(HEADER));
        }
        // A bodySHA256 that is not hex, or absent on a JSON body.
        let mut r = req(&[("X-Twilio-Signature", JSON_SIG)], JSON_BODY);
        r.uri = format!("/x?{QUERY}&bodySHA256=zz").parse().unwrap();
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);
        r.uri = format!("/x?{QUERY}").parse().unwrap();
        assert_rejects(&v, &r, 0, VerifyError::BadSignature);
    }

    #[test]
    fn url_variants_cover_ports() {
        assert_eq!(
            url_variants("https://a.example/x").unwrap(),
            ["https://a.example/x", "https://a.example:443/x"]
        );
        assert_eq!(
            url_variants("http://a.example:8080/x").unwrap(),
            ["http://a.example:8080/x", "http://a.example/x"]
        );
        assert_eq!(
            url_variants("https://[::1]:8443/x").unwrap(),
            ["https://[::1]:8443/x", "https://[::1]/x"]
        );
        assert_eq!(
            url_variants("http://http/x").unwrap(),
            ["http://http/x", "http://http:80/x"]
        );
        assert!(url_variants("ftp://a/x").is_none());
        assert!(url_variants("not a url").is_none());
    }
}
