//! Turning chosen pools into addresses. Allocating is creating the IPClaim named after the
//! address: the API server refuses a second claim of that name (409), which is the only lock,
//! so any number of webhook replicas can allocate at once. Candidates come from the watch
//! index, so the common case is a single write.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use pinip_api::annotations::Retain;
use pinip_api::claim::RETAIN_LABEL;
use pinip_api::holder::{ClaimHolder, Record};
use pinip_api::owner::holder;
use pinip_api::set::SetBound;
use pinip_api::workload::WorkloadRef;
use pinip_api::{ClaimInfo, IPClaim, Owner, claim_name};
use pinip_index::confirm_free;
use serde_json::json;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::policy::Chosen;
use crate::reason::Denial;

/// After this many 409s in one decision, give up and let the API server retry the pod.
const MAX_CONFLICTS: u32 = 64;

/// Free addresses taken from the ledger at a time (more only after 409s).
const CANDIDATES: usize = 8;

/// Most free addresses one search looks at before the pool counts as exhausted (all of them
/// created here moments ago or cooling down).
const SEARCH_BUDGET: usize = 1 << 20;

pub struct Allocator {
    pub api: Api<IPClaim>,
    pub client: kube::Client,
    pub index: Index,
    pub cooldown: Duration,
    /// How long a claim reserved for a pod that does not exist yet stays reserved for it:
    /// the longest a pod's admission can take.
    pub hold: Duration,
    pub interface: String,
    pub metrics: Arc<Metrics>,
}

/// One decided address.
#[derive(Clone, Debug)]
pub struct Decided {
    pub chosen: Chosen,
    pub ip: IpAddr,
    pub claim: String,
    /// Created by this decision (and so to be deleted if a later family fails): the claim's
    /// uid and resourceVersion as created, so that the rollback never deletes a claim that
    /// another admission has handed over since.
    pub created: Option<(String, String)>,
}

/// The pod an address is decided for, as the claim records its holder.
#[derive(Clone, Debug)]
pub struct Holder {
    /// Empty while the API server has not named the pod (`generateName`).
    pub name: String,
    pub generate_name: String,
}

impl Holder {
    /// `spec.pod` of a new claim.
    fn pod_ref(&self) -> serde_json::Value {
        self.pod_ref_at(&reserved_at(Timestamp::now(), None))
    }

    fn pod_ref_at(&self, reserved_at: &str) -> serde_json::Value {
        if self.name.is_empty() {
            json!({"generateName": self.generate_name, "reservedAt": reserved_at})
        } else {
            json!({"name": self.name, "reservedAt": reserved_at})
        }
    }

    /// The merge patch that replaces `spec.pod` of an existing claim (the previous holder's
    /// fields are removed, not merged). Its `reservedAt` is later than the one `claim` records,
    /// so a handover always changes the claim, even to a pod of the same name re-created
    /// within the same instant: a write the binder's version-guarded writes see (409), never
    /// a no-op that keeps the resourceVersion.
    fn pod_patch(&self, claim: &ClaimInfo, now: Timestamp) -> serde_json::Value {
        let recorded = claim.pod.as_ref().and_then(|p| p.reserved_at.as_ref());
        let at = reserved_at(now, recorded.map(|t| t.0));
        let mut p = json!({"name": null, "uid": null, "generateName": null});
        if let (Some(p), serde_json::Value::Object(new)) = (p.as_object_mut(), self.pod_ref_at(&at))
        {
            p.extend(new);
        }
        p
    }
}

/// At a full `app` set, how many held members a pod's admission asks the API server about
/// (whether their holder is gone) before it waits.
const HELD_MEMBERS_ASKED: usize = 4;

/// Attempts at handing over an existing claim whose version moved under us.
const HANDOVER_ATTEMPTS: u32 = 3;

impl Allocator {
    /// `workload`: the verified workload behind `owner` (bounds an `app` set).
    pub async fn allocate(
        &self,
        chosen: &[Chosen],
        owner: &Owner,
        workload: Option<&WorkloadRef>,
        retain: Retain,
        pod: &Holder,
        dry_run: bool,
    ) -> Result<Vec<Decided>, Denial> {
        let mut done: Vec<Decided> = Vec::new();
        for c in chosen {
            match self.one(c, owner, workload, retain, pod, dry_run).await {
                Ok(d) => done.push(d),
                Err(e) => {
                    self.rollback(&done).await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    async fn rollback(&self, done: &[Decided]) {
        for d in done {
            let Some((uid, rv)) = &d.created else {
                continue;
            };
            self.index.forget_created(&d.claim);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: Some(rv.clone()),
                }),
                ..Default::default()
            };
            match self.api.delete(&d.claim, &dp).await {
                Ok(_) => {}
                // Handed to another pod meanwhile: it is no longer ours to delete.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(claim = %d.claim, error = %e, "rolling back claim failed; the binder will reclaim it");
                }
            }
        }
    }

