//! The serving certificate, read from a directory (`tls.crt`, `tls.key`) and swapped in place
//! when its contents change. Kubernetes updates a Secret volume by swapping the directory's
//! `..data` symlink, so the directory's files are re-read rather than watched one by one;
//! each new TLS handshake picks the current certificate, and open connections are untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

#[derive(Debug)]
pub struct ReloadingCert {
    dir: PathBuf,
    current: ArcSwap<CertifiedKey>,
    raw: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn parse(dir: &Path, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Parse {
            path: cert_path,
            reason: "no certificate in PEM".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Parse {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let signer = any_supported_type(&key).map_err(|e| TlsError::Parse {
        path: key_path,
        reason: e.to_string(),
    })?;
    Ok(CertifiedKey::new(chain, signer))
}

impl ReloadingCert {
    pub fn load(dir: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let cert = read(&dir.join("tls.crt"))?;
        let key = read(&dir.join("tls.key"))?;
        let ck = parse(dir, &cert, &key)?;
        Ok(Arc::new(ReloadingCert {
            dir: dir.into(),
            current: ArcSwap::from_pointee(ck),
            raw: std::sync::Mutex::new((cert, key)),
        }))
    }

    /// Re-reads the directory; swaps the certificate if it changed and parses. Returns whether
    /// it swapped. A half-written pair fails to parse and is retried on the next poll.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert = read(&self.dir.join("tls.crt"))?;
        let key = read(&self.dir.join("tls.key"))?;
        let mut raw = self.raw.lock().expect("raw lock");
        if raw.0 == cert && raw.1 == key {
            return Ok(false);
        }
        let ck = parse(&self.dir, &cert, &key)?;
        self.current.store(Arc::new(ck));
        *raw = (cert, key);
        Ok(true)
    }

    /// Polls the directory every `every`, forever.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(dir = %self.dir.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "serving certificate not reloaded"),
            }
        }
    }

    /// A rustls server config (TLS 1.2 and 1.3, ring) that serves the current certificate.
    /// Without `http2` only HTTP/1.1 is offered: kube-apiserver multiplexes every admission
    /// over one HTTP/2 connection, which pins all traffic to one replica behind a Service,
    /// whereas over HTTP/1.1 it opens a connection per concurrent request.
    ///
    /// With `clients`, a client must present a certificate that verifier accepts
    /// (`client_auth`); without, any client may connect.
    pub fn server_config(
        self: &Arc<Self>,
        http2: bool,
        clients: Option<Arc<dyn ClientCertVerifier>>,
    ) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match clients {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_cert_resolver(self.clone());
        cfg.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        cfg
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
