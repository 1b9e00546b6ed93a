//! Certificates made by the test (rcgen) and TLS-capable test servers and clients.
#![allow(dead_code)]

use super::kb::{TestBody, full};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A self-signed certificate for `localhost` and 127.0.0.1, written to disk and kept in memory.
#[derive(Clone, Debug)]
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    /// The files as the gateway's `tls:` setting.
    pub fn files(&self) -> kbgate::server::TlsFiles {
        kbgate::server::TlsFiles {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
        }
    }

    /// The certificate for a reqwest client to trust.
    pub fn reqwest_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap()
    }
}

/// Generates a self-signed (CA-less) certificate for "localhost" and 127.0.0.1 and writes
/// `cert.pem` and `key.pem` into `dir`.
pub fn self_signed(dir: &Path) -> TestCert {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    TestCert {
        cert_path,
        key_path,
        cert_pem,
        key_pem,
    }
}

/// A reqwest client builder that trusts only `cert` (no built-in roots) and resolves
/// `localhost` to `addr`, so `https://localhost:PORT/` reaches the server under test with SNI
/// and name checks as a real client would do them.
pub fn client_trusting(cert: &TestCert, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert.reqwest_certificate())
        .resolve("localhost", addr)
}

/// A rustls server config for `cert`, offering h2 and http/1.1 by ALPN.
pub fn server_config(cert: &TestCert) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .unwrap()
        .expect("no private key in the PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Starts an HTTPS upstream on 127.0.0.1 (port 0) serving `cert`, HTTP/1.1 or HTTP/2 by ALPN.
/// Every request is answered 200 with JSON: `{"path", "authorization", "version"}` — the
/// request's path and query, its Authorization header (null when absent) and its HTTP version.
/// The server runs until the test's runtime ends.
pub async fn start_https_upstream(cert: &TestCert) -> SocketAddr {
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(cert)));
    super::kb::serve_tls(tls, |request, _| echo(request))
        .await
        .detach()
}

async fn echo(request: Request<Incoming>) -> Response<TestBody> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version = format!("{:?}", request.version());
    // Drain the request body so the connection stays usable.
    let _ = request.into_body().collect().await;
    let body = serde_json::json!({
        "path": path,
        "authorization": authorization,
        "version": version,
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}
