//! The binder's decisions: pure functions from a snapshot of claims, pods and workloads to the
//! writes that bring the claims in line with the pods. `reconcile.rs` carries them out.
//!
//! - A claim is bound only to the holder it records (`spec.pod`, written by the webhook when it
//!   handed the claim over: the pod's name, or its `generateName` before the API server named
//!   it), when that live pod's `pinip.io/allocation` names the claim's exact address and pool:
//!   `spec.pod.uid`, `spec.node` once the pod is scheduled, phase Reserved until then and Bound
//!   after. Owner identity never decides who holds a claim.
//! - A claim whose pod is gone is deleted (retain `none`) or Released (retained), unless its
//!   workload is gone too (deleted) or `--release-on-scale-down` applies (deleted).
//! - A Reserved claim no pod has taken is reclaimed once the grace period since it was
//!   reserved is over: deleted, or Released when retained. Never earlier: the pod may still be
//!   in admission.
//! - A live pod naming a claim that does not back it (missing, other address or pool, another
//!   recorded holder) is a conflict: reported, never resolved by moving the claim.
//! - Every release or delete is confirmed against the API server before it is written
//!   (`reconcile.rs`, `pinip_index::confirm_free`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pinip_api::annotations::{ALLOCATION, Allocation, Retain};
use pinip_api::owner::{self, Controllers};
use pinip_api::{ClaimInfo, ClaimPhase, Owner};

use crate::workload::{Presence, WorkloadRef};

/// The knobs of the decisions (from flags).
#[derive(Clone, Debug)]
pub struct Policy {
    pub reclaim_grace: Duration,
    /// How long after its release a surplus member of an `app` set is deleted.
    pub set_shrink_grace: Duration,
    pub release_on_scale_down: bool,
    pub conflict_settle: Duration,
}

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
fn bound_pod(c: &ClaimInfo) -> Option<PodKey> {
    c.pod
        .as_ref()
        .filter(|p| !p.uid.is_empty() && !p.name.is_empty())
        .map(|p| PodKey {
            namespace: c.owner.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        })
}

/// Answers whether workloads exist.
pub trait Workloads {
    fn presence(&self, r: &WorkloadRef) -> Presence;
    /// For a retained claim that never recorded its workload: by the owner's kind and name.
    fn presence_by_owner(&self, o: &Owner) -> Presence;
    /// The bound of the workload's `app` address set ([`pinip_api::set::bound`]); `None`
    /// when it is unbounded or not known (then no member is deleted as surplus).
    fn set_bound(&self, r: &WorkloadRef) -> Option<u32>;
}

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

/// Everything one reconcile decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Workloads to look up before their claims can be decided.
    pub lookups: Vec<WorkloadRef>,
    /// When a decision falls due without any change (a grace period ending).
    pub wake_in: Option<Duration>,
}

impl Plan {
    fn wake(&mut self, at: Timestamp, now: Timestamp) {
        let d = at
            .duration_since(now)
            .try_into()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(100));
        self.wake_in = Some(self.wake_in.map_or(d, |w| w.min(d)));
    }

    /// Whether `p` is younger than `--conflict-settle` (then a wake-up is planned for when it
    /// is not): a conflict on so young a pod may only be a write our watches have not shown.
    fn too_young(&mut self, p: &PodInfo, policy: &Policy, now: Timestamp) -> bool {
        match p.created.and_then(|t| after(t, policy.conflict_settle)) {
            Some(at) if at > now => {
                self.wake(at, now);
                true
            }
            _ => false,
        }
    }
}

/// The snapshot the decisions read.
pub struct World<'a, W: Workloads> {
    pub claims: &'a [Arc<ClaimInfo>],
    /// Names of claims that exist but could not be read (they are not "missing").
    pub unreadable: &'a HashSet<String>,
    /// Whether a claim outside `claims` exists: a reconcile of what changed holds only some
    /// claims, and a pod naming another one does not make that one missing.
    pub exists: &'a dyn Fn(&str) -> bool,
    pub pods: &'a [PodInfo],
    pub workloads: &'a W,
    /// Claims whose last write by this binder its watch has not shown yet: not decided again.
    pub in_flight: &'a HashSet<String>,
    pub now: Timestamp,
}

