//! What the decisions produce: the writes (actions) with their reasons, the pod events to
//! record, and the conflicts to report.

use std::fmt;

use ipnet::IpNet;
use pinip_api::ClaimPhase;
use pinip_api::annotations::ALLOCATION;

use crate::workload::WorkloadRef;

use super::PodKey;

/// Pod events the binder records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The claim now records the pod; the pod is not scheduled yet.
    IPReserved,
    /// The claim records the pod and its node.
    IPBound,
    /// The pod is gone and its address was released.
    IPReleased,
    /// The pod's allocation names an address its claim does not back.
    IPConflict,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::IPReserved => "IPReserved",
            Reason::IPBound => "IPBound",
            Reason::IPReleased => "IPReleased",
            Reason::IPConflict => "IPConflict",
        }
    }
}

/// Record `pod` (and its node) on the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub claim: String,
    pub resource_version: String,
    pub address: IpNet,
    pub pod: PodKey,
    pub node: Option<String>,
    pub phase: ClaimPhase,
    /// The workload annotation to write (retained claims).
    pub workload: Option<WorkloadRef>,
    pub write_spec: bool,
    pub write_status: bool,
    pub event: Option<Reason>,
    /// The claim records no uid yet (a reservation or handover by name or generateName):
    /// the pod is asked of the API server before the write, since the pod watch may still
    /// show a pod of that name that was deleted before the claim was handed on.
    pub first: bool,
}

/// Why a claim is released or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The pod it was bound to is gone.
    PodGone(PodKey),
    /// Reserved for longer than the grace period, and no pod took it.
    NeverAppeared,
    /// The workload that retained it is gone.
    WorkloadGone(String),
    /// `--release-on-scale-down`: its StatefulSet ordinal is beyond the replicas.
    ScaledDown { ordinal: i32, replicas: i32 },
    /// A Released claim that is not retained.
    NotRetained,
    /// A Released member of an `app` set that holds more than its bound (scaled down).
    SetShrunk { members: usize, bound: u32 },
}

impl Why {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Why::PodGone(_) => "pod_gone",
            Why::NeverAppeared => "never_appeared",
            Why::WorkloadGone(_) => "workload_gone",
            Why::ScaledDown { .. } => "scaled_down",
            Why::NotRetained => "not_retained",
            Why::SetShrunk { .. } => "set_shrunk",
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::PodGone(p) => write!(f, "pod {p} (uid {}) is gone", p.uid),
            Why::NeverAppeared => {
                f.write_str("no pod took the reservation within the grace period")
            }
            Why::WorkloadGone(w) => write!(f, "{w} is gone"),
            Why::ScaledDown { ordinal, replicas } => write!(
                f,
                "ordinal {ordinal} is beyond the StatefulSet's {replicas} replicas"
            ),
            Why::NotRetained => f.write_str("released and not retained"),
            Why::SetShrunk { members, bound } => write!(
                f,
                "its workload's address set holds {members} addresses, more than its bound {bound}"
            ),
        }
    }
}

/// One write the binder makes to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Bind(Bind),
    /// Clear `spec.pod` and `spec.node` (when set), then phase Released.
    Release {
        claim: String,
        resource_version: String,
        address: IpNet,
        clear_spec: bool,
        why: Why,
    },
    Delete {
        claim: String,
        uid: String,
        resource_version: String,
        address: IpNet,
        why: Why,
    },
}

impl Action {
    pub fn claim(&self) -> &str {
        match self {
            Action::Bind(b) => &b.claim,
            Action::Release { claim, .. } | Action::Delete { claim, .. } => claim,
        }
    }

    pub fn why(&self) -> Option<&Why> {
        match self {
            Action::Bind(_) => None,
            Action::Release { why, .. } | Action::Delete { why, .. } => Some(why),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConflictReason {
    /// No claim of that name exists.
    MissingClaim,
    /// The claim backs another address or pool.
    Mismatch { address: String, pool: String },
    /// The claim records another holder (or none).
    NotHolder { holder: String },
}

impl ConflictReason {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConflictReason::MissingClaim => "missing_claim",
            ConflictReason::Mismatch { .. } => "mismatch",
            ConflictReason::NotHolder { .. } => "not_holder",
        }
    }
}

/// A live pod whose allocation names an address that its claim does not back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conflict {
    pub pod: PodKey,
    pub claim: String,
    pub address: IpNet,
    pub reason: ConflictReason,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (addr, claim) = (&self.address, &self.claim);
        match &self.reason {
            ConflictReason::MissingClaim => write!(
                f,
                "{ALLOCATION} names {addr}, but IPClaim {claim} does not exist: the address is not reserved for this pod"
            ),
            ConflictReason::Mismatch { address, pool } => write!(
                f,
                "{ALLOCATION} names {addr}, but IPClaim {claim} backs {address} in pool {pool}"
            ),
            ConflictReason::NotHolder { holder } => write!(
                f,
                "{ALLOCATION} names {addr}, but IPClaim {claim} is held by {holder}"
            ),
        }
    }
}
