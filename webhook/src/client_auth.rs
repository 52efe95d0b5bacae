//! Who may call `/mutate` and `/validate`: with `--client-ca`, only a TLS client presenting a
//! certificate that chains to that CA and, with `--client-name`, whose subject common name is
//! one of the allowed names (the CN is the identity Kubernetes itself reads from client
//! certificates; DNS SANs are not accepted, since a shared issuer may let others choose them). kube-apiserver presents such a certificate when its
//! AdmissionConfiguration gives it one for the webhook's host; everyone else fails the TLS
//! handshake before a byte of an AdmissionReview is read.
//!
//! The names matter when the CA also signs other clients (for example the cluster's client CA,
//! which signs every user's certificate): the chain alone would then admit any user.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use crate::metrics::DenialLabels;
use crate::tls::{TlsError, read};

/// The `--client-ca` bundle and `--client-name` list; `verifier()` builds what rustls uses.
#[derive(Debug)]
pub struct ClientAuth {
    ca_path: PathBuf,
    names: Vec<String>,
    raw: Mutex<Vec<u8>>,
    /// Handshakes refused, by reason (`untrusted`, `name`); shared with /metrics.
    refused: Family<DenialLabels, Counter>,
}

impl ClientAuth {
    pub fn new(
        ca_path: &Path,
        names: Vec<String>,
        refused: Family<DenialLabels, Counter>,
    ) -> Result<ClientAuth, TlsError> {
        let auth = ClientAuth {
            ca_path: ca_path.into(),
            names,
            raw: Mutex::new(Vec::new()),
            refused,
        };
        auth.changed()?;
        Ok(auth)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Re-reads the CA file; whether it differs from what the last call saw.
    pub fn changed(&self) -> Result<bool, TlsError> {
        let pem = read(&self.ca_path)?;
        let mut raw = self.raw.lock().expect("client CA lock");
        if *raw == pem {
            return Ok(false);
        }
        *raw = pem;
        Ok(true)
    }

    /// A verifier for the CA bundle as last read by `changed()`.
    pub fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let pem = self.raw.lock().expect("client CA lock").clone();
        let parse = |reason: String| TlsError::Parse {
            path: self.ca_path.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| parse(e.to_string()))?;
            roots.add(cert).map_err(|e| parse(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(parse("no CA certificate in PEM".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| parse(e.to_string()))?;
        Ok(Arc::new(NamedClients {
            chain,
            names: self.names.clone(),
            refused: self.refused.clone(),
        }))
    }
}

/// The chain check of rustls' WebPKI verifier, then the name check.
#[derive(Debug)]
struct NamedClients {
    chain: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
    refused: Family<DenialLabels, Counter>,
}

impl ClientCertVerifier for NamedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)
        {
            self.refused
                .get_or_create(&DenialLabels {
                    reason: "untrusted",
                })
                .inc();
            tracing::warn!(error = %e, "admission client refused: certificate not from --client-ca");
            return Err(e);
        }
        if self.names.is_empty() {
            return Ok(ClientCertVerified::assertion());
        }
        let presented = cert_names(end_entity);
        if presented.iter().any(|n| self.names.contains(n)) {
            return Ok(ClientCertVerified::assertion());
        }
        self.refused
            .get_or_create(&DenialLabels { reason: "name" })
            .inc();
        tracing::warn!(names = ?presented, allowed = ?self.names,
            "admission client refused: certificate names none of --client-name");
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Subject common names of a certificate (empty if it does not parse; the chain check has
/// already accepted it, so that would be an odd certificate, and it matches no name).
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .filter(|cn| !cn.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_and_der(cn: &str, dns: &[&str]) -> (String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    #[test]
    fn names_are_the_common_name_only() {
        // A DNS SAN is not an identity here: a shared issuer may let others choose it.
        let (_, der) = pem_and_der("kube-apiserver", &["apiserver.example"]);
        assert_eq!(cert_names(&der), vec!["kube-apiserver".to_string()]);
        assert!(cert_names(b"not a certificate").is_empty());
    }

    #[test]
    fn bad_ca_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("pinip-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, "nothing here").unwrap();
        let auth = ClientAuth::new(&path, vec![], Family::default()).unwrap();
        let err = auth.verifier().unwrap_err().to_string();
        assert!(
            err.contains("ca.crt") && err.contains("no CA certificate"),
            "{err}"
        );
        let missing = ClientAuth::new(&dir.join("absent"), vec![], Family::default());
        assert!(missing.unwrap_err().to_string().contains("absent"));

        let (pem, _) = pem_and_der("test-ca", &[]);
        std::fs::write(&path, pem).unwrap();
        assert!(auth.changed().unwrap());
        assert!(!auth.changed().unwrap());
        assert!(auth.verifier().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
