//! A TLS server identity for the inbound listeners: a PEM certificate chain
//! (leaf first) and the PEM private key of its leaf, decoded with rustls's
//! `ring` provider so that a key rustls cannot sign with, or one that is not
//! the certificate's, is found when the config loads rather than at the
//! first handshake.
//!
//! No error carries bytes of the key file: PEM parse errors of the key are
//! reported without their detail (which can quote the input).

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

/// Why a certificate chain or key gave no usable identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsKeyError {
    #[error("bad PEM: {0}")]
    CertPem(#[source] std::io::Error),
    #[error("holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate,
    #[error("the first certificate is not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// The detail is left out on purpose: it can quote the key file.
    #[error("is not valid PEM")]
    KeyPem,
    #[error(
        "holds no PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or \
         SEC1 `EC PRIVATE KEY`; an encrypted key is not supported)"
    )]
    NoKey,
    #[error("holds a private key that cannot be used: {0}")]
    BadKey(String),
    #[error("holds a private key that does not match the certificate")]
    Mismatch,
}

impl TlsKeyError {
    /// True when the key (file) is at fault, false for the certificate (file).
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            TlsKeyError::KeyPem
                | TlsKeyError::NoKey
                | TlsKeyError::BadKey(_)
                | TlsKeyError::Mismatch
        )
    }
}

/// Every certificate of a PEM chain, leaf first; the leaf must parse as X.509.
pub fn cert_chain_of_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsKeyError> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsKeyError::CertPem)?;
    let leaf = chain.first().ok_or(TlsKeyError::NoCertificate)?;
    ParsedCertificate::try_from(leaf).map_err(|e| TlsKeyError::BadCertificate(e.to_string()))?;
    Ok(chain)
}

/// The first private key of a PEM file.
pub fn private_key_of_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsKeyError> {
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsKeyError::NoKey),
        Err(_) => Err(TlsKeyError::KeyPem),
    }
}

/// A certificate chain and the signing key of its leaf, checked to belong
/// together. Cheap to clone (shared).
#[derive(Clone)]
pub struct TlsIdentity(Arc<CertifiedKey>);

impl TlsIdentity {
    /// Loads `key` with the `ring` provider and checks it is the leaf's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsIdentity, TlsKeyError> {
        if chain.is_empty() {
            return Err(TlsKeyError::NoCertificate);
        }
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsKeyError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => Ok(TlsIdentity(Arc::new(certified))),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsKeyError::Mismatch)
            }
            // ring's keys all know their public key, so this is not expected;
            // rustls itself accepts such a key, and so does this.
            Err(rustls::Error::InconsistentKeys(_)) => Ok(TlsIdentity(Arc::new(certified))),
            Err(e) => Err(TlsKeyError::BadCertificate(e.to_string())),
        }
    }

    /// Both PEM files' contents at once (the reload path).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, TlsKeyError> {
        let chain = cert_chain_of_pem(cert_pem)?;
        TlsIdentity::new(chain, private_key_of_pem(key_pem)?)
    }

    /// What rustls serves.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.0.clone()
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TlsIdentity({} certificate(s), key [redacted])",
            self.0.cert.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_its_debug_hides_the_key() {
        let (cert, key) = self_signed("relay.test");
        let id = TlsIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let shown = format!("{id:?}");
        assert_eq!(shown, "TlsIdentity(1 certificate(s), key [redacted])");
        // Certificate and key in one file work too.
        let both = format!("{cert}{key}");
        assert!(TlsIdentity::from_pem(both.as_bytes(), both.as_bytes()).is_ok());
    }

    #[test]
    fn every_kind_of_bad_input_is_named_and_blamed_on_the_right_file() {
        let (cert, key) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        let err = |c: &str, k: &str| TlsIdentity::from_pem(c.as_bytes(), k.as_bytes()).unwrap_err();

        let e = err(&cert, &other_key);
        assert!(
            matches!(e, TlsKeyError::Mismatch) && e.is_about_key(),
            "{e}"
        );
        let e = err(&cert, &cert);
        assert!(matches!(e, TlsKeyError::NoKey) && e.is_about_key(), "{e}");
        let e = err(&key, &key);
        assert!(
            matches!(e, TlsKeyError::NoCertificate) && !e.is_about_key(),
            "{e}"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = err(garbage, &key);
        assert!(matches!(e, TlsKeyError::BadCertificate(_)), "{e}");
        let e = err(
            &cert,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(
            matches!(e, TlsKeyError::BadKey(_)) && e.is_about_key(),
            "{e}"
        );
        let e = err(
            &cert,
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        );
        assert!(matches!(e, TlsKeyError::KeyPem), "{e}");
        assert!(!e.to_string().contains("!!!!"), "{e}");
    }
}
