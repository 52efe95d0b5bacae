//! A workload's address set (`pinip.io/retain: app`): how many addresses it may hold (its
//! bound) and the labels by which a user lists it.
//!
//! The bound is what the workload can run at once: `replicas + maxSurge` for a Deployment
//! (`replicas` with strategy Recreate), `replicas` for a ReplicaSet, StatefulSet or a
//! third-party kind with `spec.replicas`, `parallelism` for a Job; or the template's
//! `pinip.io/set-size`. It is read from the workload object itself, never from a pod, so a pod
//! cannot widen its set.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::Owner;

/// On a workload's pod template: the number of addresses its set may hold.
pub const SET_SIZE_ANNOTATION: &str = "pinip.io/set-size";
/// Labels on every claim of a workload's set (`kubectl get ipc -l ...`).
pub const WORKLOAD_KIND_LABEL: &str = "pinip.io/workload-kind";
pub const WORKLOAD_NAMESPACE_LABEL: &str = "pinip.io/workload-namespace";
pub const WORKLOAD_NAME_LABEL: &str = "pinip.io/workload-name";

/// How many addresses a set may hold, and why (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetBound {
    pub size: u32,
    pub because: String,
}

impl std::fmt::Display for SetBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.size, self.because)
    }
}

fn count(v: &Value, field: &str, default: u32) -> Result<u32, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("spec.{field} {n} is not a count")),
    }
}

/// A Deployment's `maxSurge` or `maxUnavailable` of `total`: a count, or a percentage
/// rounded up (maxSurge) or down (maxUnavailable), as the Deployment controller reads them;
/// 25 % when unset. `field` names it in errors.
pub fn int_or_percent(
    value: Option<&IntOrString>,
    total: u32,
    round_up: bool,
    field: &str,
) -> Result<u32, String> {
    let percent = |p: u64| {
        let scaled = u64::from(total) * p;
        let n = if round_up {
            scaled.div_ceil(100)
        } else {
            scaled / 100
        };
        u32::try_from(n).map_err(|_| format!("{field} {p}% is too large"))
    };
    match value {
        None => percent(25),
        Some(IntOrString::Int(n)) => {
            u32::try_from(*n).map_err(|_| format!("{field} {n} is not a count"))
        }
        Some(IntOrString::String(s)) => match s.strip_suffix('%') {
            Some(p) => percent(p.parse().map_err(|_| format!("{field} {s:?}"))?),
            None => s.parse().map_err(|_| format!("{field} {s:?}")),
        },
    }
}

/// The bound of the set of workload `obj` (the whole object, as the API server returns it).
/// `Ok(None)`: nothing bounds this kind (no `spec.replicas`, no `pinip.io/set-size`).
pub fn bound(obj: &Value) -> Result<Option<SetBound>, String> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(v) = spec.pointer("/template/metadata/annotations/pinip.io~1set-size") {
        let n = v
            .as_str()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{SET_SIZE_ANNOTATION}: {v} is not a positive count"))?;
        return Ok(Some(SetBound {
            size: n,
            because: format!("{SET_SIZE_ANNOTATION} {n}"),
        }));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let replicas = || count(spec, "replicas", 1);
    Ok(Some(match kind {
        "Deployment" => {
            let r = replicas()?;
            let recreate =
                spec.pointer("/strategy/type").and_then(Value::as_str) == Some("Recreate");
            if recreate {
                SetBound {
                    size: r,
                    because: format!("replicas {r}, strategy Recreate"),
                }
            } else {
                let max_surge: Option<IntOrString> = spec
                    .pointer("/strategy/rollingUpdate/maxSurge")
                    .filter(|v| !v.is_null())
                    .map(|v| serde_json::from_value(v.clone()))
                    .transpose()
                    .map_err(|e| format!("maxSurge: {e}"))?;
                let s = int_or_percent(max_surge.as_ref(), r, true, "maxSurge")?;
                SetBound {
                    size: r.saturating_add(s),
                    because: format!("replicas {r} + maxSurge {s}"),
                }
            }
        }
        "Job" => {
            let p = count(spec, "parallelism", 1)?;
            SetBound {
                size: p,
                because: format!("parallelism {p}"),
            }
        }
        _ if spec.get("replicas").is_some() || matches!(kind, "ReplicaSet" | "StatefulSet") => {
            let r = replicas()?;
            SetBound {
                size: r,
                because: format!("replicas {r}"),
            }
        }
        _ => return Ok(None),
    }))
}

