//! Watch-fed caches of the workloads that keep addresses: StatefulSets, ReplicaSets and
//! Deployments, stripped to what owners and address-set bounds need (identity, controller,
//! replicas, strategy, the template's `pinip.io/set-size`). The webhook verifies owners
//! against them; the binder also asks whether a retaining workload still exists.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use pinip_api::owner::{Controllers, Looked};
use tokio::sync::Notify;

use crate::watch::{drain_kept, store_of};

#[derive(Clone)]
pub struct Workloads {
    pub statefulsets: Store<StatefulSet>,
    pub replicasets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
}

impl Workloads {
    /// Starts the watches (they run until the process exits); `changed` is poked when what
    /// the caches keep of a workload changed (not on status writes, most of their events).
    pub fn start(client: &Client, changed: Option<Arc<Notify>>) -> Workloads {
        let (statefulsets, sts_w) = reflector::store();
        let (replicasets, rs_w) = reflector::store();
        let (deployments, deploy_w) = reflector::store();
        let cfg = watcher::Config::default();
        tokio::spawn(drain_kept(
            "statefulsets",
            changed.clone(),
            reflector::reflector(
                sts_w,
                watcher(Api::<StatefulSet>::all(client.clone()), cfg.clone())
                    .modify(strip_statefulset)
                    .default_backoff(),
            ),
        ));
        tokio::spawn(drain_kept(
            "replicasets",
            changed.clone(),
            reflector::reflector(
                rs_w,
                watcher(Api::<ReplicaSet>::all(client.clone()), cfg.clone())
                    .modify(strip_replicaset)
                    .default_backoff(),
            ),
        ));
        tokio::spawn(drain_kept(
            "deployments",
            changed,
            reflector::reflector(
                deploy_w,
                watcher(Api::<Deployment>::all(client.clone()), cfg)
                    .modify(strip_deployment)
                    .default_backoff(),
            ),
        ));
        Workloads {
            statefulsets,
            replicasets,
            deployments,
        }
    }

    /// Caches of exactly these workloads (stripped as the watches strip them), fed by nothing:
    /// for tests that decide over an in-memory cluster.
    pub fn of(
        statefulsets: Vec<StatefulSet>,
        replicasets: Vec<ReplicaSet>,
        deployments: Vec<Deployment>,
    ) -> Workloads {
        fn stripped<K>(mut v: Vec<K>, strip: fn(&mut K)) -> Vec<K> {
            v.iter_mut().for_each(strip);
            v
        }
        Workloads {
            statefulsets: store_of(stripped(statefulsets, strip_statefulset)),
            replicasets: store_of(stripped(replicasets, strip_replicaset)),
            deployments: store_of(stripped(deployments, strip_deployment)),
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

    pub fn replicaset(&self, ns: &str, name: &str) -> Option<Arc<ReplicaSet>> {
        self.replicasets.get(&ObjectRef::new(name).within(ns))
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(ns))
    }

    /// The cached object `r` names (an apps/v1 kind, same uid) as the API server would
    /// return it, stripped; `None` when the caches do not hold it.
    pub fn object(&self, r: &pinip_api::workload::WorkloadRef) -> Option<serde_json::Value> {
        fn same<K: Resource + serde::Serialize>(
            o: Option<Arc<K>>,
            uid: &str,
        ) -> Option<serde_json::Value> {
            o.filter(|o| o.meta().uid.as_deref() == Some(uid))
                .and_then(|o| serde_json::to_value(&*o).ok())
        }
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        if r.is_apps_v1("Deployment") {
            same(self.deployment(ns, name), &r.uid)
        } else if r.is_apps_v1("ReplicaSet") {
            same(self.replicaset(ns, name), &r.uid)
        } else if r.is_apps_v1("StatefulSet") {
            same(self.statefulset(ns, name), &r.uid)
        } else {
            None
        }
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

fn strip_meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
}

/// A pod template reduced to its `pinip.io/set-size` annotation.
fn strip_template(t: &PodTemplateSpec) -> PodTemplateSpec {
    let annotations = t.metadata.as_ref().and_then(|m| m.annotations.as_ref());
    let size = annotations.and_then(|a| a.get(pinip_api::set::SET_SIZE_ANNOTATION));
    PodTemplateSpec {
        metadata: size.map(|v| ObjectMeta {
            annotations: Some(
                [(pinip_api::set::SET_SIZE_ANNOTATION.to_string(), v.clone())].into(),
            ),
            ..Default::default()
        }),
        spec: None,
    }
}

fn strip_deployment(d: &mut Deployment) {
    strip_meta(&mut d.metadata);
    let s = std::mem::take(&mut d.spec);
    d.spec = DeploymentSpec {
        replicas: s.replicas,
        strategy: s.strategy,
        template: strip_template(&s.template),
        ..Default::default()
    };
    d.status = None;
}

fn strip_replicaset(r: &mut ReplicaSet) {
    strip_meta(&mut r.metadata);
    let s = std::mem::take(&mut r.spec);
    r.spec = ReplicaSetSpec {
        replicas: s.replicas,
        template: s.template.as_ref().map(strip_template),
        ..Default::default()
    };
    r.status = None;
}

fn strip_statefulset(s: &mut StatefulSet) {
    strip_meta(&mut s.metadata);
    s.spec = StatefulSetSpec {
        replicas: s.spec.replicas,
        template: strip_template(&s.spec.template),
        ..Default::default()
    };
    s.status = None;
}
