//! pinip's promises, checked from the API server's point of view (one LIST of pods and one of
//! claims): no address on two live pods; every live pod's allocation backed by a claim that
//! records it; no claim without a live holder except retained claims of existing workloads;
//! pool status equal to the claims.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::claim::{RETAIN_LABEL, WORKLOAD_ANNOTATION};
use pinip_api::holder::is_live;
use pinip_api::workload::WorkloadRef;
use pinip_api::{IPClaim, IPPool};

pub struct Snapshot {
    pub pods: Vec<Pod>,
    pub claims: Vec<IPClaim>,
    pub pools: Vec<IPPool>,
}

/// A live pod with an allocation: namespace/name, uid, and (claim, address) per address.
struct Holding {
    pod: String,
    uid: String,
    ips: Vec<(String, String)>,
}

fn holders(pods: &[Pod]) -> Vec<Holding> {
    pods.iter()
        .filter(|p| is_live(p))
        .filter_map(|p| {
            let a: Allocation = p.annotations().get(ALLOCATION)?.parse().ok()?;
            let ips = a
                .interfaces
                .iter()
                .flat_map(|i| &i.ips)
                .map(|ip| (ip.claim.clone(), ip.address.to_string()))
                .collect();
            Some(Holding {
                pod: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                uid: p.uid().unwrap_or_default(),
                ips,
            })
        })
        .collect()
}

impl Snapshot {
    pub async fn take(client: &Client) -> Result<Snapshot> {
        Self::take_in(client, None).await
    }

    /// The pods of one namespace only (`None`: all), with every claim and pool.
    pub async fn take_in(client: &Client, namespace: Option<&str>) -> Result<Snapshot> {
        let lp = ListParams::default();
        let pods: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Ok(Snapshot {
            pods: pods.list(&lp).await?.items,
            claims: Api::<IPClaim>::all(client.clone()).list(&lp).await?.items,
            pools: Api::<IPPool>::all(client.clone()).list(&lp).await?.items,
        })
    }

    /// (a) Addresses named by more than one live pod, with the pods.
    pub fn duplicates(&self) -> Vec<String> {
        let mut by_claim: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for Holding { pod, ips, .. } in holders(&self.pods) {
            for (claim, address) in ips {
                by_claim
                    .entry(format!("{address} ({claim})"))
                    .or_default()
                    .push(pod.clone());
            }
        }
        by_claim
            .into_iter()
            .filter(|(_, pods)| pods.len() > 1)
            .map(|(a, pods)| format!("{a} on {}", pods.join(", ")))
            .collect()
    }

    /// (b) Live pods whose allocation names a claim that does not exist or does not record
    /// the pod (name and uid) with that address.
    pub fn unbacked(&self) -> Vec<String> {
        let claims: BTreeMap<String, &IPClaim> =
            self.claims.iter().map(|c| (c.name_any(), c)).collect();
        let mut out = Vec::new();
        for Holding { pod, uid, ips } in holders(&self.pods) {
            let name = pod.split_once('/').map(|(_, n)| n).unwrap_or_default();
            for (claim, address) in ips {
                let ok = claims.get(&claim).is_some_and(|c| {
                    c.spec.address == address
                        && c.spec
                            .pod
                            .as_ref()
                            .is_some_and(|r| r.name == name && r.uid == uid)
                });
                if !ok {
                    out.push(format!("{pod} ({uid}) names {claim} ({address})"));
                }
            }
        }
        out
    }

    /// (c) Claims that no live pod holds and that no existing workload retains.
    pub async fn leaked(&self, client: &Client) -> Result<Vec<String>> {
        let held: BTreeSet<String> = holders(&self.pods)
            .into_iter()
            .flat_map(|h| h.ips.into_iter().map(|(c, _)| c))
            .collect();
        let mut out = Vec::new();
        for c in &self.claims {
            if held.contains(&c.name_any()) {
                continue;
            }
            let retained = c
                .labels()
                .get(RETAIN_LABEL)
                .is_some_and(|r| r == "ordinal" || r == "app");
            let workload = c
                .annotations()
                .get(WORKLOAD_ANNOTATION)
                .and_then(|w| WorkloadRef::parse(&c.spec.owner.namespace, w).ok());
            let kept = match (retained, workload) {
                (true, Some(w)) => exists(client, &w).await?,
                _ => false,
            };
            if !kept {
                out.push(format!(
                    "{} ({}, owner {}/{}, phase {:?})",
                    c.name_any(),
                    c.spec.address,
                    c.spec.owner.kind,
                    c.spec.owner.name,
                    c.phase()
                ));
            }
        }
        Ok(out)
    }

    /// (d) Pools whose status does not count their claims.
    pub fn pool_status_wrong(&self) -> Vec<String> {
        let mut count: BTreeMap<String, i64> = BTreeMap::new();
        for c in &self.claims {
            *count.entry(c.spec.pool.clone()).or_default() += 1;
        }
        self.pools
            .iter()
            .filter_map(|p| {
                let want = count.get(&p.name_any()).copied().unwrap_or(0);
                let got = p.status.as_ref().map(|s| s.allocated);
                (got != Some(want))
                    .then(|| format!("pool {}: allocated {got:?}, claims {want}", p.name_any()))
            })
            .collect()
    }
}

/// Whether the workload exists with that uid.
async fn exists(client: &Client, w: &WorkloadRef) -> Result<bool> {
    let (group, version) = w.group_version();
    let gvk = GroupVersionKind::gvk(group, version, &w.kind);
    let plural = format!("{}s", w.kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &w.namespace, &ar);
    Ok(api
        .get_metadata_opt(&w.name)
        .await?
        .is_some_and(|m| m.metadata.uid.as_deref() == Some(w.uid.as_str())))
}
