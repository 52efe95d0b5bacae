//! In-memory views of the cluster, kept current by watches, that admission decisions read
//! instead of calling the API server: pools, claims, namespaces' labels, nodes' labels, and
//! the workloads owners are verified against (shared with the binder, `pinip-index`). Also what watches alone cannot tell: claims this replica has just
//! created (until its watch sees them) and when each address was last released (for the
//! cool-down).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pinip_api::holder::Record;
use pinip_api::{IPClaim, IPPool};
use pinip_index::Workloads;
use pinip_index::watch::drain;

/// How long a claim this replica created counts as taken before its watch reports it.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Index {
    pub pools: Store<IPPool>,
    pub claims: Store<IPClaim>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    pub workloads: Workloads,
    nodes: Store<PartialObjectMeta<Node>>,
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    released: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Index {
    /// Starts the watches; they run until the process exits, retrying with backoff.
    pub fn start(client: &Client) -> Index {
        let (pools, pw) = reflector::store();
        let (claims, cw) = reflector::store();
        let (namespaces, nw) = reflector::store();
        let (nodes, nodew) = reflector::store();
        let index = Index {
            pools,
            claims,
            namespaces,
            workloads: Workloads::start(client, None),
            nodes,
            pending: Arc::default(),
            released: Arc::default(),
        };
        let cfg = watcher::Config::default();
        let pools_api: Api<IPPool> = Api::all(client.clone());
        tokio::spawn(drain(
            "ippools",
            None,
            reflector::reflector(pw, watcher(pools_api, cfg.clone()).default_backoff()),
        ));
        // Metadata-only watches: labels and owners are all that is read.
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        tokio::spawn(drain(
            "namespaces",
            None,
            reflector::reflector(nw, watcher(ns_api, cfg.clone()).default_backoff()),
        ));
        let node_api: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
        tokio::spawn(drain(
            "nodes",
            None,
            reflector::reflector(nodew, watcher(node_api, cfg.clone()).default_backoff()),
        ));
        let claims_api: Api<IPClaim> = Api::all(client.clone());
        let released = index.released.clone();
        let pending = index.pending.clone();
        let claim_events = reflector::reflector(cw, watcher(claims_api, cfg).default_backoff())
            .inspect(move |ev| match ev {
                Ok(watcher::Event::Delete(c)) => {
                    released
                        .lock()
                        .expect("released lock")
                        .insert(c.name_any(), Instant::now());
                }
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                    pending.lock().expect("pending lock").remove(&c.name_any());
                }
                _ => {}
            });
        tokio::spawn(drain("ipclaims", None, claim_events));
        index
    }

    /// Waits until every watch has listed once.
    pub async fn wait_ready(&self) {
        let _ = self.pools.wait_until_ready().await;
        let _ = self.claims.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        self.workloads.wait_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// Every node's name and labels.
    pub fn nodes(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.nodes
            .state()
            .iter()
            .map(|n| (n.name_any(), n.metadata.labels.clone().unwrap_or_default()))
            .collect()
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    /// Claims reserved for pods of `ns` that the binder has not bound (no pod uid yet):
    /// pods in admission, and pods that a later admission step refused.
    pub fn unbound_reservations(&self, ns: &str) -> usize {
        self.claims
            .state()
            .iter()
            .filter(|c| {
                c.holder_namespace() == ns
                    && matches!(
                        c.record(),
                        Record::Pod { uid: None, .. } | Record::Prefix { .. }
                    )
            })
            .count()
    }

    pub fn claim(&self, name: &str) -> Option<Arc<IPClaim>> {
        self.claims.get(&ObjectRef::new(name))
    }

    pub fn pool(&self, name: &str) -> Option<Arc<IPPool>> {
        self.pools.get(&ObjectRef::new(name))
    }

    /// Whether `name` is held (in the store, or created here moments ago).
    pub fn is_taken(&self, name: &str) -> bool {
        if self.claim(name).is_some() {
            return true;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        match pending.get(name) {
            Some(t) if t.elapsed() < PENDING_TTL => true,
            Some(_) => {
                pending.remove(name);
                false
            }
            None => false,
        }
    }

    /// Whether `name` was released less than `cooldown` ago.
    pub fn cooling_down(&self, name: &str, cooldown: Duration) -> bool {
        let mut released = self.released.lock().expect("released lock");
        match released.get(name) {
            Some(t) if t.elapsed() < cooldown => true,
            Some(_) => {
                released.remove(name);
                false
            }
            None => false,
        }
    }

    /// Records a claim this replica created, so the next decision skips it at once.
    pub fn mark_created(&self, name: &str) {
        self.pending
            .lock()
            .expect("pending lock")
            .insert(name.to_string(), Instant::now());
    }

    pub fn forget_created(&self, name: &str) {
        self.pending.lock().expect("pending lock").remove(name);
    }
}
