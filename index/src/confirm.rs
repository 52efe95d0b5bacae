//! Whether a claim is free to change hands, asked of the API server (never a cache) right
//! before the write that depends on it: the webhook before handing an existing claim to a new
//! pod, the binder before releasing or deleting one. The rule itself is
//! [`pinip_api::holder::check_free`]; this module only fetches what it needs — the recorded
//! holder by name (one GET), or, for a holder recorded only by `generateName`, the pods of its
//! namespace (one LIST). And the binder's check before a first bind: whether a pod is live
//! with a claim right now ([`confirm_holder`], one GET).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use pinip_api::holder::{ClaimHolder, Held, Observed, Record, check_free, is_live, names_claim};

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

/// Whether pod `namespace/name` with uid `uid` exists right now, live, its allocation naming
/// `claim`. The binder asks before it records a uid in a claim that has none (a first bind):
/// made from a pod watch that lags (a pod deleted, then a pod of that name admitted with a
/// handover of this claim), the bind would record the deleted pod at the handover's version,
/// and the claim could later be released as that pod's while the new one is still being
/// created. Asked after the claim version the bind is guarded by was seen, this read cannot
/// show a pod deleted before that version's handover.
pub async fn confirm_holder(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    claim: &str,
) -> Result<bool, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods.get_opt(name).await?.is_some_and(|p| {
        p.metadata.uid.as_deref() == Some(uid) && is_live(&p) && names_claim(&p, claim)
    }))
}
