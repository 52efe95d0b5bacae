//! The `IPClaim` custom resource: one object per address in use, named after the address so
//! that the API server's name uniqueness is the allocator's lock.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every claim: the retain policy it was decided with (`none`, `ordinal`, `app`).
/// Written by the webhook at creation, read by the binder.
pub const RETAIN_LABEL: &str = "pinip.io/retain";

/// Annotation on a retained claim: the workload that keeps it (`apiVersion`, `kind`, `name`,
/// `uid` as JSON), written by the binder. IPClaims are cluster-scoped, and Kubernetes' garbage
/// collector never deletes a cluster-scoped object for a namespaced owner, so claims carry no
/// ownerReferences; the binder releases them when this workload is gone.
pub const WORKLOAD_ANNOTATION: &str = "pinip.io/workload";

/// An address held by an owner (a pod, or a workload that retains it).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "pinip.io",
    version = "v1alpha1",
    kind = "IPClaim",
    plural = "ipclaims",
    doc = "One address in use, named after the address: the API server's name uniqueness is pinip's allocation lock.",
    shortname = "ipc",
    status = "IPClaimStatus",
    printcolumn = r#"{"name":"ADDRESS","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"POOL","type":"string","jsonPath":".spec.pool"}"#,
    printcolumn = r#"{"name":"OWNER","type":"string","jsonPath":".spec.owner.name"}"#,
    printcolumn = r#"{"name":"POD","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"NODE","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = serde_json::json!([
    {"rule": "self.pool == oldSelf.pool && self.address == oldSelf.address",
     "message": "pool and address are immutable: a claim is its address"}
])))]
pub struct IPClaimSpec {
    /// The IPPool the address comes from.
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,
    /// The address with its pool's prefix length, e.g. `10.20.0.5/24`.
    #[schemars(length(max = 49))]
    pub address: String,
    /// Who keeps this address.
    pub owner: Owner,
    /// The pod currently bound (set by the binder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The node that pod runs on (set by the binder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod interface the address is configured on.
    #[serde(default = "default_interface")]
    pub interface: String,
}

fn default_interface() -> String {
    "eth0".to_string()
}

/// The identity an address belongs to: a pod, or a workload (and its ordinal for StatefulSets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Owner {
    /// `Pod`, `StatefulSet`, `Deployment` or any controller kind.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// StatefulSet pods: the address belongs to the ordinal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ordinal: Option<i32>,
}

/// The one pod that holds a claim (see [`crate::holder`]). The webhook writes it when it hands
/// the claim to a pod (name, or `generateName` while the API server has not named the pod
/// yet, and `reservedAt`); the binder adds the uid once the pod exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The pod's `generateName` when it was reserved before the API server named it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    /// When the webhook handed the claim to this pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Absent until the binder first sees the claim; an absent phase means Reserved (the webhook
/// creates a claim without status: only the binder writes it, ValidatingAdmissionPolicy
/// `pinip-claim-writers`). The CRD has no status subresource, so that the binder binds or
/// releases a claim, spec and status, in one write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPClaimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClaimPhase>,
    /// When a retained claim was last taken for a new pod (Released → Reserved); the binder's
    /// reclaim grace period counts from here, or from creation when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the binder last released it (Released); a surplus member of an `app` set is
    /// deleted `--set-shrink-grace` after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl IPClaim {
    pub fn phase(&self) -> ClaimPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(ClaimPhase::Reserved)
    }

    /// The address this claim backs (`spec.address` without its prefix length); `None` for a
    /// claim whose address does not parse.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.spec.address.split('/').next()?.parse().ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClaimPhase {
    /// Decided by the webhook for a pod that is not bound yet.
    Reserved,
    /// A live pod holds the address.
    Bound,
    /// No pod holds the address. A retained claim (StatefulSet ordinal, `app` set) waits in
    /// this phase for its owner's next pod; any other claim is about to be deleted.
    Released,
}
