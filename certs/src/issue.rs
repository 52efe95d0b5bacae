//! Issuing the webhook's CA and serving certificate (rcgen, ECDSA P-256), and reading back
//! when an issued certificate expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate: {reason}")]
    Parse { what: &'static str, reason: String },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// When a certificate starts and stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// The moment past which the certificate should be replaced: `renew_at` (0..1) of the
    /// way through its lifetime.
    pub fn renew_after(&self, renew_at: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(renew_at.clamp(0.0, 1.0))
    }
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs).expect("a timestamp between 1970 and 9999")
}

fn params(cn: &str, now: SystemTime, validity: Duration) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    // Back-date a little for clock skew between the issuer and the API server.
    p.not_before = to_offset(now - Duration::from_secs(300));
    p.not_after = to_offset(now + validity);
    Ok(p)
}

/// A new self-signed CA.
pub fn new_ca(name: &str, now: SystemTime, validity: Duration) -> Result<Pem, IssueError> {
    let mut p = params(name, now, validity)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A serving certificate for `dns_names`, signed by `ca`.
pub fn new_serving(
    ca: &Pem,
    dns_names: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<Pem, IssueError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let mut p = params(
        dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("pinip-webhook"),
        now,
        validity,
    )?;
    p.subject_alt_names = CertificateParams::new(dns_names.to_vec())?.subject_alt_names;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The validity of the first certificate in `pem`.
pub fn validity(what: &'static str, pem: &str) -> Result<Validity, IssueError> {
    let bad = |reason: String| IssueError::Parse { what, reason };
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = p.parse_x509().map_err(|e| bad(e.to_string()))?;
    let t = |ts: i64| UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
    Ok(Validity {
        not_before: t(cert.validity().not_before.timestamp()),
        not_after: t(cert.validity().not_after.timestamp()),
    })
}

/// The DNS names a serving certificate was issued for.
pub fn dns_names(pem: &str) -> Result<Vec<String>, IssueError> {
    let bad = |reason: String| IssueError::Parse {
        what: "tls.crt",
        reason,
    };
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = p.parse_x509().map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    Ok(names)
}
