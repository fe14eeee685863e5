//! Inbound TLS for both listeners (`tls_cert_file` / `tls_key_file` on
//! `[server]` and `[admin]`): rustls with the `ring` provider, ALPN `h2` and
//! `http/1.1`, and a handshake bounded in time.
//!
//! The certificate is served through a swappable handle ([`CurrentCert`], a
//! rustls `ResolvesServerCert` over an `RwLock<Arc<CertifiedKey>>`), so a
//! reload can replace it with [`TlsAcceptor::reload`] or
//! [`TlsAcceptor::replace`]: every handshake that starts afterwards gets the
//! new certificate, while established connections keep the session they
//! have. Owns nothing else; never logs or reports key material (errors name
//! files, never their contents).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::keys::{TlsIdentity, TlsKeyError};

/// ALPN protocols offered, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the inbound TLS setup could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("TLS {} file {}: {source}", if source.is_about_key() { "key" } else { "certificate" }, path.display())]
    Decode { path: PathBuf, source: TlsKeyError },
    #[error("cannot set up inbound TLS: {0}")]
    Setup(#[from] rustls::Error),
}

/// The certificate new handshakes get; replaced whole on reload.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // The lock is only held to clone or to store an `Arc`, neither of
        // which can panic, so a poisoned lock still holds a whole value.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert([redacted])")
    }
}

/// Accepts TLS on one listener; clones share the same certificate handle.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<CurrentCert>,
}

impl TlsAcceptor {
    /// Serves `identity` (decoded and checked when the config loaded).
    pub fn new(identity: &TlsIdentity) -> Result<TlsAcceptor, TlsError> {
        let current = Arc::new(CurrentCert(RwLock::new(identity.certified_key())));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    /// The TLS handshake on `io`, failing with `TimedOut` at `deadline`: a
    /// peer that connects and never sends a ClientHello (or stalls in the
    /// middle) must not hold its task and socket for ever. A peer that is
    /// not speaking TLS (plain HTTP) fails it at its first bytes.
    pub async fn accept<IO>(&self, io: IO, deadline: Instant) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout_at(deadline, self.acceptor.accept(io)).await {
            Ok(done) => done,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no TLS handshake within the deadline",
            )),
        }
    }

    /// Re-reads `cert_file` and `key_file` and, when they hold a matching
    /// certificate chain and key, serves them to every handshake from now
    /// on; connections already established are not touched. On error the
    /// current certificate stays. Reads two small files synchronously.
    // The relay's reload uses `replace` with the config it has just loaded
    // and checked; this reads the files itself (its tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read("certificate", cert_file)?;
        let key_pem = read("key", key_file)?;
        let identity = TlsIdentity::from_pem(&cert_pem, &key_pem).map_err(|source| {
            let path = if source.is_about_key() {
                key_file
            } else {
                cert_file
            };
            TlsError::Decode {
                path: path.to_path_buf(),
                source,
            }
        })?;
        self.replace(&identity);
        Ok(())
    }

    /// Serves `identity` to every handshake from now on (for a reload that
    /// already has the new config's [`crate::config::TlsConfig`] decoded).
    pub fn replace(&self, identity: &TlsIdentity) {
        self.current.set(identity.certified_key());
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A CA and leaves it signs, each with its own common name.
    struct Pki {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        ca: CertificateDer<'static>,
    }

    impl Pki {
        fn new() -> Pki {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = params.self_signed(&key).unwrap();
            Pki {
                issuer: rcgen::Issuer::new(params, key),
                ca: ca.der().clone(),
            }
        }

        /// A leaf for localhost named `cn`: (cert DER, cert PEM, key PEM).
        fn leaf(&self, cn: &str) -> (CertificateDer<'static>, String, String) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.der().clone(), cert.pem(), key.serialize_pem())
        }

        fn client(&self) -> tokio_rustls::TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        }
    }

    /// Accepts TLS connections and echoes what each sends.
    async fn echo_server(acceptor: TlsAcceptor) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let Ok(mut tls) = acceptor.accept(tcp, deadline).await else {
                        return;
                    };
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(pki: &Pki, addr: std::net::SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        pki.client().connect(name, tcp).await.unwrap()
    }

    fn served(c: &Client) -> CertificateDer<'static> {
        c.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    async fn echo(c: &mut Client, what: &[u8]) {
        c.write_all(what).await.unwrap();
        let mut got = vec![0u8; what.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, what);
    }

    #[tokio::test]
    async fn reload_serves_the_new_certificate_to_new_connections_only() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (old_der, old_cert, old_key) = pki.leaf("old");
        let (new_der, new_cert, new_key) = pki.leaf("new");
        let identity = TlsIdentity::from_pem(old_cert.as_bytes(), old_key.as_bytes()).unwrap();
        let acceptor = TlsAcceptor::new(&identity).unwrap();
        let addr = echo_server(acceptor.clone()).await;

        let mut before = connect(&pki, addr).await;
        assert_eq!(served(&before), old_der);
        echo(&mut before, b"one").await;

        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, &new_cert).unwrap();
        std::fs::write(&key_file, &new_key).unwrap();
        acceptor.reload(&cert_file, &key_file).unwrap();

        let mut after = connect(&pki, addr).await;
        assert_eq!(served(&after), new_der);
        echo(&mut after, b"two").await;
        // The connection made before the swap goes on with its session.
        echo(&mut before, b"three").await;
        assert_eq!(served(&before), old_der);
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_current_certificate() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (der, cert, key) = pki.leaf("kept");
        let (_, other_cert, _) = pki.leaf("other");
        let identity = TlsIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let acceptor = TlsAcceptor::new(&identity).unwrap();
        let addr = echo_server(acceptor.clone()).await;

        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let err = acceptor.reload(&cert_file, &key_file).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        // A key that is not the certificate's: blamed on the key file.
        std::fs::write(&cert_file, &other_cert).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        let err = acceptor.reload(&cert_file, &key_file).unwrap_err();
        assert!(
            matches!(err, TlsError::Decode { ref path, source: TlsKeyError::Mismatch } if *path == key_file),
            "{err}"
        );
        assert!(err.to_string().starts_with("TLS key file "), "{err}");

        let c = connect(&pki, addr).await;
        assert_eq!(served(&c), der);
    }

    #[tokio::test]
    async fn a_silent_peer_fails_the_handshake_at_the_deadline() {
        let pki = Pki::new();
        let (_, cert, key) = pki.leaf("silent");
        let identity = TlsIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let acceptor = TlsAcceptor::new(&identity).unwrap();
        let (_client, server) = tokio::io::duplex(64);
        let started = std::time::Instant::now();
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = acceptor.accept(server, deadline).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