    async fn one(
        &self,
        c: &Chosen,
        owner: &Owner,
        workload: Option<&WorkloadRef>,
        retain: Retain,
        pod: &Holder,
        dry_run: bool,
    ) -> Result<Decided, Denial> {
        let pool = c.name();
        let network = c.pool.network().to_string();
        let decided = |ip: IpAddr, claim: String, created: Option<(String, String)>| Decided {
            chosen: c.clone(),
            ip,
            claim,
            created,
        };
        // The members of the owner's retained set in this pool (in the watch index).
        let members: Vec<Arc<ClaimInfo>> = if matches!(retain, Retain::Ordinal | Retain::App) {
            self.index.ledger.members(owner, &pool)
        } else {
            Vec::new()
        };
        // Members that cannot be read still belong to the set (their addresses stay taken).
        let unreadable = if members.is_empty() && retain == Retain::Ordinal || retain == Retain::App
        {
            self.index.ledger.unreadable_members(owner, &pool)
        } else {
            Vec::new()
        };
        // A StatefulSet ordinal whose one claim is unreadable waits: a fresh address would
        // strand the one it keeps.
        if retain == Retain::Ordinal
            && let Some(u) = unreadable.first()
        {
            return Err(Denial::UnreadableClaim {
                claim: u.name.clone(),
                owner: holder(owner),
                pool: pool.clone(),
                why: u.why.clone(),
            });
        }
        let count = members.len() + unreadable.len();
        let unreadable_names: Vec<String> = unreadable.iter().map(|u| u.name.clone()).collect();
        // An `app` set grows by a new claim only below its bound (`None`: unbounded).
        let room = |bound: &Option<SetBound>| -> Result<(), Denial> {
            match bound {
                Some(b) if count >= b.size as usize => Err(Denial::SetFull {
                    set: holder(owner),
                    pool: pool.clone(),
                    members: count,
                    bound: b.clone(),
                }),
                _ => Ok(()),
            }
        };

        if let Some(ip) = c.explicit {
            let name = claim_name(&network, &ip);
            if let Some(existing) = self.index.claim(&name) {
                self.hand_over(&existing, owner, pod, dry_run).await?;
                return Ok(decided(ip, name, None));
            }
            let set_bound = match (retain, workload) {
                (Retain::App, Some(w)) => {
                    set_bound_of(&self.client, &self.index.workloads, w).await?
                }
                _ => None,
            };
            room(&set_bound)?;
            if dry_run {
                return Ok(decided(ip, name, None));
            }
            return match self.create(c, &name, ip, owner, retain, pod).await {
                Ok(created) => {
                    let d = decided(ip, name, Some(created));
                    if let Some(b) = &set_bound {
                        self.check_set_size(&d, owner, b, &members, &unreadable_names)
                            .await?;
                    }
                    Ok(d)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Taken by a replica whose claim our watch has not seen yet.
                    match self.api.get_opt(&name).await {
                        Ok(Some(existing)) => {
                            let existing = ClaimInfo::read(&existing).map_err(|why| {
                                Denial::Api(format!("claim {name} is unreadable: {why}"))
                            })?;
                            self.hand_over(&existing, owner, pod, dry_run).await?;
                            Ok(decided(ip, name, None))
                        }
                        Ok(None) => {
                            Err(Denial::Api(format!("claim {name} conflicted and vanished")))
                        }
                        Err(e) => Err(Denial::Api(e.to_string())),
                    }
                }
                Err(e) => Err(Denial::Api(e.to_string())),
            };
        }

        let mut set_bound: Option<SetBound> = None;
        if retain == Retain::Ordinal {
            // A StatefulSet ordinal has one address; its pod waits until it is free.
            if let Some(m) = members.first() {
                self.hand_over(m, owner, pod, dry_run).await?;
                return Ok(decided(m.ip(), m.name.clone(), None));
            }
        } else if retain == Retain::App {
            // `app`: first a member nobody holds (members held by the set's other pods are
            // passed over without asking the API server)...
            for m in members.iter().filter(|m| m.record() == Record::Free) {
                match self.hand_over(m, owner, pod, dry_run).await {
                    Ok(()) => return Ok(decided(m.ip(), m.name.clone(), None)),
                    Err(e) => {
                        tracing::debug!(claim = %m.name, reason = %e, "member not free");
                    }
                }
            }
            // ...then a fresh address while the set is below its bound...
            set_bound = match workload {
                Some(w) => set_bound_of(&self.client, &self.index.workloads, w).await?,
                None => None,
            };
            if let Err(full) = room(&set_bound) {
                // ...else a member whose recorded holder is gone (the binder has not released
                // it yet), confirmed with the API server: the longest-held few, so that a
                // denial costs a bounded number of reads.
                let mut held: Vec<&Arc<ClaimInfo>> = members
                    .iter()
                    .filter(|m| m.record() != Record::Free)
                    .collect();
                held.sort_by_key(|m| m.reserved_since());
                for m in held.into_iter().take(HELD_MEMBERS_ASKED) {
                    if self.hand_over(m, owner, pod, dry_run).await.is_ok() {
                        return Ok(decided(m.ip(), m.name.clone(), None));
                    }
                }
                return Err(full);
            }
        }

        // A fresh address, from a random place in the pool so concurrent replicas spread out:
        // the ledger's free addresses from there on, passing over claims this replica created
        // moments ago and addresses cooling down.
        let offset = u128::from(RandomState::new().hash_one(&pod.name))
            | (u128::from(RandomState::new().hash_one(&pool)) << 64);
        let size = c.usable.size();
        let exhausted = || Denial::Exhausted {
            pool: pool.clone(),
            size,
        };
        let from = c
            .usable
            .usable
            .nth(offset % size.max(1))
            .ok_or_else(exhausted)?;
        let mut conflicts = 0u32;
        loop {
            let unavailable = |ip: &IpAddr| {
                let name = claim_name(&network, ip);
                self.index.created_here(&name) || self.index.cooling_down(&name, self.cooldown)
            };
            let batch = self.index.ledger.free_candidates(
                &pool,
                &from,
                CANDIDATES,
                SEARCH_BUDGET,
                unavailable,
            );
            if batch.is_empty() {
                return Err(exhausted());
            }
            for ip in batch {
                let name = claim_name(&network, &ip);
                if dry_run {
                    return Ok(decided(ip, name, None));
                }
                match self.create(c, &name, ip, owner, retain, pod).await {
                    Ok(created) => {
                        let d = decided(ip, name, Some(created));
                        if let Some(b) = &set_bound {
                            self.check_set_size(&d, owner, b, &members, &unreadable_names)
                                .await?;
                        }
                        return Ok(d);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // Taken by a replica whose claim our watch has not shown yet: passed
                        // over from now on.
                        self.metrics.claim_conflicts.inc();
                        self.index.mark_created(&name);
                        conflicts += 1;
                        if conflicts >= MAX_CONFLICTS {
                            return Err(Denial::Api(format!(
                                "{conflicts} addresses of pool {pool} were taken concurrently"
                            )));
                        }
                    }
                    Err(e) => return Err(Denial::Api(e.to_string())),
                }
            }
        }
    }

