//! Certificates for the test bed's control plane: one CA, the API server's serving
//! certificate, a client certificate per component identity, and the service-account key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key as PEM files on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub apiserver: CertFiles,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("pinip-testbed-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, &ca_pem)?;
        let issuer = Issuer::new(ca, ca_key);

        let sa = KeyPair::generate()?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        std::fs::write(&sa_key, sa.serialize_pem())?;
        std::fs::write(&sa_pub, sa.public_key_pem())?;

        let mut pki = Pki {
            ca_cert: ca_path,
            ca_pem,
            apiserver: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            sa_key,
            sa_pub,
            issuer,
            dir: dir.to_path_buf(),
        };
        pki.apiserver = pki.serving(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )?;
        Ok(pki)
    }

    /// A serving certificate for `dns` names and `ips`, signed by the bed's CA.
    pub fn serving(&self, file: &str, dns: &[&str], ips: &[IpAddr]) -> Result<CertFiles> {
        let mut p = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.distinguished_name = name(dns.first().copied().unwrap_or(file), None);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, p)
    }

    /// A client certificate for user `cn` in groups `orgs` (Kubernetes reads CN and O).
    pub fn client(&self, file: &str, cn: &str, org: Option<&str>) -> Result<CertFiles> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = name(cn, org);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, p)
    }

    fn sign(&self, file: &str, mut params: CertificateParams) -> Result<CertFiles> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {file}"))?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}
