//! Who keeps a pod's address (one resolver for the webhook, which decides, and the binder,
//! which records the workload): the pod itself, a StatefulSet ordinal, the Deployment behind
//! a ReplicaSet, or any other controller by its kind (OpenKruise CloneSet, Advanced
//! StatefulSet…). Owners are verified, not trusted: a controller reference counts only when
//! it resolves to a live object with the same uid. Works on pods that have only
//! `generateName` at admission. Owner identity decides retention only; who may use a claim
//! right now is [`crate::holder`]'s question.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::Owner;
use crate::annotations::Retain;
pub use crate::workload::WorkloadRef;

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

/// What a lookup knows of a namespaced object a pod's controller reference points at.
#[derive(Clone, Debug, PartialEq)]
pub enum Looked {
    /// It exists with this uid (and, for a ReplicaSet, this controller).
    Found {
        uid: String,
        controller: Option<OwnerReference>,
    },
    /// It does not exist.
    Absent,
    /// The caches do not know: the caller asks the API server and resolves again.
    Unknown,
}

/// Answers [`Looked`] for (apiVersion, kind, namespace, name).
pub trait Controllers {
    fn look(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Looked;
}

/// A pod's verified owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub owner: Owner,
    /// The live object that retains the pod's addresses (the Deployment behind a
    /// ReplicaSet); `None` for a pod that is its own owner.
    pub workload: Option<WorkloadRef>,
    /// Why the pod's controller reference did not count, when it did not: the pod is then its
    /// own owner and retains nothing.
    pub unverified: Option<String>,
}

/// The object a resolution needs the caller to look up first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Needed {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// The API groups whose `StatefulSet` kind keeps addresses by ordinal (apps/v1 and
/// OpenKruise's Advanced StatefulSet).
fn is_statefulset(r: &OwnerReference) -> bool {
    r.kind == STATEFULSET
        && (r.api_version == "apps/v1" || r.api_version.starts_with("apps.kruise.io/"))
}

/// The verified owner of `pod` in `namespace`. A controller reference counts only when it
/// resolves (through `lookup`) to a live object of that kind with the same uid; a StatefulSet
/// pod must also be named exactly `<set>-<ordinal>`; a controller of kind Pod keeps nothing.
/// Anything else makes the pod its own owner. `Err` names an object the caches do not know.
pub fn resolve(pod: &Pod, namespace: &str, lookup: &dyn Controllers) -> Result<Resolved, Needed> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let itself = |unverified: Option<String>| Resolved {
        owner: Owner {
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: if pod_name.is_empty() {
                pod.metadata.generate_name.clone().unwrap_or_default()
            } else {
                pod_name.clone()
            },
            ordinal: None,
        },
        workload: None,
        unverified,
    };
    let Some(c) = controller_ref(pod) else {
        return Ok(itself(None));
    };
    if c.kind == "Pod" || c.uid.is_empty() || c.name.is_empty() {
        return Ok(itself(Some(format!(
            "its controller reference ({} {}) names no workload that keeps addresses",
            c.kind, c.name
        ))));
    }
    // Verifies one reference: Ok(controller of the object) when it is live with that uid.
    let verify = |r: &OwnerReference| -> Result<Result<Option<OwnerReference>, String>, Needed> {
        match lookup.look(&r.api_version, &r.kind, namespace, &r.name) {
            Looked::Found { uid, controller } if uid == r.uid => Ok(Ok(controller)),
            Looked::Found { .. } => Ok(Err(format!(
                "{} {namespace}/{} has another uid than the pod's controller reference",
                r.kind, r.name
            ))),
            Looked::Absent => Ok(Err(format!(
                "{} {namespace}/{} does not exist",
                r.kind, r.name
            ))),
            Looked::Unknown => Err(Needed {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                namespace: namespace.into(),
                name: r.name.clone(),
            }),
        }
    };
    let owned_by = |r: &OwnerReference, ordinal: Option<i32>| Resolved {
        owner: Owner {
            kind: r.kind.clone(),
            namespace: namespace.into(),
            name: r.name.clone(),
            ordinal,
        },
        workload: Some(WorkloadRef::from_owner_ref(namespace, r)),
        unverified: None,
    };
    let controller = match verify(c)? {
        Ok(controller) => controller,
        Err(why) => return Ok(itself(Some(why))),
    };
    if is_statefulset(c) {
        return Ok(match ordinal(&pod_name, &c.name) {
            Some(n) => owned_by(c, Some(n)),
            None => itself(Some(format!(
                "pod name {pod_name:?} is not <set>-<ordinal> of StatefulSet {}",
                c.name
            ))),
        });
    }
    if c.kind == "ReplicaSet" && c.api_version == "apps/v1" {
        // The workload behind a ReplicaSet is its own controller (a Deployment), verified too.
        if let Some(d) = controller {
            return Ok(match verify(&d)? {
                Ok(_) => owned_by(&d, None),
                Err(why) => itself(Some(why)),
            });
        }
    }
    Ok(owned_by(c, None))
}

