//! Watch-fed caches of the workloads that keep addresses: StatefulSets (replicas only),
//! ReplicaSets and Deployments (metadata only). The webhook verifies owners against them; the
//! binder also asks whether a retaining workload still exists.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet, StatefulSetSpec};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use pinip_api::owner::{Controllers, Looked};
use tokio::sync::Notify;

use crate::watch::drain;

#[derive(Clone)]
pub struct Workloads {
    pub statefulsets: Store<StatefulSet>,
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub deployments: Store<PartialObjectMeta<Deployment>>,
}

impl Workloads {
    /// Starts the watches (they run until the process exits); `changed` is poked on every
    /// event.
    pub fn start(client: &Client, changed: Option<Arc<Notify>>) -> Workloads {
        let (statefulsets, sts_w) = reflector::store();
        let (replicasets, rs_w) = reflector::store();
        let (deployments, deploy_w) = reflector::store();
        let cfg = watcher::Config::default();
        tokio::spawn(drain(
            "statefulsets",
            changed.clone(),
            reflector::reflector(
                sts_w,
                watcher(Api::<StatefulSet>::all(client.clone()), cfg.clone())
                    .modify(strip_statefulset)
                    .default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "replicasets",
            changed.clone(),
            reflector::reflector(
                rs_w,
                watcher(
                    Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
                    cfg.clone(),
                )
                .modify(strip_meta)
                .default_backoff(),
            ),
        ));
        tokio::spawn(drain(
            "deployments",
            changed,
            reflector::reflector(
                deploy_w,
                watcher(
                    Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
                    cfg,
                )
                .modify(strip_meta)
                .default_backoff(),
            ),
        ));
        Workloads {
            statefulsets,
            replicasets,
            deployments,
        }
    }

    /// Waits until every watch has listed once. Call from one task only (a kube-runtime
    /// store wakes one waiter).
    pub async fn wait_ready(&self) {
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.replicasets.wait_until_ready().await;
        let _ = self.deployments.wait_until_ready().await;
    }

    pub fn statefulset(&self, ns: &str, name: &str) -> Option<Arc<StatefulSet>> {
        self.statefulsets.get(&ObjectRef::new(name).within(ns))
    }

    pub fn replicaset(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<ReplicaSet>>> {
        self.replicasets.get(&ObjectRef::new(name).within(ns))
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<Deployment>>> {
        self.deployments.get(&ObjectRef::new(name).within(ns))
    }
}

fn looked<K: Resource>(o: Option<Arc<K>>) -> Looked {
    match o {
        Some(o) => Looked::Found {
            uid: o.meta().uid.clone().unwrap_or_default(),
            controller: o
                .meta()
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .cloned(),
        },
        // Not in the cache: it may be newer than the watch. Only the API server can say.
        None => Looked::Unknown,
    }
}

impl Controllers for Workloads {
    fn look(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Looked {
        match (api_version, kind) {
            ("apps/v1", "StatefulSet") => looked(self.statefulset(ns, name)),
            ("apps/v1", "ReplicaSet") => looked(self.replicaset(ns, name)),
            ("apps/v1", "Deployment") => looked(self.deployment(ns, name)),
            _ => Looked::Unknown,
        }
    }
}

fn strip_meta<K>(o: &mut PartialObjectMeta<K>) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
    o.metadata.labels = None;
}

fn strip_statefulset(s: &mut StatefulSet) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    s.metadata.labels = None;
    s.spec = StatefulSetSpec {
        replicas: s.spec.replicas,
        ..Default::default()
    };
    s.status = None;
}
