//! In-memory views of the cluster, kept current by watches, that every decision reads: pools,
//! claims, pods (stripped to what the binder needs), ReplicaSets' owners, StatefulSets and
//! Deployments. The watches run on every replica, leader or not, so a standby that takes over
//! decides from warm caches at once. Every event pokes [`Index::changed`].

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use pinip_api::{IPClaim, IPPool, Owner};
use tokio::sync::{Notify, watch};

use crate::bind::{ReplicaSetController, Workloads};
use crate::workload::{Lookups, Presence, WorkloadRef};

#[derive(Clone)]
pub struct Index {
    pub pools: Store<IPPool>,
    pub claims: Store<IPClaim>,
    pub pods: Store<Pod>,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    statefulsets: Store<StatefulSet>,
    deployments: Store<PartialObjectMeta<Deployment>>,
    /// Notified on every watch event.
    pub changed: Arc<Notify>,
    /// True once every watch has listed.
    ready: watch::Receiver<bool>,
}

impl Index {
    /// Starts the watches; they run until the process exits, retrying with backoff.
    pub fn start(client: &Client) -> Index {
        let (pools, pools_w) = reflector::store();
        let (claims, claims_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let (replicasets, rs_w) = reflector::store();
        let (statefulsets, sts_w) = reflector::store();
        let (deployments, deploy_w) = reflector::store();
        let changed = Arc::new(Notify::new());
        let cfg = watcher::Config::default();
        let c = client.clone();
        tokio::spawn(drain(
            "ippools",
            changed.clone(),
            reflector::reflector(
                pools_w,
                watcher(Api::<IPPool>::all(c.clone()), cfg.clone()).default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "ipclaims",
            changed.clone(),
            reflector::reflector(
                claims_w,
                watcher(Api::<IPClaim>::all(c.clone()), cfg.clone()).default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "pods",
            changed.clone(),
            reflector::reflector(
                pods_w,
                watcher(Api::<Pod>::all(c.clone()), cfg.clone())
                    .modify(strip_pod)
                    .default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "replicasets",
            changed.clone(),
            reflector::reflector(
                rs_w,
                watcher(
                    Api::<PartialObjectMeta<ReplicaSet>>::all(c.clone()),
                    cfg.clone(),
                )
                .default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "statefulsets",
            changed.clone(),
            reflector::reflector(
                sts_w,
                watcher(Api::<StatefulSet>::all(c.clone()), cfg.clone())
                    .modify(strip_statefulset)
                    .default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "deployments",
            changed.clone(),
            reflector::reflector(
                deploy_w,
                watcher(Api::<PartialObjectMeta<Deployment>>::all(c), cfg).default_backoff(),
            ),
        ));
        let (ready_tx, ready) = watch::channel(false);
        let index = Index {
            pools,
            claims,
            pods,
            replicasets,
            statefulsets,
            deployments,
            changed,
            ready,
        };
        // `Store::wait_until_ready` wakes only one of several concurrent waiters (it is backed
        // by a oneshot channel), so exactly one task awaits the stores and publishes the result.
        let stores = index.clone();
        tokio::spawn(async move {
            let _ = stores.pools.wait_until_ready().await;
            let _ = stores.claims.wait_until_ready().await;
            let _ = stores.pods.wait_until_ready().await;
            let _ = stores.replicasets.wait_until_ready().await;
            let _ = stores.statefulsets.wait_until_ready().await;
            let _ = stores.deployments.wait_until_ready().await;
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

    /// Who controls ReplicaSet `ns/name`.
    pub fn replicaset_controller(&self, ns: &str, name: &str) -> ReplicaSetController {
        let rs = self.replicasets.get(&ObjectRef::new(name).within(ns))?;
        Some(
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .cloned(),
        )
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
            let s = uid_matches(
                self.index
                    .statefulsets
                    .get(&ObjectRef::new(name).within(ns)),
                &r.uid,
            );
            let replicas = s.as_ref().map(|s| s.spec.replicas.unwrap_or(1));
            found(s.is_some(), replicas)
        } else if r.is_apps_v1("Deployment") {
            found(
                uid_matches(
                    self.index.deployments.get(&ObjectRef::new(name).within(ns)),
                    &r.uid,
                )
                .is_some(),
                None,
            )
        } else if r.is_apps_v1("ReplicaSet") {
            found(
                uid_matches(
                    self.index.replicasets.get(&ObjectRef::new(name).within(ns)),
                    &r.uid,
                )
                .is_some(),
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
            "StatefulSet" => match self
                .index
                .statefulsets
                .get(&ObjectRef::new(name).within(ns))
            {
                Some(s) => Presence::Exists {
                    replicas: Some(s.spec.replicas.unwrap_or(1)),
                },
                None => Presence::Gone,
            },
            "Deployment" => match self.index.deployments.get(&ObjectRef::new(name).within(ns)) {
                Some(_) => Presence::Exists { replicas: None },
                None => Presence::Gone,
            },
            _ => Presence::Exists { replicas: None },
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

fn strip_statefulset(s: &mut StatefulSet) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    s.spec = StatefulSetSpec {
        replicas: s.spec.replicas,
        ..Default::default()
    };
    s.status = None;
}

async fn drain<S, T>(what: &'static str, changed: Arc<Notify>, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(watch = what, error = %e, "watch error; retrying"),
        }
    }
}
