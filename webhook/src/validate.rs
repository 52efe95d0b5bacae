//! /validate: policy on pods (explicit addresses in allowed pools, no spoofed allocation) and
//! on IPPools (valid, non-overlapping, never stranding a live claim). Who writes IPClaims is
//! the ValidatingAdmissionPolicy pinip-claim-writers' job, inside kube-apiserver.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use pinip_api::annotations::{ALLOCATION, Allocation, IP, IpRequest};
use pinip_api::{ClaimInfo, IPClaim, IPPool, claim_name};

use crate::mutate::namespace_labels;
use crate::policy::namespace_may_use;
use crate::state::State;
use pinip_api::holder::{ClaimHolder, Record};
use pinip_api::owner::{self, holder};

/// /validate/pods: create-time checks of a pod's pinip annotations.
pub async fn pod(state: &State, req: &AdmissionRequest<Pod>) -> AdmissionResponse {
    answer(state, req, pod_verdict(state, req).await)
}

/// /validate/ippools: a pool is valid, overlaps no other, and strands no claimed address.
pub async fn pool(state: &State, req: &AdmissionRequest<IPPool>) -> AdmissionResponse {
    answer(state, req, pool_verdict(state, req))
}

/// /validate/workloads: Deployments, StatefulSets, DaemonSets and Jobs are only ever warned
/// about, never denied.
pub async fn workload(state: &State, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    let warnings = match (req.kind.group.as_str(), req.kind.kind.as_str()) {
        ("apps", kind @ ("Deployment" | "StatefulSet" | "DaemonSet")) | ("batch", kind @ "Job") => {
            let ns = req.namespace.clone().unwrap_or_default();
            req.object
                .as_ref()
                .and_then(|o| serde_json::to_value(o).ok())
                .map(|o| crate::warn::workload_warnings(kind, &ns, o))
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    state.metrics.admission("validate", "allowed");
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}

fn answer<T: kube::Resource>(
    state: &State,
    req: &AdmissionRequest<T>,
    verdict: Result<(), Verdict>,
) -> AdmissionResponse {
    match verdict {
        Ok(()) => {
            state.metrics.admission("validate", "allowed");
            AdmissionResponse::from(req)
        }
        Err(Verdict::Deny(msg)) => {
            state.metrics.admission("validate", "denied");
            tracing::info!(kind = %req.kind.kind, name = %req.name, message = %msg, "denied");
            AdmissionResponse::from(req).deny(msg)
        }
    }
}

enum Verdict {
    Deny(String),
}

fn annotations(p: &Pod) -> std::collections::BTreeMap<String, String> {
    p.metadata.annotations.clone().unwrap_or_default()
}

async fn pod_verdict(state: &State, req: &AdmissionRequest<Pod>) -> Result<(), Verdict> {
    let ns = req.namespace.clone().unwrap_or_default();
    let deny = |p: &Pod, why: String| {
        Verdict::Deny(format!("pinip: pod {ns}/{}: {why}", owner::display_name(p)))
    };
    // Changes after creation are refused by kube-apiserver itself (the
    // ValidatingAdmissionPolicy `pinip-pod-annotations`), for every subresource.
    match (&req.operation, &req.object) {
        (&Operation::Create, Some(p)) => {
            let a = annotations(p);
            if let Some(v) = a.get(IP) {
                let ns_labels = namespace_labels(state, &ns)
                    .await
                    .map_err(|why| deny(p, format!("{why}; try again")))?;
                let req: IpRequest = v
                    .parse()
                    .map_err(|e: pinip_api::annotations::AnnotationError| deny(p, e.to_string()))?;
                for ip in &req.0 {
                    let allowed = state.index.ledger.pools().iter().any(|pool| {
                        namespace_may_use(&pool.object, &ns_labels)
                            && pool.usable.as_ref().is_ok_and(|u| u.contains(ip))
                    });
                    if !allowed {
                        return Err(deny(
                            p,
                            format!("no pool this namespace may use contains {ip}"),
                        ));
                    }
                }
            }
            if let Some(v) = a.get(ALLOCATION) {
                let alloc: Allocation = v
                    .parse()
                    .map_err(|e: pinip_api::annotations::AnnotationError| deny(p, e.to_string()))?;
                check_allocation(state, p, &ns, &alloc, req.dry_run)
                    .await
                    .map_err(|why| deny(p, why))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every address in the allocation must be backed by the claim it names, and that claim must
/// record this pod as its holder (by name, or by `generateName` for a pod the API server had
/// not named at /mutate): the only way to get such an allocation is the webhook's own
/// decision, which writes the holder before it answers. A dry run writes no claim, so there
/// only the address and pool are checked.
async fn check_allocation(
    state: &State,
    p: &Pod,
    ns: &str,
    alloc: &Allocation,
    dry_run: bool,
) -> Result<(), String> {
    let api: Api<IPClaim> = Api::all(state.client.clone());
    for iface in &alloc.interfaces {
        for ip in &iface.ips {
            let network = state
                .index
                .pool(&ip.pool)
                .map(|p| p.network().to_string())
                .unwrap_or_default();
            let expected = claim_name(&network, &ip.address.addr());
            if ip.claim != expected {
                return Err(format!(
                    "{ALLOCATION} names claim {} for {}; pinip would name it {expected}",
                    ip.claim, ip.address
                ));
            }
            let mut claim = state.index.claim(&expected);
            if !claim.as_ref().is_some_and(|c| records(c.as_ref(), p, ns)) {
                // The handover or creation may be newer than our watch.
                claim = match api.get_opt(&expected).await.map_err(|e| e.to_string())? {
                    Some(c) => Some(std::sync::Arc::new(
                        ClaimInfo::read(&c).map_err(|why| format!("IPClaim {expected}: {why}"))?,
                    )),
                    None => None,
                };
            }
            let Some(claim) = claim else {
                if dry_run {
                    continue;
                }
                return Err(format!(
                    "{ALLOCATION} was not written by pinip: no IPClaim backs {}",
                    ip.address
                ));
            };
            if claim.address != ip.address || claim.pool != ip.pool {
                return Err(format!(
                    "{ALLOCATION} does not match IPClaim {expected} ({} in pool {})",
                    claim.address, claim.pool
                ));
            }
            if !dry_run && !records(&claim, p, ns) {
                return Err(format!(
                    "{ALLOCATION} names {} (IPClaim {expected}), which belongs to {} and is not reserved for this pod",
                    ip.address,
                    holder(&claim.owner)
                ));
            }
        }
    }
    Ok(())
}

/// Whether `claim` records pod `p` of namespace `ns` as its holder.
fn records(claim: &ClaimInfo, p: &Pod, ns: &str) -> bool {
    if claim.holder_namespace() != ns {
        return false;
    }
    let name = p.metadata.name.as_deref().unwrap_or_default();
    match claim.record() {
        Record::Pod { name: n, .. } => n == name,
        Record::Prefix { generate_name } => {
            p.metadata.generate_name.as_deref() == Some(generate_name)
                && name.starts_with(generate_name)
        }
        Record::Free | Record::Unknown => false,
    }
}

fn pool_verdict(state: &State, req: &AdmissionRequest<IPPool>) -> Result<(), Verdict> {
    let name = req.name.clone();
    let deny = |why: String| Verdict::Deny(format!("pinip: IPPool {name}: {why}"));
    let ledger = &state.index.ledger;
    // Every claimed address of the pool, readable claims or not (an unreadable claim's
    // address is the one its name stands for).
    let claimed = |pool: &str| -> Vec<IpAddr> {
        let readable = ledger.claims_of(pool).into_iter().map(|c| c.ip());
        let unreadable = ledger.unreadable_of(pool).into_iter().filter_map(|u| u.ip);
        readable.chain(unreadable).collect()
    };
    if req.operation == Operation::Delete {
        let count = ledger.claimed(&name);
        if count > 0 {
            let example = claimed(&name)
                .first()
                .map(|ip| format!(" (e.g. {ip})"))
                .unwrap_or_default();
            return Err(deny(format!(
                "{count} addresses are still claimed{example}; delete their pods or workloads first"
            )));
        }
        return Ok(());
    }
    let Some(new) = &req.object else {
        return Ok(());
    };
    let usable = new.spec.usable().map_err(|e| deny(e.to_string()))?;
    for other in state.index.ledger.pools() {
        if other.name == name {
            continue;
        }
        if let Some(ip) = pinip_index::pool::overlap(&new.spec, &usable, &other) {
            return Err(deny(format!(
                "overlaps pool {} (both hand out {ip}); give one of them a different network or disjoint ranges",
                other.name
            )));
        }
    }
    if req.operation == Operation::Update
        && let Some(old) = &req.old_object
    {
        // `network` is immutable in the CRD itself (claim names carry it); this is the
        // backstop for a cluster whose CRD predates that rule.
        if old.spec.network != new.spec.network {
            return Err(deny(
                "network is immutable: create a new pool for another network".into(),
            ));
        }
        let live = claimed(&name);
        let stranded: Vec<String> = live
            .iter()
            .filter(|ip| !usable.contains(ip))
            .map(|ip| ip.to_string())
            .collect();
        if !stranded.is_empty() {
            return Err(deny(format!(
                "the change would strand claimed addresses {}",
                stranded.join(", ")
            )));
        }
    }
    Ok(())
}
