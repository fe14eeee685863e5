//! The RSA public key of a PEM X.509 certificate, found by walking the DER
//! just far enough (`tbsCertificate.subjectPublicKeyInfo`): PayPal signs with
//! the key of a certificate the operator downloads once and configures.

use super::RsaPublicKey;

/// Why a PEM file gave no RSA public key. Never carries bytes of the input.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("bad PEM: {0}")]
    Pem(#[source] std::io::Error),
    #[error("no PEM certificate in it")]
    NoCertificate,
    #[error("not an X.509 certificate")]
    NotX509,
    #[error("the certificate's key is not RSA")]
    NotRsa,
}

/// The RSA key of the first certificate in `pem`.
pub fn rsa_public_key_of_pem(pem: &[u8]) -> Result<RsaPublicKey, CertError> {
    let cert = match rustls_pemfile::certs(&mut &pem[..]).next() {
        Some(Ok(cert)) => cert,
        Some(Err(e)) => return Err(CertError::Pem(e)),
        None => return Err(CertError::NoCertificate),
    };
    let key = rsa_public_key(cert.as_ref())?;
    Ok(RsaPublicKey(key.to_vec()))
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
pub fn rsa_public_key(cert: &[u8]) -> Result<&[u8], CertError> {
    let expect = |input, tag| match tlv(input) {
        Some((t, contents, rest)) if t == tag => Ok((contents, rest)),
        _ => Err(CertError::NotX509),
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
        return Err(CertError::NotRsa);
    }
    let (bits, _) = expect(rest, 0x03)?;
    match bits.split_first() {
        Some((0, key)) if !key.is_empty() => Ok(key),
        _ => Err(CertError::NotX509),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed RSA certificate whose key signed the PayPal vector.
    pub(crate) const CERT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/verify/testdata/paypal_test_cert.pem"
    );

    #[test]
    fn refuses_what_is_not_an_rsa_certificate() {
        let err = |pem: &[u8]| rsa_public_key_of_pem(pem).unwrap_err().to_string();
        assert!(err(b"").contains("no PEM certificate"));
        let key_only = include_str!("../verify/testdata/paypal_test_key.pem");
        assert!(err(key_only.as_bytes()).contains("no PEM certificate"));
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        assert!(err(junk.as_bytes()).contains("not an X.509"));
        let ec = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        assert!(err(ec.cert.pem().as_bytes()).contains("not RSA"));
        let pem = std::fs::read(CERT).unwrap();
        assert!(rsa_public_key_of_pem(&pem).is_ok());
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
