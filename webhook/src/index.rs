//! In-memory views of the cluster, kept current by watches, that admission decisions read
//! instead of calling the API server: pools, claims, namespaces' labels, ReplicaSets' owners
//! and nodes' labels. Also what watches alone cannot tell: claims this replica has just
//! created (until its watch sees them) and when each address was last released (for the
//! cool-down).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pinip_api::{IPClaim, IPPool};

/// How long a claim this replica created counts as taken before its watch reports it.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Index {
    pub pools: Store<IPPool>,
    pub claims: Store<IPClaim>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
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
        let (replicasets, rw) = reflector::store();
        let (nodes, nodew) = reflector::store();
        let index = Index {
            pools,
            claims,
            namespaces,
            replicasets,
            nodes,
            pending: Arc::default(),
            released: Arc::default(),
        };
        let cfg = watcher::Config::default();
        let pools_api: Api<IPPool> = Api::all(client.clone());
        tokio::spawn(drain(
            "ippools",
            reflector::reflector(pw, watcher(pools_api, cfg.clone()).default_backoff()),
        ));
        // Metadata-only watches: labels and owners are all that is read.
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        tokio::spawn(drain(
            "namespaces",
            reflector::reflector(nw, watcher(ns_api, cfg.clone()).default_backoff()),
        ));
        let rs_api: Api<PartialObjectMeta<ReplicaSet>> = Api::all(client.clone());
        tokio::spawn(drain(
            "replicasets",
            reflector::reflector(rw, watcher(rs_api, cfg.clone()).default_backoff()),
        ));
        let node_api: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
        tokio::spawn(drain(
            "nodes",
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
        tokio::spawn(drain("ipclaims", claim_events));
        index
    }

    /// Waits until every watch has listed once.
    pub async fn wait_ready(&self) {
        let _ = self.pools.wait_until_ready().await;
        let _ = self.claims.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.replicasets.wait_until_ready().await;
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

    /// The Deployment (kind, name) that controls ReplicaSet `ns/name`, if it is known.
    pub fn replicaset_owner(&self, ns: &str, name: &str) -> Option<(String, String)> {
        let rs = self.replicasets.get(&ObjectRef::new(name).within(ns))?;
        rs.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind.clone(), o.name.clone()))
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

async fn drain<S, T>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        if let Err(e) = ev {
            tracing::warn!(watch = what, error = %e, "watch error; retrying");
        }
    }
}
