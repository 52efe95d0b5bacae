//! The webhook's certificates: one CA and one serving certificate in one Secret shared by all
//! replicas, the CA injected into the webhook configurations' `caBundle`, and rotation before
//! expiry. `ensure` is idempotent: a second run with nothing due changes nothing.

pub mod issue;
pub mod plan;
pub mod store;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::issue::{new_ca, new_serving};
use crate::plan::{Action, Material, plan, rotated_bundle};
use crate::store::StoreError;

#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub secret: String,
    pub dns_names: Vec<String>,
    pub mutating: Vec<String>,
    pub validating: Vec<String>,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    /// Fraction (0..1) of a certificate's lifetime after which it is replaced.
    pub renew_at: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Issue(#[from] issue::IssueError),
}

/// The DNS names a Service's serving certificate needs.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Brings the Secret and the caBundles up to date; returns what it did.
pub async fn ensure(client: &Client, s: &Settings) -> Result<Action, CertsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    // Two attempts: losing the race to another replica means re-reading what it wrote.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ensure_once(client, &api, s).await {
            Err(CertsError::Store(StoreError::Conflict(_))) if attempt < 3 => continue,
            other => return other,
        }
    }
}

async fn ensure_once(
    client: &Client,
    api: &Api<Secret>,
    s: &Settings,
) -> Result<Action, CertsError> {
    let now = SystemTime::now();
    let stored = store::read(api, &s.secret).await?;
    let action = plan(stored.material.as_ref(), now, s.renew_at, &s.dns_names);
    let next = match (&action, &stored.material) {
        (Action::Keep, Some(m)) => {
            // Still make sure the configurations trust the CA (they may have been recreated).
            store::inject(client, &s.mutating, &s.validating, &m.bundle).await?;
            return Ok(action);
        }
        (Action::RenewServing { .. }, Some(m)) => Material {
            serving: new_serving(&m.ca, &s.dns_names, now, s.cert_validity)?,
            ..m.clone()
        },
        (Action::RotateCa { .. }, Some(m)) => {
            let ca = new_ca("pinip-webhook-ca", now, s.ca_validity)?;
            Material {
                serving: new_serving(&ca, &s.dns_names, now, s.cert_validity)?,
                bundle: rotated_bundle(&ca, &m.ca, now),
                ca,
            }
        }
        _ => {
            let ca = new_ca("pinip-webhook-ca", now, s.ca_validity)?;
            Material {
                serving: new_serving(&ca, &s.dns_names, now, s.cert_validity)?,
                bundle: ca.cert.clone(),
                ca,
            }
        }
    };
    // The API server must trust the new CA before any replica serves a certificate from it.
    store::inject(client, &s.mutating, &s.validating, &next.bundle).await?;
    store::write(api, &s.secret, &next, stored.resource_version).await?;
    Ok(action)
}