/// Decides every claim and pod of the snapshot.
pub fn plan<W: Workloads>(world: &World<'_, W>, policy: &Policy) -> Plan {
    let mut plan = Plan::default();
    let live: Vec<&PodInfo> = world.pods.iter().filter(|p| !p.terminal).collect();
    let mut naming: HashMap<&str, Vec<(&PodInfo, &NamedIp)>> = HashMap::new();
    for p in &live {
        for ip in &p.ips {
            naming.entry(ip.claim.as_str()).or_default().push((p, ip));
        }
    }
    let mut lookups: HashSet<WorkloadRef> = HashSet::new();
    let mut sets: Sets = HashMap::new();
    for c in world
        .claims
        .iter()
        .filter(|c| c.retain == Retain::App && !c.deleting)
    {
        sets.entry((&c.owner, c.pool.as_str())).or_default().push(c);
    }
    for c in world.claims {
        if c.deleting {
            continue;
        }
        let namers = naming
            .get(c.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if world.in_flight.contains(&c.name) {
            // Our last write to it is not in the watch yet: neither decided nor judged.
            continue;
        }
        let holder = choose_holder(c, namers);
        for (p, ip) in namers {
            if holder.is_some_and(|h| h.key.uid == p.key.uid) {
                continue;
            }
            // The claim's watch may not show the webhook's handover to this pod yet.
            if plan.too_young(p, policy, world.now) {
                continue;
            }
            let reason = if !backs(c, ip) {
                ConflictReason::Mismatch {
                    address: c.address.to_string(),
                    pool: c.pool.clone(),
                }
            } else {
                ConflictReason::NotHolder {
                    holder: c.holder_shown(),
                }
            };
            plan.conflicts.push(Conflict {
                pod: p.key.clone(),
                claim: c.name.clone(),
                address: ip.address,
                reason,
            });
        }
        let action = match holder {
            Some(p) => bind(c, p),
            // A live pod names exactly this claim without being its recorded holder (a
            // conflict, reported above, e.g. left by an older version): never release it
            // from under that pod.
            None if namers.iter().any(|(_, ip)| backs(c, ip)) => None,
            None => unheld(c, world, policy, &sets, &mut plan, &mut lookups),
        };
        plan.actions.extend(action);
    }
    let known: HashSet<&str> = world
        .claims
        .iter()
        .map(|c| c.name.as_str())
        .chain(world.unreadable.iter().map(String::as_str))
        .collect();
    for p in &live {
        for ip in &p.ips {
            if known.contains(ip.claim.as_str()) || (world.exists)(&ip.claim) {
                continue;
            }
            // The webhook may have created the claim moments ago: only a settled pod counts.
            if !plan.too_young(p, policy, world.now) {
                plan.conflicts.push(Conflict {
                    pod: p.key.clone(),
                    claim: ip.claim.clone(),
                    address: ip.address,
                    reason: ConflictReason::MissingClaim,
                });
            }
        }
    }
    plan.lookups = lookups.into_iter().collect();
    plan.lookups
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    plan
}

/// `t + d`; `None` past the end of time (a garbage timestamp), so nothing falls due.
fn after(t: Timestamp, d: Duration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

/// Whether the allocation entry names exactly what the claim backs.
fn backs(c: &ClaimInfo, ip: &NamedIp) -> bool {
    ip.address == c.address && ip.pool == c.pool
}

/// The live pod that holds the claim: the holder it records, when that pod names exactly the
/// claim's address and pool — by uid once bound, by name when reserved for a named pod, by
/// `generateName` (oldest first) when reserved before the API server named the pod. Nobody
/// else, whatever its owner: handing a claim to another pod is the webhook's write.
fn choose_holder<'a>(c: &ClaimInfo, namers: &[(&'a PodInfo, &NamedIp)]) -> Option<&'a PodInfo> {
    let mine = namers
        .iter()
        .filter(|(p, ip)| backs(c, ip) && p.key.namespace == c.owner.namespace)
        .map(|(p, _)| *p);
    let Some(recorded) = c.pod.as_ref() else {
        // A reservation that records no pod at all was made by a webhook older than the
        // holder record (a generateName pod): the one pod whose allocation names it.
        return match c.phase {
            ClaimPhase::Reserved => mine.min_by_key(|p| oldest_first(p)),
            _ => None,
        };
    };
    if !recorded.name.is_empty() {
        let uid = Some(recorded.uid.as_str()).filter(|u| !u.is_empty());
        return mine
            .filter(|p| p.key.name == recorded.name && uid.is_none_or(|u| p.key.uid == u))
            .min_by_key(|p| p.created);
    }
    let prefix = recorded.generate_name.as_str();
    mine.filter(|p| p.generate_name.as_deref() == Some(prefix) && p.key.name.starts_with(prefix))
        .min_by_key(|p| oldest_first(p))
}

/// Orders pods oldest first, then by name (a stable choice among equals).
fn oldest_first(p: &PodInfo) -> (Option<Timestamp>, &str) {
    (p.created, p.key.name.as_str())
}

fn bind(c: &ClaimInfo, p: &PodInfo) -> Option<Action> {
    let same_pod = c
        .pod
        .as_ref()
        .is_some_and(|r| r.name == p.key.name && r.uid == p.key.uid);
    let phase = if p.node.is_some() || (same_pod && c.phase == ClaimPhase::Bound) {
        ClaimPhase::Bound
    } else {
        ClaimPhase::Reserved
    };
    let node = p.node.clone().or_else(|| {
        // Never forget a node the pod was bound to.
        same_pod.then(|| c.node.clone()).flatten()
    });
    let workload = match c.retain {
        Retain::None => c.workload.clone(),
        Retain::Ordinal | Retain::App => p.workload.clone().or_else(|| c.workload.clone()),
    };
    let write_spec = !same_pod || c.node != node || c.workload != workload;
    let write_status = c.phase != phase;
    if !write_spec && !write_status {
        return None;
    }
    let event = if !same_pod || (c.node.is_none() && node.is_some()) {
        Some(if node.is_some() {
            Reason::IPBound
        } else {
            Reason::IPReserved
        })
    } else {
        None
    };
    Some(Action::Bind(Bind {
        claim: c.name.clone(),
        resource_version: c.resource_version.clone(),
        address: c.address,
        pod: p.key.clone(),
        node,
        phase,
        workload,
        write_spec,
        write_status,
        event,
    }))
}

/// The members of each `app` set (owner, pool).
type Sets<'a> = HashMap<(&'a Owner, &'a str), Vec<&'a ClaimInfo>>;

