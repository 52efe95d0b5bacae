//! In-memory views of the cluster, kept current by watches, that every decision reads: the
//! ledger of pools and claims and the workloads (StatefulSets, ReplicaSets, Deployments), both
//! shared with the webhook (`pinip-index`), and pods stripped to what the binder needs. The
//! watches run on every replica, leader or not, so a standby that takes over decides from
//! warm caches at once. Every event pokes [`Index::changed`] and files what it touched in
//! [`Index::changes`].

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use pinip_api::Owner;
use pinip_index::Ledger;
use pinip_index::ledger::{ClaimEvent, Hooks};
use pinip_index::watch::drain;
use tokio::sync::{Notify, watch};

use crate::bind::Workloads;
use crate::scope::{Changes, PodsByClaim};
use crate::workload::{Lookups, Presence, WorkloadRef};

#[derive(Clone)]
pub struct Index {
    /// Pools and claims (shared with the webhook, `pinip-index`).
    pub ledger: Ledger,
    pub pods: Store<Pod>,
    /// Which pods name each claim.
    pub pods_by_claim: PodsByClaim,
    pub workloads: pinip_index::Workloads,
    /// Notified on every watch event.
    pub changed: Arc<Notify>,
    /// What the events touched, for the next reconcile.
    pub changes: Changes,
    /// True once every watch has listed.
    ready: watch::Receiver<bool>,
}

impl Index {
    /// Starts the watches; they run until the process exits, retrying with backoff.
    pub fn start(client: &Client) -> Index {
        let (pods, pods_w) = reflector::store();
        let changed = Arc::new(Notify::new());
        let changes = Changes::default();
        let pods_by_claim = PodsByClaim::default();
        let cfg = watcher::Config::default();
        let c = client.clone();
        let pod_events = {
            let (by_claim, changes, store) = (pods_by_claim.clone(), changes.clone(), pods.clone());
            reflector::reflector(
                pods_w,
                watcher(Api::<Pod>::all(c.clone()), cfg.clone())
                    .modify(strip_pod)
                    .default_backoff(),
            )
            .inspect(move |ev| {
                if let Ok(ev) = ev {
                    by_claim.event(ev, &changes, || store.state());
                }
            })
        };
        tokio::spawn(drain("pods", Some(changed.clone()), pod_events));
        // A workload change may decide any of its claims: a full pass.
        let workloads_changed = Arc::new(Notify::new());
        tokio::spawn({
            let (wc, changes, changed) =
                (workloads_changed.clone(), changes.clone(), changed.clone());
            async move {
                loop {
                    wc.notified().await;
                    changes.everything();
                    changed.notify_one();
                }
            }
        });
        let on_claim = {
            let changes = changes.clone();
            move |ev: ClaimEvent<'_>| match ev {
                ClaimEvent::Applied(name) | ClaimEvent::Deleted(name) => changes.claim(name),
                ClaimEvent::Relisted => changes.everything(),
            }
        };
        let (ready_tx, ready) = watch::channel(false);
        let index = Index {
            ledger: Ledger::start(
                client,
                Hooks {
                    changed: Some(changed.clone()),
                    on_claim: Some(Arc::new(on_claim)),
                },
            ),
            pods,
            pods_by_claim,
            workloads: pinip_index::Workloads::start(client, Some(workloads_changed)),
            changed,
            changes,
            ready,
        };
        // `Store::wait_until_ready` wakes only one of several concurrent waiters (it is backed
        // by a oneshot channel), so exactly one task awaits the stores and publishes the result.
        let stores = index.clone();
        tokio::spawn(async move {
            stores.ledger.wait_ready().await;
            let _ = stores.pods.wait_until_ready().await;
            stores.workloads.wait_ready().await;
            let _ = ready_tx.send(true);
        });
        index
    }

    /// Waits until every watch has listed once (any number of tasks may wait).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Workload presence from the watches, falling back to `lookups` for other kinds.
    pub fn workloads<'a>(&'a self, lookups: &'a Lookups) -> IndexWorkloads<'a> {
        IndexWorkloads {
            index: self,
            lookups,
        }
    }
}

/// [`Workloads`] answered by the index (apps/v1 kinds) and the lookup cache (the rest).
pub struct IndexWorkloads<'a> {
    index: &'a Index,
    lookups: &'a Lookups,
}

fn uid_matches<K: Resource>(o: Option<Arc<K>>, uid: &str) -> Option<Arc<K>> {
    o.filter(|o| o.meta().uid.as_deref() == Some(uid))
}

impl Workloads for IndexWorkloads<'_> {
    fn presence(&self, r: &WorkloadRef) -> Presence {
        let (name, ns) = (r.name.as_str(), r.namespace.as_str());
        let found = |exists: bool, replicas: Option<i32>| {
            if exists {
                Presence::Exists { replicas }
            } else {
                Presence::Gone
            }
        };
        if r.is_apps_v1("StatefulSet") {
            let s = uid_matches(self.index.workloads.statefulset(ns, name), &r.uid);
            let replicas = s.as_ref().map(|s| s.spec.replicas.unwrap_or(1));
            found(s.is_some(), replicas)
        } else if r.is_apps_v1("Deployment") {
            found(
                uid_matches(self.index.workloads.deployment(ns, name), &r.uid).is_some(),
                None,
            )
        } else if r.is_apps_v1("ReplicaSet") {
            found(
                uid_matches(self.index.workloads.replicaset(ns, name), &r.uid).is_some(),
                None,
            )
        } else {
            self.lookups.get(r)
        }
    }

    fn presence_by_owner(&self, o: &Owner) -> Presence {
        let (name, ns) = (o.name.as_str(), o.namespace.as_str());
        // Only the apps/v1 kinds are known by name; anything else is kept.
        match o.kind.as_str() {
            "StatefulSet" => match self.index.workloads.statefulset(ns, name) {
                Some(s) => Presence::Exists {
                    replicas: Some(s.spec.replicas.unwrap_or(1)),
                },
                None => Presence::Gone,
            },
            "Deployment" => match self.index.workloads.deployment(ns, name) {
                Some(_) => Presence::Exists { replicas: None },
                None => Presence::Gone,
            },
            _ => Presence::Exists { replicas: None },
        }
    }

    fn set_bound(&self, r: &WorkloadRef) -> Option<u32> {
        let obj = self.index.workloads.object(r)?;
        match pinip_api::set::bound(&obj) {
            Ok(b) => b.map(|b| b.size),
            Err(e) => {
                tracing::warn!(workload = %r, error = %e, "address set bound unreadable; the set is not shrunk");
                None
            }
        }
    }
}

/// Keeps only what the binder reads of a pod, to keep the cache small.
fn strip_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("pinip.io/"));
    }
    p.spec = p.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        ..Default::default()
    });
    p.status = p.status.take().map(|s| PodStatus {
        phase: s.phase,
        ..Default::default()
    });
}
