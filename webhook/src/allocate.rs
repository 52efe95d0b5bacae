//! Turning chosen pools into addresses. Allocating is creating the IPClaim named after the
//! address: the API server refuses a second claim of that name (409), which is the only lock,
//! so any number of webhook replicas can allocate at once. Candidates come from the watch
//! index, so the common case is a single write.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pinip_api::annotations::Retain;
use pinip_api::claim::RETAIN_LABEL;
use pinip_api::owner::{holder, same_owner};
use pinip_api::{ClaimPhase, IPClaim, Owner, claim_name};
use serde_json::json;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::policy::Chosen;
use crate::reason::Denial;

/// After this many 409s in one decision, give up and let the API server retry the pod.
const MAX_CONFLICTS: u32 = 64;

pub struct Allocator {
    pub api: Api<IPClaim>,
    pub index: Index,
    pub cooldown: Duration,
    pub interface: String,
    pub metrics: Arc<Metrics>,
}

/// One decided address.
#[derive(Clone, Debug)]
pub struct Decided {
    pub chosen: Chosen,
    pub ip: IpAddr,
    pub claim: String,
    /// Created by this decision (and so to be deleted if a later family fails).
    pub created: bool,
}

impl Allocator {
    pub async fn allocate(
        &self,
        chosen: &[Chosen],
        owner: &Owner,
        retain: Retain,
        pod_name: &str,
        dry_run: bool,
    ) -> Result<Vec<Decided>, Denial> {
        let mut done: Vec<Decided> = Vec::new();
        for c in chosen {
            match self.one(c, owner, retain, pod_name, dry_run).await {
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
        for d in done.iter().filter(|d| d.created) {
            self.index.forget_created(&d.claim);
            if let Err(e) = self.api.delete(&d.claim, &DeleteParams::default()).await {
                tracing::warn!(claim = %d.claim, error = %e, "rolling back claim failed; the binder will reclaim it");
            }
        }
    }

    async fn one(
        &self,
        c: &Chosen,
        owner: &Owner,
        retain: Retain,
        pod_name: &str,
        dry_run: bool,
    ) -> Result<Decided, Denial> {
        let pool = c.name();
        let network = c.pool.spec.network.clone();
        let decided = |ip: IpAddr, claim: String, created: bool| Decided {
            chosen: c.clone(),
            ip,
            claim,
            created,
        };
        if let Some(ip) = c.explicit {
            let name = claim_name(&network, &ip);
            if let Some(existing) = self.index.claim(&name) {
                return if same_owner(&existing.spec.owner, owner) {
                    Ok(decided(ip, name, false))
                } else {
                    Err(Denial::AddressHeld {
                        ip,
                        holder: holder(&existing.spec.owner),
                    })
                };
            }
            if dry_run {
                return Ok(decided(ip, name, false));
            }
            return match self.create(c, &name, ip, owner, retain, pod_name).await {
                Ok(()) => Ok(decided(ip, name, true)),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Taken by a replica whose claim our watch has not seen yet.
                    match self.api.get_opt(&name).await {
                        Ok(Some(existing)) if same_owner(&existing.spec.owner, owner) => {
                            Ok(decided(ip, name, false))
                        }
                        Ok(Some(existing)) => Err(Denial::AddressHeld {
                            ip,
                            holder: holder(&existing.spec.owner),
                        }),
                        Ok(None) => {
                            Err(Denial::Api(format!("claim {name} conflicted and vanished")))
                        }
                        Err(e) => Err(Denial::Api(e.to_string())),
                    }
                }
                Err(e) => Err(Denial::Api(e.to_string())),
            };
        }

        if matches!(retain, Retain::Ordinal | Retain::App) {
            let mut members: Vec<Arc<IPClaim>> = self
                .index
                .claims
                .state()
                .into_iter()
                .filter(|k| k.spec.pool == pool && same_owner(&k.spec.owner, owner))
                .collect();
            members.sort_by_key(|k| k.name_any());
            for m in members {
                let Some(ip) = m
                    .spec
                    .address
                    .split('/')
                    .next()
                    .and_then(|a| a.parse().ok())
                else {
                    continue;
                };
                if retain == Retain::Ordinal {
                    // A StatefulSet ordinal has one pod at a time: its claim is simply reused.
                    return Ok(decided(ip, m.name_any(), false));
                }
                if m.phase() != ClaimPhase::Released {
                    continue;
                }
                if dry_run || self.take(&m).await {
                    return Ok(decided(ip, m.name_any(), false));
                }
            }
        }

        // A fresh address, from a random place in the pool so concurrent replicas spread out.
        let offset = u128::from(RandomState::new().hash_one(pod_name))
            | (u128::from(RandomState::new().hash_one(&pool)) << 64);
        let mut conflicts = 0u32;
        for ip in c.usable.usable.iter_from(offset) {
            let name = claim_name(&network, &ip);
            if self.index.is_taken(&name) || self.index.cooling_down(&name, self.cooldown) {
                continue;
            }
            if dry_run {
                return Ok(decided(ip, name, false));
            }
            match self.create(c, &name, ip, owner, retain, pod_name).await {
                Ok(()) => return Ok(decided(ip, name, true)),
                Err(kube::Error::Api(s)) if s.code == 409 => {
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
        Err(Denial::Exhausted {
            pool,
            size: c.usable.size(),
        })
    }

    async fn create(
        &self,
        c: &Chosen,
        name: &str,
        ip: IpAddr,
        owner: &Owner,
        retain: Retain,
        pod_name: &str,
    ) -> Result<(), kube::Error> {
        let mut spec = json!({
            "pool": c.name(),
            "address": c.usable.with_prefix(ip).to_string(),
            "owner": owner,
            "interface": self.interface,
        });
        if !pod_name.is_empty() {
            spec["pod"] = json!({"name": pod_name});
        }
        let claim: IPClaim = serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": name, "labels": {RETAIN_LABEL: retain.to_string()}},
            "spec": spec,
        }))
        .expect("claim from known fields");
        self.api.create(&PostParams::default(), &claim).await?;
        self.index.mark_created(name);
        Ok(())
    }

    /// Takes a Released member of a retained set for a new pod: Released → Reserved, guarded
    /// by the claim's resourceVersion so two pods never take the same member.
    async fn take(&self, m: &IPClaim) -> bool {
        let patch = json!({
            "metadata": {"resourceVersion": m.resource_version()},
            "status": {"phase": "Reserved", "reservedAt": now()},
        });
        match self
            .api
            .patch_status(&m.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.metrics.claim_conflicts.inc();
                false
            }
            Err(e) => {
                tracing::warn!(claim = %m.name_any(), error = %e, "taking retained claim failed");
                false
            }
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