/// A claim no live pod holds.
fn unheld<W: Workloads>(
    c: &ClaimInfo,
    world: &World<'_, W>,
    policy: &Policy,
    sets: &Sets<'_>,
    plan: &mut Plan,
    lookups: &mut HashSet<WorkloadRef>,
) -> Option<Action> {
    let delete = |why: Why| Action::Delete {
        claim: c.name.clone(),
        uid: c.uid.clone(),
        resource_version: c.resource_version.clone(),
        address: c.address,
        why,
    };
    let release = |why: Why| Action::Release {
        claim: c.name.clone(),
        resource_version: c.resource_version.clone(),
        address: c.address,
        clear_spec: c.pod.is_some() || c.node.is_some(),
        why,
    };
    let retained = c.retain != Retain::None;
    if let Some(gone) = bound_pod(c) {
        let why = Why::PodGone(gone);
        if !retained {
            return Some(delete(why));
        }
        return Some(match retained_end(c, world, policy, lookups) {
            Some(end) => delete(end),
            None => release(why),
        });
    }
    // Reserved for a pod that has not appeared (by name or generateName), or Reserved with no
    // record at all: its pod may still be in admission until the grace period is over.
    if c.pod.is_some() || c.phase == ClaimPhase::Reserved {
        let due = after(c.since?, policy.reclaim_grace)?;
        if due > world.now {
            plan.wake(due, world.now);
            return None;
        }
        // A retained claim becomes a member of its workload's set when first bound (the
        // binder records the workload then); one that never was is not promoted to a member:
        // a pod refused after /mutate (quota, another webhook) leaves nothing behind.
        return Some(if retained && c.workload.is_some() {
            release(Why::NeverAppeared)
        } else {
            delete(Why::NeverAppeared)
        });
    }
    match c.phase {
        ClaimPhase::Released if !retained => Some(delete(Why::NotRetained)),
        ClaimPhase::Released => retained_end(c, world, policy, lookups)
            .or_else(|| surplus(c, world, policy, sets, plan))
            .map(delete),
        // Bound without a pod: a release whose status write did not happen.
        _ => Some(if retained {
            release(Why::NeverAppeared)
        } else {
            delete(Why::NeverAppeared)
        }),
    }
}

/// Whether a Released member of an `app` set is surplus: the set holds more than its bound
/// (the workload was scaled down, not to zero), this member is among the newest Released
/// ones beyond it (the set keeps its oldest addresses, the ones longest on allow-lists), and
/// it was released `--set-shrink-grace` ago (so a quick scale down and up keeps the set).
fn surplus<W: Workloads>(
    c: &ClaimInfo,
    world: &World<'_, W>,
    policy: &Policy,
    sets: &Sets<'_>,
    plan: &mut Plan,
) -> Option<Why> {
    if c.retain != Retain::App || c.pod.is_some() {
        return None;
    }
    // A workload scaled to zero keeps its whole set.
    let bound = world
        .workloads
        .set_bound(c.workload.as_ref()?)
        .filter(|b| *b > 0)?;
    let members = sets.get(&(&c.owner, c.pool.as_str()))?;
    let excess = members
        .len()
        .checked_sub(bound as usize)
        .filter(|e| *e > 0)?;
    let mut released: Vec<&ClaimInfo> = members
        .iter()
        .filter(|m| m.phase == ClaimPhase::Released && m.pod.is_none())
        .copied()
        .collect();
    released.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
    if !released.iter().take(excess).any(|m| m.name == c.name) {
        return None;
    }
    // Released by a version that did not record when: not trimmed until its next release.
    let due = after(c.released_at?, policy.set_shrink_grace)?;
    if due > world.now {
        plan.wake(due, world.now);
        return None;
    }
    Some(Why::SetShrunk {
        members: members.len(),
        bound,
    })
}

