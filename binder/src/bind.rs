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
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pinip_api::annotations::Retain;
use pinip_api::owner;
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
    /// How old a pod the scheduler has not placed must be before its (non-retained) claim is
    /// bound to it without a node: a pod placed sooner is bound with its node in one write.
    pub unscheduled_bind_delay: Duration,
}

mod action;
mod pod;
#[cfg(test)]
mod tests;

pub use action::*;
use pod::bound_pod;
pub use pod::*;

/// Answers whether workloads exist.
pub trait Workloads {
    fn presence(&self, r: &WorkloadRef) -> Presence;
    /// For a retained claim that never recorded its workload: by the owner's kind and name.
    fn presence_by_owner(&self, o: &Owner) -> Presence;
    /// The bound of the workload's `app` address set ([`pinip_api::set::bound`]); `None`
    /// when it is unbounded or not known (then no member is deleted as surplus).
    fn set_bound(&self, r: &WorkloadRef) -> Option<u32>;
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
        self.younger_than(p, policy.conflict_settle, now)
    }

    /// Whether `p` was created less than `d` ago (then a wake-up is planned for when it was
    /// not). A pod without a creation time is never young.
    fn younger_than(&mut self, p: &PodInfo, d: Duration, now: Timestamp) -> bool {
        match p.created.and_then(|t| after(t, d)) {
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
            Some(p) if first_bind_can_wait(c, p, policy, world.now, &mut plan) => None,
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

/// Whether the first bind of a claim to its pod waits for the scheduler: the pod has no node
/// yet and is younger than `--unscheduled-bind-delay`, so that the bind, once the pod is
/// placed, writes pod and node at once (one write, not two). Until then the claim keeps the
/// holder the webhook recorded (the pod's name or generateName): the state it is in until the
/// binder sees the pod at all. The price: should the pod go meanwhile, nothing records that it
/// existed, so its claim is reclaimed after `--reclaim-grace` like any reservation no pod took
/// (a pod re-created under that name may be in admission with it; the webhook's handover
/// always moves `reservedAt` forward, so such a claim is never settled early). Retained
/// claims are bound at once: the bind is
/// what makes one a member of its workload's set. A pod created further in this binder's
/// future than the delay itself (clock skew) is not waited for.
fn first_bind_can_wait(
    c: &ClaimInfo,
    p: &PodInfo,
    policy: &Policy,
    now: Timestamp,
    plan: &mut Plan,
) -> bool {
    let bound_to_it = c.pod.as_ref().is_some_and(|r| r.uid == p.key.uid);
    let skewed = p
        .created
        .and_then(|t| after(t, policy.unscheduled_bind_delay))
        .zip(after(now, policy.unscheduled_bind_delay.saturating_mul(2)))
        .is_some_and(|(due, limit)| due > limit);
    p.node.is_none()
        && c.retain == Retain::None
        && !bound_to_it
        && !skewed
        && plan.younger_than(p, policy.unscheduled_bind_delay, now)
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
        first: c.pod.as_ref().is_none_or(|r| r.uid.is_empty()),
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