    async fn create(
        &self,
        c: &Chosen,
        name: &str,
        ip: IpAddr,
        owner: &Owner,
        retain: Retain,
        pod: &Holder,
    ) -> Result<(String, String), kube::Error> {
        let spec = json!({
            "pool": c.name(),
            "address": c.usable.with_prefix(ip).to_string(),
            "owner": owner,
            "pod": pod.pod_ref(),
            "interface": self.interface,
        });
        let mut labels = match retain {
            // The members of a workload's set are listed by its labels.
            Retain::Ordinal | Retain::App => pinip_api::set::labels(owner),
            Retain::None => Default::default(),
        };
        labels.insert(RETAIN_LABEL.to_string(), retain.to_string());
        let claim: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
        .expect("claim from known fields");
        let started = std::time::Instant::now();
        let created = self.api.create(&PostParams::default(), &claim).await;
        self.metrics
            .claim_create_seconds
            .observe(started.elapsed().as_secs_f64());
        let created = created?;
        self.index.mark_created(name);
        let rv = created.resource_version().unwrap_or_default();
        Ok((created.metadata.uid.unwrap_or_default(), rv))
    }

    /// After growing `owner`'s set by `d`: the set as the API server has it now (a consistent
    /// LIST) must not exceed `bound`. Concurrent admissions of one set may each have seen
    /// room for one more; each that finds the set over its bound after its own create takes
    /// its claim back and waits, so at least one of them sees the other and the set never
    /// keeps more than the bound (both may back off; the controller retries).
    async fn check_set_size(
        &self,
        d: &Decided,
        owner: &Owner,
        bound: &SetBound,
        members: &[Arc<ClaimInfo>],
        unreadable: &[String],
    ) -> Result<(), Denial> {
        let pool = d.chosen.name();
        // Members created before claims carried the set's labels are found only by their
        // retain label (a wider list, until a handover has labelled them); members the index
        // cannot read may carry neither (their retain label may be what is unreadable), so
        // they are read by name.
        let labelled = members.iter().all(|m| m.labelled);
        let selector = if labelled {
            pinip_api::set::selector(owner)
        } else {
            format!("{RETAIN_LABEL}={}", Retain::App)
        };
        let member = |k: &IPClaim| {
            k.spec.pool == pool && k.spec.owner == *owner && k.metadata.deletion_timestamp.is_none()
        };
        let mut names: HashSet<String> = match self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(l) => l
                .items
                .iter()
                .filter(|k| member(k))
                .map(|k| k.name_any())
                .collect(),
            Err(e) => {
                self.rollback(std::slice::from_ref(d)).await;
                return Err(Denial::Api(format!("counting the address set: {e}")));
            }
        };
        let unlisted: Vec<&String> = unreadable.iter().filter(|n| !names.contains(*n)).collect();
        for name in unlisted {
            match self.api.get_opt(name).await {
                Ok(Some(k)) if member(&k) => {
                    names.insert(name.clone());
                }
                Ok(_) => {}
                Err(e) => {
                    self.rollback(std::slice::from_ref(d)).await;
                    return Err(Denial::Api(format!("counting the address set: {e}")));
                }
            }
        }
        let members = names.len();
        if members <= bound.size as usize {
            return Ok(());
        }
        self.rollback(std::slice::from_ref(d)).await;
        Err(Denial::SetFull {
            set: holder(owner),
            pool,
            members: members - 1,
            bound: bound.clone(),
        })
    }

    /// Hands an existing claim to `pod`: only a claim of the same owner, and only when it is
    /// free (Released, or its recorded holder verifiably gone, asked of the API server). The
    /// handover is a write of the new holder guarded by the claim's resourceVersion, so two
    /// pods never take the same claim; a version that moved is read again and decided again.
    async fn hand_over(
        &self,
        claim: &ClaimInfo,
        owner: &Owner,
        pod: &Holder,
        dry_run: bool,
    ) -> Result<(), Denial> {
        let mut claim = claim.clone();
        for _ in 0..HANDOVER_ATTEMPTS {
            let ip = claim.ip();
            if claim.owner != *owner {
                return Err(Denial::AddressHeld {
                    ip,
                    holder: holder(&claim.owner),
                });
            }
            let now = Timestamp::now();
            let for_pod = Some(pod.name.as_str()).filter(|n| !n.is_empty());
            match confirm_free(&self.client, &claim, now, self.hold, for_pod).await {
                Err(e) => return Err(Denial::Api(e.to_string())),
                Ok(Err(held)) => {
                    return Err(Denial::ClaimHeld {
                        ip,
                        claim: claim.name.clone(),
                        held: held.to_string(),
                    });
                }
                Ok(Ok(())) => {}
            }
            if dry_run {
                return Ok(());
            }
            // Retained claims created before sets were labelled get their labels here.
            let labels = match claim.retain {
                Retain::App | Retain::Ordinal => pinip_api::set::labels(owner),
                Retain::None => Default::default(),
            };
            let patch = json!({
                "metadata": {"resourceVersion": claim.resource_version, "labels": labels},
                "spec": {"pod": pod.pod_patch(&claim, now), "node": null},
            });
            match self
                .api
                .patch(&claim.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {
                    self.metrics.handovers.inc();
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.claim_conflicts.inc();
                    claim = match self.api.get_opt(&claim.name).await {
                        Ok(Some(c)) => ClaimInfo::read(&c).map_err(|why| {
                            Denial::Api(format!("claim {} is unreadable: {why}", claim.name))
                        })?,
                        Ok(None) => {
                            return Err(Denial::Api(format!(
                                "claim {} was deleted while being handed over",
                                claim.name
                            )));
                        }
                        Err(e) => return Err(Denial::Api(e.to_string())),
                    };
                }
                Err(e) => return Err(Denial::Api(e.to_string())),
            }
        }
        Err(Denial::Api(format!(
            "claim {} changed {HANDOVER_ATTEMPTS} times while being handed over",
            claim.name
        )))
    }
}

