//! The `verify` tables: every scheme's keys, secrets in every form, and
//! keys that do not apply to a scheme.

use std::time::Duration;

use super::*;

#[test]
fn verify_secret_must_be_given_exactly_one_way() {
    refuse_verify("scheme = \"stripe\"", "", "needs a secret");
    refuse_verify(
        "scheme = \"stripe\", secret = \"whsec_x\", secret_env = \"SET\"",
        ".secret_env",
        "both set",
    );
}

#[test]
fn verify_secrets_come_from_every_form() {
    let c = load(&with_verify("scheme = \"github\", secret = \"lit\"")).unwrap();
    assert_eq!(c.sources[0].verify.shared_secrets()[0].expose(), b"lit");
    let c = load(&with_verify(
        "scheme = \"github\", secrets = [\"one\", \"two\"]",
    ))
    .unwrap();
    assert_eq!(c.sources[0].verify.shared_secrets().len(), 2);
    let c = load(&with_verify("scheme = \"github\", secret_env = \"SET\"")).unwrap();
    assert_eq!(
        c.sources[0].verify.shared_secrets()[0].expose(),
        b"s3cr3t-from-env"
    );
    let c = load(&with_verify(
        "scheme = \"github\", secrets_env = [\"SET\", \"OTHER\"]",
    ))
    .unwrap();
    assert_eq!(
        c.sources[0].verify.shared_secrets()[1].expose(),
        b"other-from-env"
    );
}

#[test]
fn missing_or_empty_env_vars_and_files_are_errors() {
    refuse_verify(
        "scheme = \"github\", secret_env = \"NOPE_NOT_SET\"",
        ".secret_env",
        "NOPE_NOT_SET is not set",
    );
    refuse_verify(
        "scheme = \"github\", secrets_env = [\"SET\", \"EMPTY\"]",
        ".secrets_env[1]",
        "EMPTY is empty",
    );
    refuse_verify(
        "scheme = \"github\", secret_file = \"/nonexistent/hookrelay/secret\"",
        ".secret_file",
        "cannot read secret file",
    );
    refuse_verify("scheme = \"github\", secret = \"\"", ".secret", "empty");
}

#[test]
fn schemes_without_secrets_refuse_one() {
    refuse_verify(
        "scheme = \"none\", secret = \"x\"",
        ".secret",
        "takes no secret",
    );
    assert!(load(&with_verify("scheme = \"none\"")).is_ok());
}

#[test]
fn keys_that_do_not_apply_to_the_scheme_are_refused() {
    let text = with_verify("scheme = \"stripe\", secret = \"x\", prefix = \"sha256=\"");
    assert_one(
        &text,
        "verify",
        "source[0].verify.prefix",
        "does not apply to scheme \"stripe\"",
    );
}

#[test]
fn hmac_needs_a_header() {
    refuse_verify("scheme = \"hmac\", secret = \"x\"", ".header", "required");
    let c = load(&with_verify(
        "scheme = \"hmac\", secret = \"x\", header = \"X-Sig\", algorithm = \"sha512\", encoding = \"base64\", prefix = \"sha512=\"",
    ))
    .unwrap();
    let VerifySpec::Hmac {
        header,
        algorithm,
        encoding,
        prefix,
        ..
    } = &c.sources[0].verify
    else {
        panic!("{:?}", c.sources[0].verify)
    };
    assert_eq!(header.as_str(), "x-sig");
    assert_eq!(
        (*algorithm, *encoding),
        (HmacAlgorithm::Sha512, SigEncoding::Base64)
    );
    assert_eq!(prefix.as_deref(), Some("sha512="));
    refuse_verify(
        "scheme = \"hmac\", secret = \"x\", header = \"bad header\"",
        ".header",
        "invalid HTTP header name",
    );
}

#[test]
fn token_header_is_optional() {
    let c = load(&with_verify("scheme = \"token\", secret = \"x\"")).unwrap();
    assert!(matches!(
        c.sources[0].verify,
        VerifySpec::Token { header: None, .. }
    ));
}

