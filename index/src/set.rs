//! The bound of a workload's address set ([`pinip_api::set::bound`]) for a workload the pod's
//! owner resolution verified: from the watch caches for apps/v1 kinds, else one GET through
//! API discovery (Jobs, third-party controllers).

use kube::Client;
use pinip_api::set::{SetBound, bound};
use pinip_api::workload::WorkloadRef;

use crate::workloads::Workloads;

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("{0} does not exist")]
    Gone(String),
    #[error("{workload}: {reason}")]
    Invalid { workload: String, reason: String },
    #[error("reading {workload}: {source}")]
    Api {
        workload: String,
        source: kube::Error,
    },
}

/// The bound of `r`'s set; `Ok(None)` when nothing bounds it.
pub async fn set_bound(
    client: &Client,
    workloads: &Workloads,
    r: &WorkloadRef,
) -> Result<Option<SetBound>, SetError> {
    let obj = match workloads.object(r) {
        Some(o) => o,
        None => fetch(client, r).await?,
    };
    bound(&obj).map_err(|reason| SetError::Invalid {
        workload: r.to_string(),
        reason,
    })
}

async fn fetch(client: &Client, r: &WorkloadRef) -> Result<serde_json::Value, SetError> {
    let api_err = |source| SetError::Api {
        workload: r.to_string(),
        source,
    };
    let api = crate::dynamic::namespaced_api(client, &r.api_version, &r.kind, &r.namespace)
        .await
        .map_err(api_err)?;
    match api.get_opt(&r.name).await.map_err(api_err)? {
        Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            let mut v = serde_json::to_value(&o).unwrap_or_default();
            v["kind"] = serde_json::Value::String(r.kind.clone());
            Ok(v)
        }
        _ => Err(SetError::Gone(r.to_string())),
    }
}
