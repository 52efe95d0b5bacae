//! What changed since the last reconcile, so that a pod or claim event costs a decision over
//! what it touches rather than over every claim. Watch events file into [`Changes`]: a claim
//! event its claim, a pod event the claims the pod's allocation names, anything else
//! (workloads, a relist) "everything". [`PodsByClaim`] answers which pods name a claim.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pinip_api::annotations::{ALLOCATION, Allocation};

/// What the next reconcile must look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Decide everything (a full pass).
    pub everything: bool,
    /// Claims (by name) whose claim, or a pod naming them, changed.
    pub claims: HashSet<String>,
}

/// Changes collected from the watches, taken by the reconcile loop.
#[derive(Clone, Default)]
pub struct Changes(Arc<Mutex<Scope>>);

impl Changes {
    pub fn claim(&self, name: &str) {
        self.0
            .lock()
            .expect("changes lock")
            .claims
            .insert(name.to_string());
    }

    pub fn claims<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut s = self.0.lock().expect("changes lock");
        s.claims.extend(names.into_iter().map(str::to_string));
    }

    pub fn everything(&self) {
        self.0.lock().expect("changes lock").everything = true;
    }

    /// What changed since the last call.
    pub fn take(&self) -> Scope {
        std::mem::take(&mut *self.0.lock().expect("changes lock"))
    }
}

/// The claims a pod's allocation names (none for a pod without one). An allocation this
/// version cannot read names every claim it mentions by name only when parseable; such pods
/// are left to the full passes.
pub fn named_claims(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOCATION))
        .and_then(|raw| raw.parse::<Allocation>().ok())
        .map(|a| {
            a.interfaces
                .iter()
                .flat_map(|i| &i.ips)
                .map(|ip| ip.claim.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Which pods name each claim, kept from the pod watch (allocations never change after
/// creation, so a pod's claims are known from any version of it).
#[derive(Clone, Default)]
pub struct PodsByClaim(Arc<Mutex<HashMap<String, HashSet<ObjectRef<Pod>>>>>);

impl PodsByClaim {
    /// Files one pod watch event (after the reflector has applied it) and records what it
    /// touched in `changes`. `all`: the pods in the store, for rebuilding after a relist.
    pub fn event(
        &self,
        ev: &watcher::Event<Pod>,
        changes: &Changes,
        all: impl FnOnce() -> Vec<Arc<Pod>>,
    ) {
        match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let claims = named_claims(p);
                let r = ObjectRef::from_obj(p);
                let mut m = self.0.lock().expect("pods lock");
                for c in &claims {
                    m.entry(c.clone()).or_default().insert(r.clone());
                }
                drop(m);
                changes.claims(claims.iter().map(String::as_str));
            }
            watcher::Event::Delete(p) => {
                let claims = named_claims(p);
                let r = ObjectRef::from_obj(p);
                let mut m = self.0.lock().expect("pods lock");
                for c in &claims {
                    if let Some(set) = m.get_mut(c) {
                        set.remove(&r);
                        if set.is_empty() {
                            m.remove(c);
                        }
                    }
                }
                drop(m);
                changes.claims(claims.iter().map(String::as_str));
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                // Pods deleted while the watch was down left no Delete event: rebuild.
                let mut fresh: HashMap<String, HashSet<ObjectRef<Pod>>> = HashMap::new();
                for p in all() {
                    for c in named_claims(&p) {
                        fresh.entry(c).or_default().insert(ObjectRef::from_obj(&*p));
                    }
                }
                *self.0.lock().expect("pods lock") = fresh;
                changes.everything();
            }
        }
    }

    /// The pods that name `claim`.
    pub fn naming(&self, claim: &str) -> Vec<ObjectRef<Pod>> {
        self.0
            .lock()
            .expect("pods lock")
            .get(claim)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, claims: &[&str]) -> Pod {
        let ips: Vec<_> = claims
            .iter()
            .map(|c| json!({"address": "10.0.0.5/24", "pool": "p", "claim": c}))
            .collect();
        let alloc = json!({"version": 1, "interfaces": [{"name": "eth0", "ips": ips}]});
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "annotations": {ALLOCATION: alloc.to_string()}}}))
        .unwrap()
    }

    #[test]
    fn pod_events_file_the_claims_they_name() {
        let (idx, changes) = (PodsByClaim::default(), Changes::default());
        let a = pod("a", &["c1", "c2"]);
        idx.event(&watcher::Event::Apply(a.clone()), &changes, Vec::new);
        idx.event(
            &watcher::Event::Apply(pod("b", &["c2"])),
            &changes,
            Vec::new,
        );
        assert_eq!(idx.naming("c2").len(), 2);
        let s = changes.take();
        assert!(!s.everything);
        assert_eq!(s.claims, ["c1", "c2"].map(String::from).into());
        assert_eq!(changes.take(), Scope::default(), "taken once");
        idx.event(&watcher::Event::Delete(a), &changes, Vec::new);
        assert!(idx.naming("c1").is_empty());
        assert_eq!(idx.naming("c2").len(), 1);
        assert_eq!(changes.take().claims.len(), 2);
        // A relist replaces the index with the store's pods and asks for a full pass.
        idx.event(&watcher::Event::InitDone, &changes, || {
            vec![Arc::new(pod("z", &["c9"]))]
        });
        assert!(idx.naming("c2").is_empty());
        assert_eq!(idx.naming("c9").len(), 1);
        assert!(changes.take().everything);
    }
}
