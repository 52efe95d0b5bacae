//! Who keeps a pod's address (shared by the webhook, which decides, and the binder, which
//! checks and binds): the pod itself, a StatefulSet ordinal, the Deployment behind a
//! ReplicaSet, or any other controller by its kind (OpenKruise CloneSet, Advanced
//! StatefulSet…). Works on pods that have only `generateName` at admission.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::Owner;
use crate::annotations::Retain;

/// The kinds whose pods keep their address by ordinal (apps/v1 and OpenKruise's Advanced
/// StatefulSet both use kind `StatefulSet`).
const STATEFULSET: &str = "StatefulSet";

/// A pod's display name at admission: its name, or `generateName` + `*`.
pub fn display_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => format!("{g}*"),
        _ => "<unnamed>".to_string(),
    }
}

/// The pod's controller: the ownerReference marked `controller: true`.
pub fn controller_ref(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The owner identity of `pod` in `namespace`. `replicaset_owner` answers from the watch
/// cache which controller owns a ReplicaSet.
pub fn identify(
    pod: &Pod,
    namespace: &str,
    replicaset_owner: impl Fn(&str) -> Option<(String, String)>,
) -> Owner {
    let controller = controller_ref(pod);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let Some(c) = controller else {
        return Owner {
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: if pod_name.is_empty() {
                pod.metadata.generate_name.clone().unwrap_or_default()
            } else {
                pod_name
            },
            ordinal: None,
        };
    };
    if c.kind == STATEFULSET {
        return Owner {
            kind: STATEFULSET.into(),
            namespace: namespace.into(),
            name: c.name.clone(),
            ordinal: ordinal(&pod_name, &c.name),
        };
    }
    if c.kind == "ReplicaSet" && c.api_version.starts_with("apps/") {
        if let Some((kind, name)) = replicaset_owner(&c.name) {
            return Owner {
                kind,
                namespace: namespace.into(),
                name,
                ordinal: None,
            };
        }
        // The ReplicaSet may be newer than our watch: the Deployment controller names it
        // `<deployment>-<pod-template-hash>` and labels its pods with that hash.
        if let Some(hash) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            && let Some(deploy) = c.name.strip_suffix(&format!("-{hash}"))
        {
            return Owner {
                kind: "Deployment".into(),
                namespace: namespace.into(),
                name: deploy.into(),
                ordinal: None,
            };
        }
    }
    Owner {
        kind: c.kind.clone(),
        namespace: namespace.into(),
        name: c.name.clone(),
        ordinal: None,
    }
}

/// Same owner identity: kind, namespace, name and ordinal.
pub fn same_owner(a: &Owner, b: &Owner) -> bool {
    a.kind == b.kind && a.namespace == b.namespace && a.name == b.name && a.ordinal == b.ordinal
}

pub fn holder(o: &Owner) -> String {
    match o.ordinal {
        Some(n) => format!("{} {}/{} ordinal {n}", o.kind, o.namespace, o.name),
        None => format!("{} {}/{}", o.kind, o.namespace, o.name),
    }
}

/// Whether `owner` (as recorded on a claim at admission) is `pod`'s owner now. A bare pod
/// created with only `generateName` was recorded under that prefix, before the API server
/// generated its name.
pub fn owns(
    owner: &Owner,
    pod: &Pod,
    namespace: &str,
    replicaset_owner: impl Fn(&str) -> Option<(String, String)>,
) -> bool {
    let now = identify(pod, namespace, replicaset_owner);
    if same_owner(owner, &now) {
        return true;
    }
    let generate_name = pod.metadata.generate_name.as_deref().unwrap_or_default();
    now.kind == "Pod"
        && owner.kind == "Pod"
        && owner.namespace == now.namespace
        && !generate_name.is_empty()
        && owner.name == generate_name
        && now.name.starts_with(generate_name)
}

/// `web-3` of StatefulSet `web` → 3.
fn ordinal(pod_name: &str, set: &str) -> Option<i32> {
    pod_name
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|n: &i32| *n >= 0)
}