fn label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// The labels a claim of `owner`'s set carries. A name longer than a label value allows (63)
/// is left out; kind and namespace always fit.
pub fn labels(owner: &Owner) -> BTreeMap<String, String> {
    [
        (WORKLOAD_KIND_LABEL, &owner.kind),
        (WORKLOAD_NAMESPACE_LABEL, &owner.namespace),
        (WORKLOAD_NAME_LABEL, &owner.name),
    ]
    .into_iter()
    .filter(|(_, v)| label_value(v))
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// A label selector for `owner`'s set (as narrow as its labels allow; callers still compare
/// the owner, since a long name is not in the selector).
pub fn selector(owner: &Owner) -> String {
    labels(owner)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn size(obj: Value) -> Option<u32> {
        bound(&obj).unwrap().map(|b| b.size)
    }

    #[test]
    fn deployment_is_replicas_plus_surge() {
        assert_eq!(
            size(json!({"kind": "Deployment", "spec": {"replicas": 3}})),
            Some(4)
        );
        assert_eq!(size(json!({"kind": "Deployment", "spec": {}})), Some(2));
        assert_eq!(
            size(json!({"kind": "Deployment", "spec": {"replicas": 10,
                "strategy": {"rollingUpdate": {"maxSurge": "30%"}}}})),
            Some(13)
        );
        assert_eq!(
            size(json!({"kind": "Deployment", "spec": {"replicas": 5,
                "strategy": {"rollingUpdate": {"maxSurge": 0}}}})),
            Some(5)
        );
        assert_eq!(
            size(json!({"kind": "Deployment", "spec": {"replicas": 3,
                "strategy": {"type": "Recreate"}}})),
            Some(3)
        );
        let b = bound(&json!({"kind": "Deployment", "spec": {"replicas": 3}}))
            .unwrap()
            .unwrap();
        assert_eq!(b.to_string(), "4 (replicas 3 + maxSurge 1)");
    }

    #[test]
    fn surge_rounds_up_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(
            int_or_percent(Some(&pct("50%")), 3, true, "maxSurge"),
            Ok(2)
        );
        assert_eq!(
            int_or_percent(Some(&pct("50%")), 3, false, "maxUnavailable"),
            Ok(1)
        );
        assert_eq!(int_or_percent(None, 3, true, "maxSurge"), Ok(1));
        assert_eq!(int_or_percent(None, 3, false, "maxUnavailable"), Ok(0));
        assert_eq!(
            int_or_percent(Some(&IntOrString::Int(2)), 3, true, "maxSurge"),
            Ok(2)
        );
        assert!(int_or_percent(Some(&IntOrString::Int(-1)), 3, true, "maxSurge").is_err());
    }

    #[test]
    fn other_kinds() {
        assert_eq!(
            size(json!({"kind": "ReplicaSet", "spec": {"replicas": 2}})),
            Some(2)
        );
        assert_eq!(
            size(json!({"kind": "Job", "spec": {"parallelism": 4}})),
            Some(4)
        );
        assert_eq!(size(json!({"kind": "Job", "spec": {}})), Some(1));
        assert_eq!(
            size(json!({"kind": "CloneSet", "spec": {"replicas": 6}})),
            Some(6)
        );
        assert_eq!(size(json!({"kind": "Workflow", "spec": {}})), None);
    }

    #[test]
    fn explicit_size_wins_and_is_checked() {
        let obj = json!({"kind": "Deployment", "spec": {"replicas": 3, "template": {
            "metadata": {"annotations": {"pinip.io/set-size": "8"}}}}});
        assert_eq!(size(obj), Some(8));
        for bad in ["0", "-1", "many", ""] {
            let obj = json!({"kind": "Deployment", "spec": {"template": {
                "metadata": {"annotations": {"pinip.io/set-size": bad}}}}});
            let err = bound(&obj).unwrap_err();
            assert!(err.contains("pinip.io/set-size"), "{err}");
        }
        assert!(bound(&json!({"kind": "Deployment", "spec": {"replicas": -2}})).is_err());
        assert!(
            bound(&json!({"kind": "Deployment", "spec": {"replicas": 2,
                "strategy": {"rollingUpdate": {"maxSurge": "x%"}}}}))
            .is_err()
        );
    }

    #[test]
    fn labels_fit_or_are_left_out() {
        let o = |name: &str| Owner {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
            ordinal: None,
        };
        let l = labels(&o("web"));
        assert_eq!(l.len(), 3);
        assert_eq!(
            selector(&o("web")),
            "pinip.io/workload-kind=Deployment,pinip.io/workload-name=web,pinip.io/workload-namespace=shop"
        );
        let long = "a".repeat(64);
        assert!(!labels(&o(&long)).contains_key(WORKLOAD_NAME_LABEL));
        assert_eq!(labels(&o(&long)).len(), 2);
    }
}
