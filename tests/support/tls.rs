//! TLS for tests: a private CA (`rcgen`) issuing server certificates for
//! 127.0.0.1 / localhost, written as PEM files or as a rustls server config,
//! and an HTTPS client that trusts only that CA and talks HTTP/1.1 or h2
//! as chosen by ALPN.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::requests::Answer;

/// A test CA.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
    /// The CA certificate as PEM (a destination's `ca_file`).
    pub ca_pem: String,
}

/// A server certificate (for 127.0.0.1 and localhost) and its key.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `{name}.crt` and `{name}.key` in `dir`; their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = super::write_file(dir, &format!("{name}.crt"), &self.cert_pem);
        let key = super::write_file(dir, &format!("{name}.key"), &self.key_pem);
        (cert, key)
    }

    /// A rustls server config serving this certificate (an HTTPS receiver).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .unwrap();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "hookrelay test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ca.self_signed(&key).unwrap();
        TestPki {
            ca: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(ca, key),
        }
    }

    /// A new server certificate whose subject's common name is `cn`.
    pub fn leaf(&self, cn: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection to `addr` (as `localhost`) offering `alpn`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }
}

/// How the HTTPS client speaks, offered by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2,
}

impl Proto {
    fn alpn(self) -> &'static [u8] {
        match self {
            Proto::Http1 => b"http/1.1",
            Proto::H2 => b"h2",
        }
    }
}

/// What one HTTPS request got: the answer, the ALPN protocol the server
/// chose and the certificate it served.
#[derive(Debug)]
pub struct HttpsAnswer {
    pub answer: Answer,
    pub alpn: Option<Vec<u8>>,
    pub served: CertificateDer<'static>,
}

/// Sends `req` (its URI a path, e.g. `/hooks/s`) to `addr` over a new TLS
/// connection trusting only `pki`'s CA, speaking `proto`.
pub async fn https_send(
    pki: &TestPki,
    addr: SocketAddr,
    proto: Proto,
    req: Request<Full<Bytes>>,
) -> Result<HttpsAnswer, String> {
    let tls = pki
        .connect(addr, &[proto.alpn()])
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let served = session.peer_certificates().unwrap()[0].clone();
    let (mut parts, body) = req.into_parts();
    let io = TokioIo::new(tls);
    let resp = match proto {
        Proto::Http1 => {
            parts.headers.insert(
                http::header::HOST,
                format!("localhost:{}", addr.port()).parse().unwrap(),
            );
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .map_err(|e| e.to_string())?
        }
        Proto::H2 => {
            // HTTP/2 requests carry scheme and authority.
            parts.uri = format!("https://localhost:{}{}", addr.port(), parts.uri)
                .parse()
                .unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .map_err(|e| e.to_string())?
        }
    };
    Ok(HttpsAnswer {
        answer: super::requests::answer_of(resp).await?,
        alpn,
        served,
    })
}
