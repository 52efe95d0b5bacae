//! Whether a claim is free to change hands, asked of the API server (never a cache) right
//! before the write that depends on it: the webhook before handing an existing claim to a new
//! pod, the binder before releasing or deleting one. The rule itself is
//! [`pinip_api::holder::check_free`]; this module only fetches what it needs — the recorded
//! holder by name (one GET), or, for a holder recorded only by `generateName`, the pods of its
//! namespace (one LIST).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use pinip_api::holder::{ClaimHolder, Held, Observed, Record, check_free};

/// `Ok(Ok(()))` when `claim` is free, `Ok(Err(held))` when it is not, `Err` when the API
/// server could not be asked (never free then). `hold`: how long a reservation without a uid
/// may still be waiting for its pod's admission to finish; `for_pod`: the name of the pod the
/// claim would go to, if any (see [`check_free`]).
pub async fn confirm_free(
    client: &Client,
    claim: &impl ClaimHolder,
    now: Timestamp,
    hold: Duration,
    for_pod: Option<&str>,
) -> Result<Result<(), Held>, kube::Error> {
    let settled = claim.reservation_settled(now, hold);
    let pods: Api<Pod> = Api::namespaced(client.clone(), claim.holder_namespace());
    Ok(match claim.record() {
        Record::Free => Ok(()),
        Record::Pod { name, .. } => {
            let found = pods.get_opt(name).await?;
            check_free(claim, &Observed::Named(found.as_ref()), settled, for_pod)
        }
        Record::Prefix { .. } | Record::Unknown => {
            let list = pods.list(&ListParams::default()).await?;
            check_free(claim, &Observed::Namespace(&list.items), settled, for_pod)
        }
    })
}
