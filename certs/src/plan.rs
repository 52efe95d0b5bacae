//! What to do with the webhook's certificate material, decided from what is stored and the
//! time: nothing, renew the serving certificate, rotate the CA, or create everything. Pure, so
//! that every branch is unit-tested.

use std::time::SystemTime;

use crate::issue::{self, Pem};

/// The material kept in the shared Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub ca: Pem,
    pub serving: Pem,
    /// The CAs the API server must trust: the current one, and the previous one while
    /// certificates it signed may still be served.
    pub bundle: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Keep,
    RenewServing { why: String },
    RotateCa { why: String },
}

pub fn plan(existing: Option<&Material>, now: SystemTime, renew_at: f64, dns: &[String]) -> Action {
    let Some(m) = existing else {
        return Action::Create;
    };
    match issue::validity("ca.crt", &m.ca.cert) {
        Err(e) => return Action::RotateCa { why: e.to_string() },
        Ok(v) if now >= v.renew_after(renew_at) => {
            return Action::RotateCa {
                why: "the CA is past its renewal point".into(),
            };
        }
        Ok(_) => {}
    }
    match issue::validity("tls.crt", &m.serving.cert) {
        Err(e) => Action::RenewServing { why: e.to_string() },
        Ok(v) if now >= v.renew_after(renew_at) => Action::RenewServing {
            why: "the serving certificate is past its renewal point".into(),
        },
        Ok(_) => {
            let mut have = issue::dns_names(&m.serving.cert).unwrap_or_default();
            let mut want = dns.to_vec();
            have.sort();
            want.sort();
            if have != want {
                Action::RenewServing {
                    why: format!("DNS names changed from {have:?} to {want:?}"),
                }
            } else if !m.bundle.contains(m.ca.cert.trim()) {
                Action::RenewServing {
                    why: "the CA bundle does not contain the current CA".into(),
                }
            } else {
                Action::Keep
            }
        }
    }
}

/// The bundle after rotating from `old` to `new`: both, until `old` expires.
pub fn rotated_bundle(new: &Pem, old: &Pem, now: SystemTime) -> String {
    let old_valid = issue::validity("ca.crt", &old.cert).is_ok_and(|v| now < v.not_after);
    if old_valid {
        format!("{}{}", new.cert, old.cert)
    } else {
        new.cert.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{new_ca, new_serving};
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn material(now: SystemTime, ca_days: u32, cert_days: u32, dns: &[String]) -> Material {
        let ca = new_ca("test-ca", now, DAY * ca_days).unwrap();
        let serving = new_serving(&ca, dns, now, DAY * cert_days).unwrap();
        Material {
            bundle: ca.cert.clone(),
            ca,
            serving,
        }
    }

    #[test]
    fn decides_each_case() {
        let now = SystemTime::now();
        let dns = vec!["pinip-webhook.pinip-system.svc".to_string()];
        assert_eq!(plan(None, now, 0.667, &dns), Action::Create);
        let m = material(now, 300, 30, &dns);
        assert_eq!(plan(Some(&m), now, 0.667, &dns), Action::Keep);
        // 2/3 through the serving certificate's 30 days.
        assert!(matches!(
            plan(Some(&m), now + DAY * 21, 0.667, &dns),
            Action::RenewServing { .. }
        ));
        assert!(matches!(
            plan(Some(&m), now + DAY * 201, 0.667, &dns),
            Action::RotateCa { .. }
        ));
        let other = vec!["other.svc".to_string()];
        assert!(matches!(
            plan(Some(&m), now, 0.667, &other),
            Action::RenewServing { .. }
        ));
        let mut broken = m.clone();
        broken.serving.cert = "garbage".into();
        assert!(matches!(
            plan(Some(&broken), now, 0.667, &dns),
            Action::RenewServing { .. }
        ));
        broken.ca.cert = "garbage".into();
        assert!(matches!(
            plan(Some(&broken), now, 0.667, &dns),
            Action::RotateCa { .. }
        ));
    }

    #[test]
    fn bundle_keeps_the_old_ca_until_it_expires() {
        let now = SystemTime::now();
        let old = new_ca("old", now, DAY).unwrap();
        let new = new_ca("new", now, DAY * 10).unwrap();
        let b = rotated_bundle(&new, &old, now);
        assert!(b.contains(new.cert.trim()) && b.contains(old.cert.trim()));
        assert_eq!(rotated_bundle(&new, &old, now + DAY * 2), new.cert);
    }

    #[test]
    fn serving_certificate_names_and_validity_read_back() {
        let now = SystemTime::now();
        let dns = vec!["a.svc".to_string(), "b.svc".to_string()];
        let m = material(now, 10, 5, &dns);
        assert_eq!(issue::dns_names(&m.serving.cert).unwrap(), dns);
        let v = issue::validity("tls.crt", &m.serving.cert).unwrap();
        let life = v.not_after.duration_since(v.not_before).unwrap();
        assert_eq!(life, DAY * 5 + Duration::from_secs(300));
    }
}
