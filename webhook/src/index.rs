//! In-memory views of the cluster, kept current by watches, that admission decisions read
//! instead of calling the API server: the ledger of pools and claims and the workloads owners
//! are verified against (both shared with the binder, `pinip-index`), namespaces' labels and
//! nodes' labels. Also what watches alone cannot tell: claims this replica has just created
//! (until its watch sees them) and when each address was last released (for the cool-down).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pinip_api::ClaimInfo;
use pinip_index::ledger::{ClaimEvent, Hooks};
use pinip_index::watch::{drain, store_of};
use pinip_index::{Ledger, Pool, Workloads};

/// How long a claim this replica created counts as taken before its watch reports it.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Index {
    /// Pools and claims (shared with the binder, `pinip-index`).
    pub ledger: Ledger,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    pub workloads: Workloads,
    nodes: Store<PartialObjectMeta<Node>>,
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    released: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Index {
    /// Starts the watches; they run until the process exits, retrying with backoff.
    pub fn start(client: &Client) -> Index {
        let (namespaces, nw) = reflector::store();
        let (nodes, nodew) = reflector::store();
        let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let released: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let on_claim = {
            let (pending, released) = (pending.clone(), released.clone());
            move |ev: ClaimEvent<'_>| match ev {
                ClaimEvent::Deleted(name) => {
                    released
                        .lock()
                        .expect("released lock")
                        .insert(name.to_string(), Instant::now());
                }
                ClaimEvent::Applied(name) => {
                    pending.lock().expect("pending lock").remove(name);
                }
                // Claims this replica created stay marked until their TTL; deletions missed
                // while the watch was down are not known as such (no cool-down for them).
                ClaimEvent::Relisted => {}
            }
        };
        let index = Index {
            ledger: Ledger::start(
                client,
                Hooks {
                    changed: None,
                    on_claim: Some(Arc::new(on_claim)),
                },
            ),
            namespaces,
            workloads: Workloads::start(client, None),
            nodes,
            pending,
            released,
        };
        let cfg = watcher::Config::default();
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
            reflector::reflector(nodew, watcher(node_api, cfg).default_backoff()),
        ));
        index
    }

    /// An index of exactly these objects, fed by nothing: for deciding over an in-memory
    /// cluster (the router tests).
    pub fn of(
        ledger: Ledger,
        namespaces: Vec<PartialObjectMeta<Namespace>>,
        nodes: Vec<PartialObjectMeta<Node>>,
        workloads: Workloads,
    ) -> Index {
        Index {
            ledger,
            namespaces: store_of(namespaces),
            workloads,
            nodes: store_of(nodes),
            pending: Arc::default(),
            released: Arc::default(),
        }
    }

    /// Waits until every watch has listed once.
    pub async fn wait_ready(&self) {
        self.ledger.wait_ready().await;
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

    pub fn claim(&self, name: &str) -> Option<Arc<ClaimInfo>> {
        self.ledger.claim(name)
    }

    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.ledger.pool(name)
    }

    /// Whether this replica created claim `name` moments ago (its watch has not shown it).
    pub fn created_here(&self, name: &str) -> bool {
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