/// Whether a retained claim without a pod has reached its end: its workload is gone, or it
/// was scaled away under `--release-on-scale-down`.
fn retained_end<W: Workloads>(
    c: &ClaimInfo,
    world: &World<'_, W>,
    policy: &Policy,
    lookups: &mut HashSet<WorkloadRef>,
) -> Option<Why> {
    let presence = match &c.workload {
        Some(r) => {
            let p = world.workloads.presence(r);
            if p == Presence::Unknown {
                lookups.insert(r.clone());
            }
            p
        }
        None => world.workloads.presence_by_owner(&c.owner),
    };
    match presence {
        Presence::Gone => Some(Why::WorkloadGone(match &c.workload {
            Some(r) => r.to_string(),
            None => owner::holder(&c.owner),
        })),
        Presence::Exists {
            replicas: Some(replicas),
        } if policy.release_on_scale_down => match c.owner.ordinal {
            Some(ordinal) if c.retain == Retain::Ordinal && ordinal >= replicas => {
                Some(Why::ScaledDown { ordinal, replicas })
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use pinip_api::claim::{RETAIN_LABEL, WORKLOAD_ANNOTATION};
    use pinip_api::owner::Looked;
    use pinip_api::{IPClaim, PodRef};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    const GRACE: Duration = Duration::from_secs(120);

    fn policy() -> Policy {
        Policy {
            reclaim_grace: GRACE,
            set_shrink_grace: GRACE,
            release_on_scale_down: false,
            conflict_settle: Duration::from_secs(10),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T0: &str = "2030-01-01T00:00:00Z";
    const T1: &str = "2030-01-01T00:01:00Z"; // within grace of T0
    const T3: &str = "2030-01-01T00:03:00Z"; // past grace of T0

    /// A claim as the webhook creates it, plus `extra` merged into the object.
    fn claim(name: &str, address: &str, owner: Value, retain: &str, extra: Value) -> ClaimInfo {
        let mut v = json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": name, "uid": format!("cu-{name}"), "resourceVersion": "7",
                "creationTimestamp": T0, "labels": {RETAIN_LABEL: retain}},
            "spec": {"pool": "blue", "address": address, "owner": owner, "interface": "eth0"},
        });
        merge(&mut v, extra);
        ClaimInfo::read(&serde_json::from_value::<IPClaim>(v).unwrap()).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn alloc(ips: &[(&str, &str)]) -> String {
        let ips: Vec<Value> = ips
            .iter()
            .map(|(claim, addr)| json!({"address": addr, "pool": "blue", "claim": claim}))
            .collect();
        json!({"version": 1, "interfaces": [{"name": "eth0", "ips": ips}]}).to_string()
    }

    /// A pod of StatefulSet `db` (ordinal from the name), Deployment `web` (via ReplicaSet
    /// `web-abc`), or a bare pod (`owner` = "").
    fn pod(
        name: &str,
        uid: &str,
        owner: &str,
        node: Option<&str>,
        ips: &[(&str, &str)],
    ) -> PodInfo {
        let refs = match owner {
            "db" => {
                json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "sts-uid", "controller": true}])
            }
            "web" => {
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-uid", "controller": true}])
            }
            _ => json!([]),
        };
        let generate_name = (owner == "web").then_some("web-abc-");
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": T0,
                "generateName": generate_name,
                "ownerReferences": refs, "annotations": {ALLOCATION: alloc(ips)}},
            "spec": {"containers": [], "nodeName": node},
        }))
        .unwrap();
        PodInfo::read(&p, &TestControllers).unwrap().unwrap()
    }

    /// StatefulSet `db`, ReplicaSet `web-abc` of Deployment `web`.
    struct TestControllers;

    impl Controllers for TestControllers {
        fn look(&self, _: &str, kind: &str, _: &str, name: &str) -> Looked {
            let found = |uid: &str, ctl: Option<OwnerReference>| Looked::Found {
                uid: uid.into(),
                controller: ctl,
            };
            match (kind, name) {
                ("StatefulSet", "db") => found("sts-uid", None),
                ("Deployment", "web") => found("deploy-uid", None),
                ("ReplicaSet", "web-abc") => found(
                    "rs-uid",
                    Some(OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "web".into(),
                        uid: "deploy-uid".into(),
                        controller: Some(true),
                        ..Default::default()
                    }),
                ),
                _ => Looked::Absent,
            }
        }
    }

    fn sts_owner(ordinal: i32) -> Value {
        json!({"kind": "StatefulSet", "namespace": "ns", "name": "db", "ordinal": ordinal})
    }

    fn pod_owner(name: &str) -> Value {
        json!({"kind": "Pod", "namespace": "ns", "name": name})
    }

    /// Presence by "kind/uid" (or "kind/name" for owners), and set bounds by "kind/uid".
    #[derive(Default)]
    struct Known(BTreeMap<String, Presence>, BTreeMap<String, u32>);

    impl Workloads for Known {
        fn presence(&self, r: &WorkloadRef) -> Presence {
            self.0
                .get(&format!("{}/{}", r.kind, r.uid))
                .copied()
                .unwrap_or(Presence::Unknown)
        }
        fn presence_by_owner(&self, o: &Owner) -> Presence {
            self.0
                .get(&format!("{}/{}", o.kind, o.name))
                .copied()
                .unwrap_or(Presence::Exists { replicas: None })
        }
        fn set_bound(&self, r: &WorkloadRef) -> Option<u32> {
            self.1.get(&format!("{}/{}", r.kind, r.uid)).copied()
        }
    }

    fn run(claims: &[ClaimInfo], pods: &[PodInfo], known: &Known, now: &str, p: &Policy) -> Plan {
        let claims: Vec<Arc<ClaimInfo>> = claims.iter().cloned().map(Arc::new).collect();
        plan(
            &World {
                claims: &claims,
                unreadable: &HashSet::new(),
                exists: &|_| false,
                pods,
                workloads: known,
                in_flight: &HashSet::new(),
                now: ts(now),
            },
            p,
        )
    }

    fn only_bind(plan: &Plan) -> &Bind {
        assert_eq!(plan.actions.len(), 1, "{plan:?}");
        match &plan.actions[0] {
            Action::Bind(b) => b,
            a => panic!("expected a bind, got {a:?}"),
        }
    }

    #[test]
    fn binds_reserved_claim_then_records_node() {
        let c = claim(
            "10-0-0-5",
            "10.0.0.5/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": {"name": "a"}}}),
        );
        let unscheduled = pod("a", "u1", "", None, &[("10-0-0-5", "10.0.0.5/24")]);
        let plan = run(
            std::slice::from_ref(&c),
            &[unscheduled],
            &Known::default(),
            T1,
            &policy(),
        );
        let b = only_bind(&plan);
        assert_eq!(
            (b.pod.uid.as_str(), b.node.as_deref(), b.phase, b.event),
            ("u1", None, ClaimPhase::Reserved, Some(Reason::IPReserved))
        );
        assert!(b.write_spec && !b.write_status);
        assert!(plan.conflicts.is_empty());

        // The scheduler placed it: the node is recorded and the claim is Bound.
        let scheduled = pod(
            "a",
            "u1",
            "",
            Some("node-1"),
            &[("10-0-0-5", "10.0.0.5/24")],
        );
        let bound_spec = claim(
            "10-0-0-5",
            "10.0.0.5/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": {"name": "a", "uid": "u1"}}}),
        );
        let plan = run(
            &[bound_spec],
            std::slice::from_ref(&scheduled),
            &Known::default(),
            T1,
            &policy(),
        );
        let b = only_bind(&plan);
        assert_eq!(
            (b.node.as_deref(), b.phase, b.event),
            (Some("node-1"), ClaimPhase::Bound, Some(Reason::IPBound))
        );
        assert!(b.write_spec && b.write_status);

        // Nothing to do once it is recorded.
        let done = claim(
            "10-0-0-5",
            "10.0.0.5/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": {"name": "a", "uid": "u1"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
        );
        assert_eq!(
            run(&[done], &[scheduled], &Known::default(), T3, &policy()),
            Plan::default()
        );
    }

    #[test]
    fn generate_name_pod_binds_by_allocation() {
        // The webhook knew no pod name; the pod that names the claim takes it.
        let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
        let c = claim(
            "10-0-0-6",
            "10.0.0.6/24",
            owner,
            "none",
            json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
        );
        let p = pod(
            "web-abc-x1",
            "u9",
            "web",
            Some("node-2"),
            &[("10-0-0-6", "10.0.0.6/24")],
        );
        let plan = run(&[c], &[p], &Known::default(), T1, &policy());
        let b = only_bind(&plan);
        assert_eq!(
            (b.pod.name.as_str(), b.phase),
            ("web-abc-x1", ClaimPhase::Bound)
        );
        // retain none: no workload annotation needed.
        assert_eq!(b.workload, None);
    }

    #[test]
    fn retained_claim_records_workload_behind_replicaset() {
        let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
        let c = claim(
            "10-0-0-6",
            "10.0.0.6/24",
            owner,
            "app",
            json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
        );
        let p = pod(
            "web-abc-x1",
            "u9",
            "web",
            Some("node-2"),
            &[("10-0-0-6", "10.0.0.6/24")],
        );
        let plan = run(&[c], &[p], &Known::default(), T1, &policy());
        let w = only_bind(&plan).workload.clone().unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.uid.as_str()),
            ("Deployment", "web", "deploy-uid")
        );
    }

    #[test]
    fn statefulset_pod_recreated_elsewhere_is_bound_after_the_handover() {
        // The webhook handed the ordinal's claim to the new db-1 (name only, no uid yet).
        let c = claim(
            "10-0-0-7",
            "10.0.0.7/24",
            sts_owner(1),
            "ordinal",
            json!({
            "spec": {"pod": {"name": "db-1"}}, "status": {"phase": "Released"}}),
        );
        let new = pod(
            "db-1",
            "new",
            "db",
            Some("node-3"),
            &[("10-0-0-7", "10.0.0.7/24")],
        );
        let plan = run(
            &[c],
            std::slice::from_ref(&new),
            &Known::default(),
            T3,
            &policy(),
        );
        let b = only_bind(&plan);
        assert_eq!(
            (b.pod.uid.as_str(), b.node.as_deref(), b.phase, b.event),
            (
                "new",
                Some("node-3"),
                ClaimPhase::Bound,
                Some(Reason::IPBound)
            )
        );
        assert!(b.write_spec && b.write_status);
        let w = b.workload.clone().unwrap();
        assert_eq!(
            (w.kind.as_str(), w.uid.as_str()),
            ("StatefulSet", "sts-uid")
        );
        // Without the handover, a pod of the same name is not the claim's holder: the claim
        // is never moved to it, and never released from under it either; it is reported.
        let old = claim(
            "10-0-0-7",
            "10.0.0.7/24",
            sts_owner(1),
            "ordinal",
            json!({
            "spec": {"pod": {"name": "db-1", "uid": "old"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
        );
        let plan = run(&[old], &[new], &Known::default(), T3, &policy());
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!(plan.conflicts[0].reason.metric_label(), "not_holder");
    }

    #[test]
    fn pod_gone_releases_by_policy() {
        let bound = |retain: &str, owner: Value| {
            claim(
                "10-0-0-8",
                "10.0.0.8/24",
                owner,
                retain,
                json!({
                "spec": {"pod": {"name": "db-2", "uid": "u2"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
            )
        };
        // none: deleted, and the pod that is gone is named for the event.
        let plan = run(
            &[bound("none", pod_owner("db-2"))],
            &[],
            &Known::default(),
            T1,
            &policy(),
        );
        match &plan.actions[..] {
            [
                Action::Delete {
                    why: Why::PodGone(p),
                    ..
                },
            ] => assert_eq!(p.uid, "u2"),
            a => panic!("{a:?}"),
        }
        // retained: Released with pod and node cleared.
        let plan = run(
            &[bound("ordinal", sts_owner(2))],
            &[],
            &Known::default(),
            T1,
            &policy(),
        );
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Release {
                    clear_spec: true,
                    why: Why::PodGone(_),
                    ..
                }]
            ),
            "{plan:?}"
        );
        // A terminated pod (Succeeded/Failed) holds nothing either.
        let mut done = pod(
            "db-2",
            "u2",
            "db",
            Some("node-1"),
            &[("10-0-0-8", "10.0.0.8/24")],
        );
        done.terminal = true;
        let plan = run(
            &[bound("ordinal", sts_owner(2))],
            &[done],
            &Known::default(),
            T1,
            &policy(),
        );
        assert!(
            matches!(&plan.actions[..], [Action::Release { .. }]),
            "{plan:?}"
        );
    }

    #[test]
    fn scale_down_keeps_by_default_and_deletes_on_request() {
        let c = claim(
            "10-0-0-9",
            "10.0.0.9/24",
            sts_owner(2),
            "ordinal",
            json!({
            "metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
            "spec": {"pod": {"name": "db-2", "uid": "u2"}}, "status": {"phase": "Bound"}}),
        );
        let mut known = Known::default();
        known.0.insert(
            "StatefulSet/sts-uid".into(),
            Presence::Exists { replicas: Some(1) },
        );
        let plan = run(std::slice::from_ref(&c), &[], &known, T1, &policy());
        assert!(
            matches!(&plan.actions[..], [Action::Release { .. }]),
            "{plan:?}"
        );
        let p = Policy {
            set_shrink_grace: GRACE,
            release_on_scale_down: true,
            ..policy()
        };
        let plan = run(std::slice::from_ref(&c), &[], &known, T1, &p);
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Delete {
                    why: Why::ScaledDown {
                        ordinal: 2,
                        replicas: 1
                    },
                    ..
                }]
            ),
            "{plan:?}"
        );
        // Ordinal 0 stays.
        let mut c0 = c;
        c0.owner.ordinal = Some(0);
        let plan = run(&[c0], &[], &known, T1, &p);
        assert!(
            matches!(&plan.actions[..], [Action::Release { .. }]),
            "{plan:?}"
        );
    }

    #[test]
    fn surplus_set_members_are_deleted_newest_first_after_grace() {
        let member = |n: u8, created: &str, status: Value| {
            claim(
                &format!("10-0-0-{n}"),
                &format!("10.0.0.{n}/24"),
                json!({"kind": "Deployment", "namespace": "ns", "name": "web"}),
                "app",
                json!({
                    "metadata": {"creationTimestamp": created, "annotations": {WORKLOAD_ANNOTATION:
                        r#"{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"web-uid"}"#}},
                    "status": status,
                }),
            )
        };
        let released = json!({"phase": "Released", "releasedAt": T0});
        // Five members, the newest two (by creation, then name) beyond a bound of 3.
        let claims = vec![
            member(1, T0, released.clone()),
            member(2, T0, released.clone()),
            member(3, T1, released.clone()),
            member(4, T1, released.clone()),
            member(5, T0, released.clone()),
        ];
        let mut known = Known::default();
        known.0.insert(
            "Deployment/web-uid".into(),
            Presence::Exists { replicas: None },
        );
        let deleted = |plan: &Plan| -> Vec<String> {
            plan.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Delete {
                        claim,
                        why:
                            Why::SetShrunk {
                                members: 5,
                                bound: 3,
                            },
                        ..
                    } => Some(claim.clone()),
                    _ => None,
                })
                .collect()
        };
        // Unbounded (bound unknown): nothing is surplus.
        assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
        known.1.insert("Deployment/web-uid".into(), 3);
        // Within the grace after release: kept, with a wake-up planned.
        let plan = run(&claims, &[], &known, T1, &policy());
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert!(plan.wake_in.is_some());
        let plan = run(&claims, &[], &known, T3, &policy());
        assert_eq!(deleted(&plan), vec!["10-0-0-3", "10-0-0-4"], "{plan:?}");
        // At or under the bound nothing goes.
        known.1.insert("Deployment/web-uid".into(), 5);
        assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
        // Scaled to zero: the whole set is kept.
        known.1.insert("Deployment/web-uid".into(), 0);
        assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
        // Released by a version that did not record when: kept until its next release.
        known.1.insert("Deployment/web-uid".into(), 3);
        let mut unstamped = claims.clone();
        for c in &mut unstamped {
            c.released_at = None;
        }
        assert!(
            run(&unstamped, &[], &known, T3, &policy())
                .actions
                .is_empty()
        );
        // Held members are never surplus; only Released ones are counted as candidates.
        known.1.insert("Deployment/web-uid".into(), 1);
        let mut held = claims.clone();
        for c in held.iter_mut().take(4) {
            c.phase = ClaimPhase::Bound;
            c.pod = Some(PodRef {
                name: format!("p-{}", c.name),
                uid: format!("u-{}", c.name),
                ..Default::default()
            });
        }
        let pods: Vec<PodInfo> = Vec::new();
        let plan = run(&held, &pods, &known, T3, &policy());
        assert!(
            plan.actions.iter().all(|a| match a {
                Action::Delete {
                    claim,
                    why: Why::SetShrunk { .. },
                    ..
                } => claim == "10-0-0-5",
                _ => true,
            }),
            "{plan:?}"
        );
    }

    #[test]
    fn workload_gone_deletes_retained_claims() {
        let released = claim(
            "10-0-0-10",
            "10.0.0.10/24",
            sts_owner(0),
            "ordinal",
            json!({
            "metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
            "status": {"phase": "Released"}}),
        );
        let mut known = Known::default();
        assert_eq!(
            run(std::slice::from_ref(&released), &[], &known, T1, &policy())
                .lookups
                .len(),
            1,
            "unknown workloads are looked up"
        );
        assert!(
            run(std::slice::from_ref(&released), &[], &known, T1, &policy())
                .actions
                .is_empty(),
            "never deleted on an unknown"
        );
        known.0.insert(
            "StatefulSet/sts-uid".into(),
            Presence::Exists { replicas: Some(3) },
        );
        assert!(
            run(std::slice::from_ref(&released), &[], &known, T1, &policy())
                .actions
                .is_empty()
        );
        known.0.insert("StatefulSet/sts-uid".into(), Presence::Gone);
        let plan = run(&[released], &[], &known, T1, &policy());
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Delete {
                    why: Why::WorkloadGone(_),
                    ..
                }]
            ),
            "{plan:?}"
        );
        // A claim that never recorded its workload is judged by the owner's kind and name.
        let bare = claim(
            "10-0-0-11",
            "10.0.0.11/24",
            sts_owner(1),
            "ordinal",
            json!({"status": {"phase": "Released"}}),
        );
        known.0.insert("StatefulSet/db".into(), Presence::Gone);
        let plan = run(&[bare], &[], &known, T1, &policy());
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Delete {
                    why: Why::WorkloadGone(_),
                    ..
                }]
            ),
            "{plan:?}"
        );
    }

    #[test]
    fn reserved_claim_without_pod_waits_for_grace() {
        let none = claim(
            "10-0-0-12",
            "10.0.0.12/24",
            pod_owner("q"),
            "none",
            json!({"spec": {"pod": {"name": "q"}}}),
        );
        let plan = run(
            std::slice::from_ref(&none),
            &[],
            &Known::default(),
            T1,
            &policy(),
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.wake_in, Some(Duration::from_secs(60)));
        let plan = run(&[none], &[], &Known::default(), T3, &policy());
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Delete {
                    why: Why::NeverAppeared,
                    ..
                }]
            ),
            "{plan:?}"
        );
        // Retained and a member of its workload's set (bound before, then handed to a pod
        // that never appeared): Released, its pod name cleared.
        let kept = claim(
            "10-0-0-13",
            "10.0.0.13/24",
            sts_owner(4),
            "ordinal",
            json!({"metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
                "spec": {"pod": {"name": "db-4"}}}),
        );
        let plan = run(&[kept], &[], &Known::default(), T3, &policy());
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Release {
                    clear_spec: true,
                    why: Why::NeverAppeared,
                    ..
                }]
            ),
            "{plan:?}"
        );
        // Retained but never bound (its pod was refused after /mutate): not promoted to a
        // member, deleted.
        let orphan = claim(
            "10-0-0-20",
            "10.0.0.20/24",
            sts_owner(6),
            "app",
            json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
        );
        let plan = run(&[orphan], &[], &Known::default(), T3, &policy());
        assert!(
            matches!(
                &plan.actions[..],
                [Action::Delete {
                    why: Why::NeverAppeared,
                    ..
                }]
            ),
            "{plan:?}"
        );
        // Grace counts from reservedAt when a retained claim was taken again.
        let taken = claim(
            "10-0-0-14",
            "10.0.0.14/24",
            sts_owner(5),
            "app",
            json!({"spec": {"pod": {"name": "x", "reservedAt": "2030-01-01T00:02:30Z"}},
                "status": {"phase": "Released"}}),
        );
        let plan = run(&[taken], &[], &Known::default(), T3, &policy());
        assert!(plan.actions.is_empty());
        assert_eq!(plan.wake_in, Some(Duration::from_secs(90)));
    }

    #[test]
    fn conflicts_are_reported_never_reassigned() {
        let c = claim(
            "10-0-0-15",
            "10.0.0.15/24",
            pod_owner("a"),
            "none",
            json!({
            "spec": {"pod": {"name": "a", "uid": "ua"}, "node": "n"}, "status": {"phase": "Bound"}}),
        );
        let a = pod("a", "ua", "", Some("n"), &[("10-0-0-15", "10.0.0.15/24")]);
        // Wrong address for the claim it names.
        let b = pod("b", "ub", "", Some("n"), &[("10-0-0-15", "10.0.0.99/24")]);
        // Right address, other owner.
        let d = pod("d", "ud", "", Some("n"), &[("10-0-0-15", "10.0.0.15/24")]);
        // A claim that does not exist (old enough to count).
        let e = pod("e", "ue", "", Some("n"), &[("10-0-0-16", "10.0.0.16/24")]);
        let plan = run(&[c], &[a, b, d, e], &Known::default(), T1, &policy());
        assert!(plan.actions.is_empty(), "{plan:?}");
        let got: Vec<(&str, &str)> = plan
            .conflicts
            .iter()
            .map(|c| (c.pod.name.as_str(), c.reason.metric_label()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", "mismatch"),
                ("d", "not_holder"),
                ("e", "missing_claim")
            ]
        );
        assert_eq!(
            plan.conflicts[1].to_string(),
            "pinip.io/allocation names 10.0.0.15/24, but IPClaim 10-0-0-15 is held by pod ns/a"
        );
    }

    #[test]
    fn two_live_pods_of_one_owner_one_claim() {
        // The claim stays with the pod it is bound to; the other pod is a conflict.
        let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
        let c = claim(
            "10-0-0-17",
            "10.0.0.17/24",
            owner,
            "none",
            json!({
            "spec": {"pod": {"name": "web-abc-2", "uid": "u2"}, "node": "n"}, "status": {"phase": "Bound"}}),
        );
        let older = pod(
            "web-abc-1",
            "u1",
            "web",
            Some("n"),
            &[("10-0-0-17", "10.0.0.17/24")],
        );
        let holder = pod(
            "web-abc-2",
            "u2",
            "web",
            Some("n"),
            &[("10-0-0-17", "10.0.0.17/24")],
        );
        let plan = run(&[c], &[older, holder], &Known::default(), T1, &policy());
        assert!(plan.actions.is_empty());
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].pod.name, "web-abc-1");
        assert_eq!(
            plan.conflicts[0].reason,
            ConflictReason::NotHolder {
                holder: "pod ns/web-abc-2".into()
            }
        );
    }

    #[test]
    fn fresh_pod_naming_missing_claim_is_not_yet_a_conflict() {
        let mut p = pod("young", "uy", "", None, &[("10-0-0-18", "10.0.0.18/24")]);
        p.created = Some(ts("2030-01-01T00:00:55Z"));
        let plan = run(&[], &[p], &Known::default(), T1, &policy());
        assert!(plan.conflicts.is_empty());
        assert_eq!(plan.wake_in, Some(Duration::from_secs(5)));
    }

    #[test]
    fn in_flight_claims_wait_for_the_watch() {
        let c = claim(
            "10-0-0-19",
            "10.0.0.19/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": {"name": "a"}}}),
        );
        let p = pod("a", "u1", "", None, &[("10-0-0-19", "10.0.0.19/24")]);
        let in_flight: HashSet<String> = ["10-0-0-19".to_string()].into();
        let plan = plan(
            &World {
                claims: &[Arc::new(c)],
                unreadable: &HashSet::new(),
                exists: &|_| false,
                pods: &[p],
                workloads: &Known::default(),
                in_flight: &in_flight,
                now: ts(T1),
            },
            &policy(),
        );
        assert_eq!(plan, Plan::default());
    }

    /// A reconcile of what changed holds some claims only: a pod naming one outside them is
    /// not missing it; a claim that exists nowhere is.
    #[test]
    fn a_claim_outside_the_scope_is_not_missing() {
        let p = pod(
            "a",
            "u1",
            "",
            None,
            &[("10-0-0-20", "10.0.0.20/24"), ("10-0-0-21", "10.0.0.21/24")],
        );
        let decide = |exists: &dyn Fn(&str) -> bool| {
            plan(
                &World {
                    claims: &[],
                    unreadable: &HashSet::new(),
                    exists,
                    pods: std::slice::from_ref(&p),
                    workloads: &Known::default(),
                    in_flight: &HashSet::new(),
                    now: ts(T1),
                },
                &policy(),
            )
        };
        let missing: Vec<String> = decide(&|n| n == "10-0-0-20")
            .conflicts
            .into_iter()
            .map(|c| c.claim)
            .collect();
        assert_eq!(missing, ["10-0-0-21"]);
        assert_eq!(decide(&|_| true).conflicts, []);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bad: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim", "metadata": {"name": "x"},
            "spec": {"pool": "p", "address": "not-an-ip", "owner": {"kind": "Pod", "namespace": "n", "name": "a"}}}))
        .unwrap();
        assert!(ClaimInfo::read(&bad).unwrap_err().contains("not-an-ip"));
        let bad_label: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": "x", "labels": {RETAIN_LABEL: "forever"}},
            "spec": {"pool": "p", "address": "10.0.0.1/24", "owner": {"kind": "Pod", "namespace": "n", "name": "a"}}}))
        .unwrap();
        assert!(ClaimInfo::read(&bad_label).is_err());
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "annotations": {ALLOCATION: "{garbage"}}}))
        .unwrap();
        assert!(PodInfo::read(&p, &TestControllers).is_err());
        let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(PodInfo::read(&plain, &TestControllers), Ok(None));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Random claims (bound or not, to live or gone pods) and pods naming them.
        fn world() -> impl Strategy<Value = (Vec<ClaimInfo>, Vec<PodInfo>, u64)> {
            let claim_s = (0u8..8, prop::option::of(0u8..6), prop::bool::ANY, 0u8..3);
            let pod_s = (
                0u8..6,
                prop::collection::vec(0u8..8, 0..3),
                prop::bool::ANY,
                0u8..3,
            );
            (
                prop::collection::vec(claim_s, 0..8),
                prop::collection::vec(pod_s, 0..6),
                0u64..400,
            )
                .prop_map(|(cs, ps, secs)| {
                    let mut seen = HashSet::new();
                    let claims = cs
                        .into_iter()
                        .filter(|(n, ..)| seen.insert(*n))
                        .map(|(n, bound, scheduled, retain)| {
                            let retain = ["none", "ordinal", "app"][retain as usize];
                            let extra = match bound {
                                Some(p) if scheduled => json!({"spec": {"pod": {"name": format!("p{p}"), "uid": format!("u{p}")},
                                    "node": "n"}}),
                                // Handed over by the webhook: a name, no uid yet.
                                Some(p) => json!({"spec": {"pod": {"name": format!("p{p}")}}}),
                                None => json!({}),
                            };
                            claim(&format!("10-0-0-{n}"), &format!("10.0.0.{n}/24"), pod_owner("p0"), retain, extra)
                        })
                        .collect();
                    let mut seen = HashSet::new();
                    let pods = ps
                        .into_iter()
                        .filter(|(n, ..)| seen.insert(*n))
                        .map(|(n, names, scheduled, addr_skew)| {
                            let ips: Vec<(String, String)> = names
                                .iter()
                                .map(|c| (format!("10-0-0-{c}"), format!("10.0.0.{}/24", c + addr_skew / 2)))
                                .collect();
                            let ips: Vec<(&str, &str)> = ips.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                            pod(&format!("p{n}"), &format!("u{n}"), "", scheduled.then_some("n"), &ips)
                        })
                        .collect();
                    (claims, pods, secs)
                })
        }

        proptest! {
            #[test]
            fn invariants((claims, pods, secs) in world()) {
                let now = after(ts(T0), Duration::from_secs(secs)).unwrap();
                let claims: Vec<Arc<ClaimInfo>> = claims.into_iter().map(Arc::new).collect();
                let plan = plan(
                    &World {
                        claims: &claims,
                        unreadable: &HashSet::new(),
                        exists: &|_| false,
                        pods: &pods,
                        workloads: &Known::default(),
                        in_flight: &HashSet::new(),
                        now,
                    },
                    &policy(),
                );
                for a in &plan.actions {
                    let c = claims.iter().find(|c| c.name == a.claim()).unwrap();
                    match a {
                        Action::Bind(b) => {
                            // Binds only to a live pod that names exactly this claim's address,
                            // and only to the holder the claim records.
                            let p = pods.iter().find(|p| p.key == b.pod).unwrap();
                            prop_assert!(!p.terminal);
                            prop_assert!(p.ips.iter().any(|ip| ip.claim == c.name && ip.address == c.address));
                            match c.pod.as_ref() {
                                Some(r) => {
                                    prop_assert_eq!(&r.name, &p.key.name);
                                    prop_assert!(r.uid.is_empty() || r.uid == p.key.uid);
                                }
                                // A reservation of an older webhook that recorded no pod.
                                None => prop_assert_eq!(c.phase, ClaimPhase::Reserved),
                            }
                        }
                        Action::Release { .. } | Action::Delete { .. } => {
                            // Never takes an address from a live pod that names it, holder or not.
                            let named = pods.iter().any(|p| !p.terminal
                                && p.ips.iter().any(|ip| ip.claim == c.name && ip.address == c.address && ip.pool == c.pool));
                            prop_assert!(!named, "{a:?}");
                            // A reservation no pod took is reclaimed only after the grace period.
                            if a.why() == Some(&Why::NeverAppeared) && c.phase == ClaimPhase::Reserved {
                                prop_assert!(now >= after(c.since.unwrap(), GRACE).unwrap());
                            }
                        }
                    }
                    // Deletes never hit retained members unless their workload is gone
                    // (a retained claim that was never bound is no member yet).
                    if let Action::Delete { why, .. } = a {
                        prop_assert!(c.retain == Retain::None
                            || matches!(why, Why::WorkloadGone(_))
                            || (*why == Why::NeverAppeared && c.workload.is_none()));
                    }
                }
                // At most one action per claim.
                let names: HashSet<&str> = plan.actions.iter().map(Action::claim).collect();
                prop_assert_eq!(names.len(), plan.actions.len());
            }
        }
    }
}
