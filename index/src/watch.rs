//! Running a watch into a reflector store.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Drives a watch stream until the process exits, logging errors (the stream retries with
/// backoff) and poking `changed` on every event.
pub async fn drain<S, T>(what: &'static str, changed: Option<Arc<Notify>>, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => {
                if let Some(c) = &changed {
                    c.notify_one();
                }
            }
            Err(e) => tracing::warn!(watch = what, error = %e, "watch error; retrying"),
        }
    }
}

/// Like [`drain`], but pokes `changed` only when what the store keeps of an object changed
/// (its stripped form, ignoring resourceVersion and generation), when one is deleted, and
/// after a relist. For stripped caches, where most events (status writes) change nothing kept.
pub async fn drain_kept<S, K>(what: &'static str, changed: Option<Arc<Notify>>, stream: S)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    K: Resource + serde::Serialize + Clone,
{
    let mut stream = std::pin::pin!(stream);
    let mut kept = Kept::default();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                if kept.event(&ev)
                    && let Some(c) = &changed
                {
                    c.notify_one();
                }
            }
            Err(e) => tracing::warn!(watch = what, error = %e, "watch error; retrying"),
        }
    }
}

type Key = (Option<String>, String);

/// Fingerprints of the objects a watch delivered, by namespace and name.
#[derive(Default)]
struct Kept {
    now: HashMap<Key, u64>,
    relist: Option<HashMap<Key, u64>>,
}

impl Kept {
    /// Files an event; whether it changed anything kept.
    fn event<K: Resource + serde::Serialize + Clone>(&mut self, ev: &watcher::Event<K>) -> bool {
        match ev {
            watcher::Event::Apply(o) => {
                let (key, print) = fingerprint(o);
                self.now.insert(key, print) != Some(print)
            }
            watcher::Event::Delete(o) => {
                self.now.remove(&fingerprint(o).0);
                true
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                let (key, print) = fingerprint(o);
                self.relist.get_or_insert_default().insert(key, print);
                false
            }
            watcher::Event::InitDone => {
                self.now = self.relist.take().unwrap_or_default();
                true
            }
        }
    }
}

fn fingerprint<K: Resource + serde::Serialize + Clone>(o: &K) -> (Key, u64) {
    let meta = o.meta();
    let key = (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    );
    let mut o = o.clone();
    o.meta_mut().resource_version = None;
    o.meta_mut().generation = None;
    let mut h = DefaultHasher::new();
    match serde_json::to_vec(&o) {
        Ok(bytes) => bytes.hash(&mut h),
        // Unprintable: never equal to a previous print, so it counts as a change.
        Err(_) => std::time::Instant::now().hash(&mut h),
    }
    (key, h.finish())
}

/// A store holding exactly `objects`, listed once and fed by nothing (for tests and benches
/// that decide over an in-memory cluster).
pub fn store_of<K>(objects: impl IntoIterator<Item = K>) -> kube::runtime::reflector::Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use serde_json::json;

    fn sts(rv: &str, replicas: i32) -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "a",
            "resourceVersion": rv, "generation": 1, "uid": "u"},
            "spec": {"replicas": replicas, "selector": {}, "serviceName": "db",
                "template": {}}}))
        .unwrap()
    }

    #[test]
    fn only_changes_to_what_is_kept_count() {
        let mut k = Kept::default();
        assert!(k.event(&watcher::Event::Apply(sts("1", 2))));
        // A status write arrives as a new resourceVersion of the same stripped object.
        assert!(!k.event(&watcher::Event::Apply(sts("2", 2))));
        assert!(k.event(&watcher::Event::Apply(sts("3", 3))));
        let mut deleting = sts("4", 3);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(k.event(&watcher::Event::Apply(deleting.clone())));
        assert!(k.event(&watcher::Event::Delete(deleting)));
        assert!(!k.event(&watcher::Event::<StatefulSet>::Init));
        assert!(!k.event(&watcher::Event::InitApply(sts("5", 3))));
        assert!(k.event(&watcher::Event::<StatefulSet>::InitDone));
        assert!(!k.event(&watcher::Event::Apply(sts("6", 3))));
    }
}