pub fn holder(o: &Owner) -> String {
    match o.ordinal {
        Some(n) => format!("{} {}/{} ordinal {n}", o.kind, o.namespace, o.name),
        None => format!("{} {}/{}", o.kind, o.namespace, o.name),
    }
}

/// `web-3` of StatefulSet `web` → 3; only the canonical form (`web-03`, `web-+3` are not).
fn ordinal(pod_name: &str, set: &str) -> Option<i32> {
    let digits = pod_name.strip_prefix(set)?.strip_prefix('-')?;
    let n: i32 = digits.parse().ok().filter(|n: &i32| *n >= 0)?;
    (n.to_string() == digits).then_some(n)
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
        // A StatefulSet's owner identity carries the ordinal, so an `app` set would be one set
        // per ordinal, each bounded by the replicas.
        Retain::App if owner.ordinal.is_some() => Err(format!(
            "retain \"app\" is for workloads without ordinals; StatefulSet {} keeps each ordinal's address (retain \"ordinal\", the default)",
            owner.name
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owned(kind: &str, api: &str, name: &str, uid: &str, pod_name: &str) -> Pod {
        pod(json!({"metadata": {"name": pod_name,
            "ownerReferences": [{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}]}}))
    }

    /// Objects by kind/name: uid and controller.
    #[derive(Default)]
    struct Objects(HashMap<String, (String, Option<OwnerReference>)>);

    impl Objects {
        fn with(
            mut self,
            kind: &str,
            name: &str,
            uid: &str,
            ctl: Option<(&str, &str, &str)>,
        ) -> Self {
            let ctl = ctl.map(|(k, n, u)| OwnerReference {
                api_version: "apps/v1".into(),
                kind: k.into(),
                name: n.into(),
                uid: u.into(),
                controller: Some(true),
                ..Default::default()
            });
            self.0.insert(format!("{kind}/{name}"), (uid.into(), ctl));
            self
        }
    }

    impl Controllers for Objects {
        fn look(&self, _: &str, kind: &str, _: &str, name: &str) -> Looked {
            match self.0.get(&format!("{kind}/{name}")) {
                Some((uid, controller)) => Looked::Found {
                    uid: uid.clone(),
                    controller: controller.clone(),
                },
                None => Looked::Absent,
            }
        }
    }

    fn owner_of(p: &Pod, objs: &Objects) -> Resolved {
        resolve(p, "ns", objs).unwrap()
    }

    #[test]
    fn bare_pod_with_generate_name() {
        let p = pod(json!({"metadata": {"generateName": "job-"}}));
        let r = owner_of(&p, &Objects::default());
        assert_eq!(
            (r.owner.kind.as_str(), r.owner.name.as_str()),
            ("Pod", "job-")
        );
        assert_eq!(display_name(&p), "job-*");
        assert_eq!(default_retain(&r.owner), Retain::None);
        assert_eq!(r.unverified, None);
    }

    #[test]
    fn statefulset_pods_are_verified_by_uid_and_canonical_name() {
        let objs = Objects::default().with("StatefulSet", "db", "sts-1", None);
        for api in ["apps/v1", "apps.kruise.io/v1beta1"] {
            let r = owner_of(&owned("StatefulSet", api, "db", "sts-1", "db-12"), &objs);
            assert_eq!(r.owner.ordinal, Some(12));
            assert_eq!(default_retain(&r.owner), Retain::Ordinal);
            assert_eq!(r.workload.unwrap().uid, "sts-1");
        }
        // Forged: another uid, a name that only parses as the ordinal, a set that is gone.
        for (uid, name, set) in [
            ("other", "db-0", "db"),
            ("sts-1", "db-00", "db"),
            ("sts-1", "db-+0", "db"),
            ("sts-1", "other", "db"),
            ("sts-1", "gone-0", "gone"),
        ] {
            let r = owner_of(&owned("StatefulSet", "apps/v1", set, uid, name), &objs);
            assert_eq!(r.owner.kind, "Pod", "{uid} {name}");
            assert_eq!(r.owner.name, name);
            assert!(r.unverified.is_some());
            assert!(check_retain(&r.owner, Retain::Ordinal).is_err());
        }
    }

    #[test]
    fn a_controller_of_kind_pod_keeps_nothing() {
        let objs = Objects::default().with("Pod", "victim", "v-1", None);
        let r = owner_of(&owned("Pod", "v1", "victim", "v-1", "thief"), &objs);
        assert_eq!(
            (r.owner.kind.as_str(), r.owner.name.as_str()),
            ("Pod", "thief")
        );
        assert!(r.unverified.is_some());
    }

    #[test]
    fn deployment_behind_a_verified_replicaset() {
        let objs = Objects::default()
            .with(
                "ReplicaSet",
                "web-abc12",
                "rs-1",
                Some(("Deployment", "web", "d-1")),
            )
            .with("Deployment", "web", "d-1", None)
            .with("ReplicaSet", "solo", "rs-2", None)
            .with(
                "ReplicaSet",
                "fake",
                "rs-3",
                Some(("Deployment", "web", "d-forged")),
            );
        let r = owner_of(
            &owned("ReplicaSet", "apps/v1", "web-abc12", "rs-1", ""),
            &objs,
        );
        assert_eq!(
            (r.owner.kind.as_str(), r.owner.name.as_str()),
            ("Deployment", "web")
        );
        assert_eq!(r.workload.unwrap().uid, "d-1");
        let r = owner_of(&owned("ReplicaSet", "apps/v1", "solo", "rs-2", ""), &objs);
        assert_eq!(
            (r.owner.kind.as_str(), r.owner.name.as_str()),
            ("ReplicaSet", "solo")
        );
        let r = owner_of(&owned("ReplicaSet", "apps/v1", "fake", "rs-3", "x"), &objs);
        assert_eq!(
            r.owner.kind, "Pod",
            "a ReplicaSet claiming another Deployment's uid"
        );
        let r = owner_of(
            &owned("ReplicaSet", "apps/v1", "web-abc12", "rs-x", "y"),
            &objs,
        );
        assert_eq!(r.owner.kind, "Pod");
    }

    #[test]
    fn third_party_controller_by_kind_and_unknowns_are_asked_for() {
        let objs = Objects::default().with("CloneSet", "cs", "c-1", None);
        let r = owner_of(
            &owned("CloneSet", "apps.kruise.io/v1alpha1", "cs", "c-1", ""),
            &objs,
        );
        assert_eq!(
            (r.owner.kind.as_str(), r.owner.name.as_str()),
            ("CloneSet", "cs")
        );
        assert!(check_retain(&r.owner, Retain::App).is_ok());
        struct Nothing;
        impl Controllers for Nothing {
            fn look(&self, _: &str, _: &str, _: &str, _: &str) -> Looked {
                Looked::Unknown
            }
        }
        let need = resolve(
            &owned("CloneSet", "apps.kruise.io/v1alpha1", "cs", "c-1", ""),
            "ns",
            &Nothing,
        )
        .unwrap_err();
        assert_eq!((need.kind.as_str(), need.name.as_str()), ("CloneSet", "cs"));
        let bare = owner_of(&pod(json!({"metadata": {"name": "p"}})), &objs);
        assert!(check_retain(&bare.owner, Retain::App).is_err());
        let ordinal = Owner {
            ordinal: Some(0),
            ..r.owner.clone()
        };
        assert!(check_retain(&ordinal, Retain::App).is_err());
    }
}
