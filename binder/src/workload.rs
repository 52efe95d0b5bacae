//! The workload that keeps a retained claim, and whether it still exists.
//!
//! IPClaims are cluster-scoped and Kubernetes' garbage collector ignores an ownerReference
//! from a cluster-scoped object to a namespaced one (it only reports `OwnerRefInvalidNamespace`),
//! so a claim cannot be released by the GC when its pod or workload goes. The binder records
//! the workload's exact identity (apiVersion, kind, name, uid) in the claim annotation
//! [`WORKLOAD_ANNOTATION`] when it binds a retained claim, and deletes the claim itself once
//! that object is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use serde::{Deserialize, Serialize};

pub use pinip_api::claim::WORKLOAD_ANNOTATION;

/// A namespaced object that controls pods: StatefulSet, Deployment, ReplicaSet, CloneSet…
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl WorkloadRef {
    pub fn from_owner_ref(namespace: &str, o: &OwnerReference) -> WorkloadRef {
        WorkloadRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: namespace.to_string(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        }
    }

    /// The annotation value (namespace omitted: it is the claim owner's).
    pub fn render(&self) -> String {
        serde_json::json!({
            "apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
        })
        .to_string()
    }

    /// Reads the annotation value of a claim whose owner lives in `namespace`.
    pub fn parse(namespace: &str, value: &str) -> Result<WorkloadRef, String> {
        let mut r: WorkloadRef = serde_json::from_str(value)
            .map_err(|e| format!("{WORKLOAD_ANNOTATION}: {value:?} is not a workload: {e}"))?;
        if r.kind.is_empty() || r.name.is_empty() || r.uid.is_empty() {
            return Err(format!(
                "{WORKLOAD_ANNOTATION}: {value:?} lacks kind, name or uid"
            ));
        }
        r.namespace = namespace.to_string();
        Ok(r)
    }

    /// `group`, `version` of the apiVersion (`apps/v1` → apps, v1; `v1` → "", v1).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        }
    }

    pub fn is_apps_v1(&self, kind: &str) -> bool {
        self.api_version == "apps/v1" && self.kind == kind
    }
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} ({})",
            self.kind, self.namespace, self.name, self.api_version
        )
    }
}

/// Whether a workload exists, as far as the binder can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// It exists; for a StatefulSet, with this many replicas.
    Exists { replicas: Option<i32> },
    /// It is gone (or a different object of the same name replaced it).
    Gone,
    /// Not known yet: it must be looked up. Decisions never delete on an unknown.
    Unknown,
}

/// Results of looking up workloads of kinds the binder does not watch (third-party
/// controllers), by GET through API discovery. Entries expire so that a deletion is noticed.
pub struct Lookups {
    client: Client,
    ttl: Duration,
    cache: Mutex<HashMap<WorkloadRef, (Presence, Instant)>>,
}

impl Lookups {
    pub fn new(client: Client, ttl: Duration) -> Lookups {
        Lookups {
            client,
            ttl,
            cache: Mutex::default(),
        }
    }

    /// The cached answer for `r`, `Unknown` when there is none or it expired.
    pub fn get(&self, r: &WorkloadRef) -> Presence {
        let cache = self.cache.lock().expect("lookups lock");
        match cache.get(r) {
            Some((p, at)) if at.elapsed() < self.ttl => *p,
            _ => Presence::Unknown,
        }
    }

    /// Asks the API server whether `r` exists and caches the answer. An error (no RBAC for
    /// that kind, discovery failing) leaves it unknown, so its claims are kept.
    pub async fn look_up(&self, r: &WorkloadRef) -> Result<Presence, kube::Error> {
        let (group, version) = r.group_version();
        let gvk = GroupVersionKind::gvk(group, version, &r.kind);
        let found = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((ar, _caps)) => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &r.namespace, &ar);
                match api.get_metadata_opt(&r.name).await? {
                    Some(m) if m.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                        Presence::Exists { replicas: None }
                    }
                    _ => Presence::Gone,
                }
            }
            // The API group or kind is not served any more: its objects are gone with it.
            Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_))) => {
                Presence::Gone
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Presence::Gone,
            Err(e) => return Err(e),
        };
        self.cache
            .lock()
            .expect("lookups lock")
            .insert(r.clone(), (found, Instant::now()));
        Ok(found)
    }

    /// Drops entries nobody asked about for a while.
    pub fn prune(&self) {
        let ttl = self.ttl * 4;
        self.cache
            .lock()
            .expect("lookups lock")
            .retain(|_, (_, at)| at.elapsed() < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_round_trip() {
        let r = WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            namespace: "db".into(),
            name: "mysql".into(),
            uid: "u-1".into(),
        };
        let v = r.render();
        assert_eq!(
            v,
            r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"mysql","uid":"u-1"}"#
        );
        assert_eq!(WorkloadRef::parse("db", &v), Ok(r.clone()));
        assert_eq!(r.group_version(), ("apps", "v1"));
        assert!(r.is_apps_v1("StatefulSet"));
        assert!(WorkloadRef::parse("db", "{").is_err());
        assert!(
            WorkloadRef::parse(
                "db",
                r#"{"apiVersion":"v1","kind":"","name":"x","uid":"u"}"#
            )
            .is_err()
        );
    }
}
