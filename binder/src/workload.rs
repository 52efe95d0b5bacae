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

use kube::Client;
pub use pinip_api::claim::WORKLOAD_ANNOTATION;
pub use pinip_api::workload::WorkloadRef;

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
        let found = match pinip_index::dynamic::namespaced_api(
            &self.client,
            &r.api_version,
            &r.kind,
            &r.namespace,
        )
        .await
        {
            Ok(api) => match api.get_metadata_opt(&r.name).await? {
                Some(m) if m.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                    Presence::Exists { replicas: None }
                }
                _ => Presence::Gone,
            },
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