/// The bound of `w`'s set (`None`: unbounded). A workload that cannot be read denies the pod
/// rather than growing the set past a bound nobody could check.
async fn set_bound_of(
    client: &kube::Client,
    workloads: &pinip_index::Workloads,
    w: &WorkloadRef,
) -> Result<Option<SetBound>, Denial> {
    pinip_index::set::set_bound(client, workloads, w)
        .await
        .map_err(|e| match e {
            pinip_index::set::SetError::Invalid { .. } => Denial::Retain(e.to_string()),
            _ => Denial::Api(e.to_string()),
        })
}

/// `reservedAt` of a handover made at `now`, in microseconds, and strictly later than
/// `recorded` (the reservation it replaces, even when that came from a replica whose clock is
/// ahead of ours), so the handover changes the claim. A created claim's is in seconds (the
/// typed `Time` serializes so); a create is always a write.
fn reserved_at(now: Timestamp, recorded: Option<Timestamp>) -> String {
    let micro = |t: Timestamp| t.as_microsecond();
    let at = match recorded {
        Some(r) if micro(r) >= micro(now) => micro(r).saturating_add(1),
        _ => micro(now),
    };
    let at = Timestamp::from_microsecond(at).unwrap_or(now);
    format!("{at:.6}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(pod: serde_json::Value) -> ClaimInfo {
        let c: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": "n-10-0-0-5", "resourceVersion": "7",
                "creationTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"pool": "p", "address": "10.0.0.5/24", "pod": pod,
                "owner": {"kind": "Pod", "namespace": "ns", "name": "a"}}}))
        .unwrap();
        ClaimInfo::read(&c).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_at_is_in_microseconds_and_moves_forward() {
        let now = at("2030-01-01T00:00:05.25Z");
        assert_eq!(reserved_at(now, None), "2030-01-01T00:00:05.250000Z");
        assert_eq!(
            reserved_at(now, Some(at("2030-01-01T00:00:01Z"))),
            "2030-01-01T00:00:05.250000Z"
        );
        // Recorded in the same microsecond, or later (a replica whose clock is behind).
        assert_eq!(reserved_at(now, Some(now)), "2030-01-01T00:00:05.250001Z");
        assert_eq!(
            reserved_at(now, Some(at("2030-01-01T00:00:09Z"))),
            "2030-01-01T00:00:09.000001Z"
        );
        // What the API server's `date-time` format and our reader accept.
        let back: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(json!(reserved_at(now, None))).unwrap();
        assert_eq!(back.0, now);
    }

    /// A pod re-created under the same name within the same instant as the reservation it
    /// replaces still changes the claim (a no-op patch would keep its resourceVersion).
    #[test]
    fn a_handover_to_the_same_name_always_changes_the_claim() {
        let now = at("2030-01-01T00:00:05.25Z");
        let held = claim(json!({"name": "w", "reservedAt": "2030-01-01T00:00:05.250000Z"}));
        let w = Holder {
            name: "w".into(),
            generate_name: String::new(),
        };
        let patch = w.pod_patch(&held, now);
        assert_eq!(
            patch,
            json!({"name": "w", "uid": null, "generateName": null,
                "reservedAt": "2030-01-01T00:00:05.250001Z"})
        );
        let bound = claim(json!({"name": "w", "uid": "u1",
            "reservedAt": "2030-01-01T00:00:01Z"}));
        assert_eq!(
            w.pod_patch(&bound, now)["reservedAt"],
            "2030-01-01T00:00:05.250000Z"
        );
        let prefix = Holder {
            name: String::new(),
            generate_name: "web-".into(),
        };
        let p = prefix.pod_patch(
            &claim(json!({"generateName": "web-",
            "reservedAt": "2030-01-01T00:00:05.250000Z"})),
            now,
        );
        assert_eq!(p["generateName"], "web-");
        assert_eq!(p["name"], serde_json::Value::Null);
        assert_eq!(p["reservedAt"], "2030-01-01T00:00:05.250001Z");
    }
}