/// The retain policy when the pod does not name one.
pub fn default_retain(owner: &Owner) -> Retain {
    if owner.kind == STATEFULSET {
        Retain::Ordinal
    } else {
        Retain::None
    }
}

/// Whether `retain` makes sense for `owner`; the reason when it does not.
pub fn check_retain(owner: &Owner, retain: Retain) -> Result<(), String> {
    match retain {
        Retain::Ordinal if owner.ordinal.is_none() => Err(format!(
            "retain \"ordinal\" needs a StatefulSet pod with an ordinal; this pod belongs to {} {}",
            owner.kind, owner.name
        )),
        Retain::App if owner.kind == "Pod" => {
            Err("retain \"app\" needs a pod owned by a workload; this pod has no controller".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owned(kind: &str, api: &str, name: &str, pod_name: &str) -> Pod {
        pod(
            json!({"metadata": {"name": pod_name, "labels": {"pod-template-hash": "abc12"},
            "ownerReferences": [{"apiVersion": api, "kind": kind, "name": name, "uid": "u", "controller": true}]}}),
        )
    }

    #[test]
    fn bare_pod_with_generate_name() {
        let p = pod(json!({"metadata": {"generateName": "job-"}}));
        let o = identify(&p, "ns", |_| None);
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("Pod", "job-"));
        assert_eq!(display_name(&p), "job-*");
        assert_eq!(default_retain(&o), Retain::None);
    }

    #[test]
    fn generate_name_claim_matches_the_named_pod() {
        let at_admission = pod(json!({"metadata": {"generateName": "job-"}}));
        let recorded = identify(&at_admission, "ns", |_| None);
        let created = pod(json!({"metadata": {"generateName": "job-", "name": "job-x7k2p"}}));
        assert!(owns(&recorded, &created, "ns", |_| None));
        assert!(!owns(&recorded, &created, "other", |_| None));
        let unrelated = pod(json!({"metadata": {"name": "job-x7k2p"}}));
        assert!(
            !owns(&recorded, &unrelated, "ns", |_| None),
            "no generateName: exact names only"
        );
    }

    #[test]
    fn statefulset_and_advanced_statefulset_have_ordinals() {
        for api in ["apps/v1", "apps.kruise.io/v1beta1"] {
            let o = identify(&owned("StatefulSet", api, "db", "db-12"), "ns", |_| None);
            assert_eq!(o.ordinal, Some(12));
            assert_eq!(default_retain(&o), Retain::Ordinal);
        }
        // A pod name that does not follow the pattern has no ordinal.
        let o = identify(
            &owned("StatefulSet", "apps/v1", "db", "other"),
            "ns",
            |_| None,
        );
        assert_eq!(o.ordinal, None);
        assert!(check_retain(&o, Retain::Ordinal).is_err());
    }

    #[test]
    fn deployment_from_cache_or_hash() {
        let p = owned("ReplicaSet", "apps/v1", "web-abc12", "");
        let o = identify(&p, "ns", |rs| {
            (rs == "web-abc12").then(|| ("Deployment".into(), "web".into()))
        });
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("Deployment", "web"));
        let o = identify(&p, "ns", |_| None);
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("Deployment", "web"));
        let o = identify(&owned("ReplicaSet", "apps/v1", "solo", ""), "ns", |_| None);
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("ReplicaSet", "solo"));
    }

    #[test]
    fn third_party_controller_by_kind() {
        let o = identify(
            &owned("CloneSet", "apps.kruise.io/v1alpha1", "cs", ""),
            "ns",
            |_| None,
        );
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("CloneSet", "cs"));
        assert!(check_retain(&o, Retain::App).is_ok());
        let bare = identify(&pod(json!({"metadata": {"name": "p"}})), "ns", |_| None);
        assert!(check_retain(&bare, Retain::App).is_err());
    }
}
