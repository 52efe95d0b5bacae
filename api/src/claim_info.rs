//! An IPClaim as every decision reads it: parsed once, when its watch delivers it, into typed
//! fields (the address as an `IpNet`, the retain policy, the recorded workload). About a
//! third of the API object's size in memory, which matters at tens of thousands of claims.

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::annotations::Retain;
use crate::claim::{RETAIN_LABEL, WORKLOAD_ANNOTATION};
use crate::holder::ClaimHolder;
use crate::set::WORKLOAD_NAMESPACE_LABEL;
use crate::workload::WorkloadRef;
use crate::{ClaimPhase, IPClaim, Owner, PodRef, owner};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimInfo {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub address: IpNet,
    pub pool: String,
    pub owner: Owner,
    /// The recorded holder (`spec.pod`); `None` when it names no pod at all.
    pub pod: Option<PodRef>,
    pub node: Option<String>,
    pub phase: ClaimPhase,
    /// The `pinip.io/retain` label, else the owner's default.
    pub retain: Retain,
    /// Whether it carries its workload's set labels (`pinip.io/workload-*`; claims created
    /// before sets were labelled do not).
    pub labelled: bool,
    /// When it was last handed to a pod (`spec.pod.reservedAt`), else created.
    pub since: Option<Timestamp>,
    /// The workload that keeps it (`pinip.io/workload`, written by the binder).
    pub workload: Option<WorkloadRef>,
    pub deleting: bool,
    pub created: Option<Timestamp>,
    /// When the binder last released it (`status.releasedAt`).
    pub released_at: Option<Timestamp>,
}

impl ClaimInfo {
    /// Reads a claim; `Err` (with the reason) for one with garbage fields.
    pub fn read(c: &IPClaim) -> Result<ClaimInfo, String> {
        let name = c.metadata.name.clone().ok_or("claim without a name")?;
        let address: IpNet =
            c.spec.address.parse().map_err(|_| {
                format!("spec.address {:?} is not an address/prefix", c.spec.address)
            })?;
        // The name is the lock: a claim whose fields say another address would leave both
        // looking free.
        if let Ok((_, named)) = crate::parse_claim_name(&name)
            && named != address.addr()
        {
            return Err(format!(
                "its name stands for {named} but spec.address is {address}"
            ));
        }
        let retain = match c.labels().get(RETAIN_LABEL) {
            Some(v) => v.parse::<Retain>().map_err(|e| format!("label {e}"))?,
            None => owner::default_retain(&c.spec.owner),
        };
        let workload = c
            .annotations()
            .get(WORKLOAD_ANNOTATION)
            .and_then(|v| WorkloadRef::parse(&c.spec.owner.namespace, v).ok());
        Ok(ClaimInfo {
            name,
            uid: c.metadata.uid.clone().unwrap_or_default(),
            resource_version: c.metadata.resource_version.clone().unwrap_or_default(),
            address,
            pool: c.spec.pool.clone(),
            owner: c.spec.owner.clone(),
            pod: c
                .spec
                .pod
                .clone()
                .filter(|p| !p.name.is_empty() || !p.generate_name.is_empty()),
            node: c.spec.node.clone().filter(|n| !n.is_empty()),
            phase: c.phase(),
            retain,
            labelled: c.labels().contains_key(WORKLOAD_NAMESPACE_LABEL),
            since: c.reserved_since(),
            workload,
            deleting: c.metadata.deletion_timestamp.is_some(),
            created: c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            released_at: c
                .status
                .as_ref()
                .and_then(|s| s.released_at.as_ref())
                .map(|t| t.0),
        })
    }

    /// The address without its prefix length.
    pub fn ip(&self) -> std::net::IpAddr {
        self.address.addr()
    }

    /// The holder this claim records, for messages.
    pub fn holder_shown(&self) -> String {
        let ns = &self.owner.namespace;
        match &self.pod {
            Some(p) if !p.name.is_empty() => format!("pod {ns}/{}", p.name),
            Some(p) => format!("a pod {ns}/{}* being created", p.generate_name),
            None => "no pod".into(),
        }
    }
}

impl ClaimHolder for ClaimInfo {
    fn claim_name(&self) -> &str {
        &self.name
    }

    fn holder_pod(&self) -> Option<&PodRef> {
        self.pod.as_ref()
    }

    fn claim_phase(&self) -> ClaimPhase {
        self.phase
    }

    fn holder_namespace(&self) -> &str {
        &self.owner.namespace
    }

    fn reserved_since(&self) -> Option<Timestamp> {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holder::Record;
    use serde_json::json;

    #[test]
    fn reads_what_decisions_need_and_agrees_on_the_holder() {
        let c: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": "10-0-0-5", "uid": "u", "resourceVersion": "3",
                "creationTimestamp": "2030-01-01T00:00:00Z",
                "labels": {RETAIN_LABEL: "app", WORKLOAD_NAMESPACE_LABEL: "ns"},
                "annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"w"}"#}},
            "spec": {"pool": "p", "address": "10.0.0.5/24",
                "owner": {"kind": "Deployment", "namespace": "ns", "name": "web"},
                "pod": {"generateName": "web-x-", "reservedAt": "2030-01-01T00:00:09Z"}},
            "status": {"phase": "Released", "releasedAt": "2030-01-01T00:00:05Z"}}))
        .unwrap();
        let i = ClaimInfo::read(&c).unwrap();
        assert_eq!(i.ip(), "10.0.0.5".parse::<std::net::IpAddr>().unwrap());
        assert_eq!((i.retain, i.labelled), (Retain::App, true));
        assert_eq!(i.workload.as_ref().unwrap().uid, "w");
        assert_eq!(i.record(), c.record());
        assert_eq!(
            i.record(),
            Record::Prefix {
                generate_name: "web-x-"
            }
        );
        assert_eq!(i.reserved_since(), c.reserved_since());
        assert_eq!(i.holder_namespace(), "ns");
        let mut bad = c.clone();
        bad.spec.address = "nope".into();
        assert!(ClaimInfo::read(&bad).is_err());
        // The name is the lock: fields that say another address are not believed.
        let mut other = c.clone();
        other.spec.address = "10.0.0.6/24".into();
        let why = ClaimInfo::read(&other).unwrap_err();
        assert!(why.contains("stands for 10.0.0.5"), "{why}");
        let mut unnamed = c.clone();
        unnamed.metadata.name = Some("legacy".into());
        assert!(
            ClaimInfo::read(&unnamed).is_ok(),
            "names that are no address are not checked"
        );
    }
}