#[test]
fn paypal_needs_cert_file_and_webhook_id_and_no_secret() {
    let ps = problems(&with_verify("scheme = \"paypal\""));
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["source[0].verify.cert_file", "source[0].verify.webhook_id"]
    );
    assert!(ps.iter().all(|p| p.line == Some(4)));
    refuse_verify(
        "scheme = \"paypal\", cert_file = \"/nonexistent/cert.pem\", webhook_id = \"WH-1\"",
        ".cert_file",
        "does not exist",
    );
    // The certificate is read at load, so `check` finds a bad one.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    refuse_verify(
        &format!(
            "scheme = \"paypal\", cert_file = \"{}\", webhook_id = \"WH-1\"",
            junk.display()
        ),
        ".cert_file",
        "not an X.509 certificate",
    );
}

#[test]
fn discord_needs_a_64_hex_char_public_key() {
    let key = "e".repeat(64);
    let c = load(&with_verify(&format!(
        "scheme = \"discord\", public_key = \"{key}\""
    )))
    .unwrap();
    assert!(matches!(
        c.sources[0].verify,
        VerifySpec::Discord { public_key, .. } if public_key.0 == [0xee; 32]
    ));
    refuse_verify("scheme = \"discord\"", ".public_key", "required");
    for bad in ["abc".to_string(), "g".repeat(64), "é".repeat(32)] {
        refuse_verify(
            &format!("scheme = \"discord\", public_key = \"{bad}\""),
            ".public_key",
            "64 hex",
        );
    }
}

#[test]
fn meta_needs_a_verify_token() {
    refuse_verify(
        "scheme = \"meta\", secret = \"app\"",
        ".verify_token",
        "verify token",
    );
    let c = load(&with_verify(
        "scheme = \"meta\", secret = \"app\", verify_token_env = \"SET\"",
    ))
    .unwrap();
    let VerifySpec::Meta { verify_token, .. } = &c.sources[0].verify else {
        panic!("{:?}", c.sources[0].verify)
    };
    assert_eq!(verify_token.expose(), b"s3cr3t-from-env");
}

#[test]
fn twilio_needs_a_public_url() {
    refuse_verify(
        "scheme = \"twilio\", secret = \"x\"",
        ".public_url",
        "required",
    );
    refuse_verify(
        "scheme = \"twilio\", secret = \"x\", public_url = \"example.com/a\"",
        ".public_url",
        "http",
    );
    let c = load(&with_verify(
        "scheme = \"twilio\", secret = \"x\", public_url = \"https://example.com/a\"",
    ))
    .unwrap();
    assert!(matches!(
        &c.sources[0].verify,
        VerifySpec::Twilio { public_url, .. } if public_url == "https://example.com/a"
    ));
}

#[test]
fn basic_needs_a_username() {
    refuse_verify(
        "scheme = \"basic\", secret = \"pw\"",
        ".username",
        "required",
    );
    let c = load(&with_verify(
        "scheme = \"basic\", secret = \"pw\", username = \"u\"",
    ))
    .unwrap();
    assert!(matches!(
        &c.sources[0].verify,
        VerifySpec::Basic { username, .. } if username == "u"
    ));
}

#[test]
fn standard_secrets_must_be_base64() {
    assert!(load(&with_verify(&format!(
        "scheme = \"standard\", secret = \"{WHSEC}\""
    )))
    .is_ok());
    refuse_verify(
        "scheme = \"standard\", secret = \"whsec_not*base64\"",
        ".secret",
        "base64",
    );
}

#[test]
fn tolerance_defaults_to_five_minutes() {
    let c = load(&with_verify("scheme = \"slack\", secret = \"x\"")).unwrap();
    assert_eq!(
        c.sources[0].verify.tolerance(),
        Some(Duration::from_secs(300))
    );
    let c = load(&with_verify(
        "scheme = \"slack\", secret = \"x\", tolerance = \"1m\"",
    ))
    .unwrap();
    assert_eq!(
        c.sources[0].verify.tolerance(),
        Some(Duration::from_secs(60))
    );
}
