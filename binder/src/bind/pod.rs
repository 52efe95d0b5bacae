//! Pods as the decisions see them: who they are, the addresses their allocation names.

use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pinip_api::ClaimInfo;
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::owner::{self, Controllers};

use crate::workload::WorkloadRef;

/// A pod, as far as its addresses go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One address a pod's allocation names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedIp {
    pub claim: String,
    pub address: IpNet,
    pub pool: String,
}

/// What the binder needs of a pod that carries an allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub key: PodKey,
    /// The `generateName` the pod was created with, if any.
    pub generate_name: Option<String>,
    pub node: Option<String>,
    /// Succeeded or Failed and not being deleted: its sandbox is gone, it holds no address.
    pub terminal: bool,
    pub created: Option<Timestamp>,
    /// The verified workload that keeps the pod's retained addresses (the Deployment behind a
    /// ReplicaSet); `None` for a pod that is its own owner, or while the caches do not know
    /// its controller yet.
    pub workload: Option<WorkloadRef>,
    pub ips: Vec<NamedIp>,
}

impl PodInfo {
    /// `Ok(None)` for a pod without allocation; `Err` (with the reason) for one that cannot be
    /// read. `controllers` answers from the workload watches (the shared owner resolver).
    pub fn read(pod: &Pod, controllers: &dyn Controllers) -> Result<Option<PodInfo>, String> {
        let Some(raw) = pod.annotations().get(ALLOCATION) else {
            return Ok(None);
        };
        let (Some(namespace), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            return Err("pod without namespace, name or uid".into());
        };
        let allocation: Allocation = raw.parse().map_err(|e| format!("{e}"))?;
        let ips = allocation
            .interfaces
            .iter()
            .flat_map(|i| &i.ips)
            .map(|ip| NamedIp {
                claim: ip.claim.clone(),
                address: ip.address,
                pool: ip.pool.clone(),
            })
            .collect();
        let workload = owner::resolve(pod, &namespace, controllers)
            .ok()
            .and_then(|r| r.workload);
        Ok(Some(PodInfo {
            key: PodKey {
                namespace,
                name,
                uid,
            },
            generate_name: pod.metadata.generate_name.clone().filter(|g| !g.is_empty()),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            terminal: !pinip_api::holder::is_live(pod),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            workload,
            ips,
        }))
    }
}

/// The pod a claim was last bound to, if it recorded one.
pub(super) fn bound_pod(c: &ClaimInfo) -> Option<PodKey> {
    c.pod
        .as_ref()
        .filter(|p| !p.uid.is_empty() && !p.name.is_empty())
        .map(|p| PodKey {
            namespace: c.owner.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        })
}
