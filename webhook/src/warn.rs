//! Admission warnings for workloads whose pod template fixes fewer addresses than the
//! workload can run pods at once: a fixed address serves one live pod at a time, so the
//! surplus pods are denied until the address is free. The workload is admitted; kubectl shows
//! the warning.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pinip_api::annotations::{IP, IpRequest};
use pinip_api::set::{SET_SIZE_ANNOTATION, int_or_percent};

/// How many addresses per family the template fixes (`pinip.io/ip`): one, or none.
fn fixes_address(t: &PodTemplateSpec) -> bool {
    t.metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(IP))
        .is_some_and(|v| v.parse::<IpRequest>().is_ok())
}

/// `value` (maxSurge rounded up, or maxUnavailable rounded down) against `total`; 0 for
/// values the API server would refuse anyway.
fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    let total = u32::try_from(total).unwrap_or(0);
    int_or_percent(value, total, round_up, "")
        .ok()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

/// The warning for `kind ns/name` that fixes one address and runs `at_once` pods (`how`).
fn warning(kind: &str, ns: &str, name: &str, at_once: i32, how: &str, fix: &str) -> String {
    format!(
        "pinip: {kind} {ns}/{name} fixes one address per family ({IP}) but can run {at_once} pods at once ({how}); all but one will be denied while the address is held: {fix}"
    )
}

/// Warnings for a Deployment whose template's `pinip.io/set-size` keeps its pods from running
/// (fewer addresses than replicas) or its rolling updates from finishing (fewer than
/// replicas + maxSurge while no pod may be unavailable).
fn set_size_warnings(
    ns: &str,
    name: &str,
    t: &PodTemplateSpec,
    replicas: i32,
    extra: i32,
    max_unavailable: impl Fn() -> i32,
) -> Vec<String> {
    let size = t
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(SET_SIZE_ANNOTATION))
        .and_then(|v| v.trim().parse::<i32>().ok());
    let Some(n) = size else {
        return Vec::new();
    };
    if n < replicas {
        return vec![format!(
            "pinip: Deployment {ns}/{name} sets {SET_SIZE_ANNOTATION} {n} below its {replicas} replicas: only {n} of its pods can run; raise it to at least {}",
            replicas + extra
        )];
    }
    if n < replicas + extra && max_unavailable() == 0 {
        return vec![format!(
            "pinip: Deployment {ns}/{name} sets {SET_SIZE_ANNOTATION} {n}, but a rolling update runs {} pods at once (replicas {replicas} + maxSurge {extra}) and may not stop one first (maxUnavailable 0): its rollouts cannot finish; raise it to {} or allow maxUnavailable",
            replicas + extra,
            replicas + extra
        )];
    }
    Vec::new()
}

/// The warnings for a workload object of `kind` (as JSON), empty when none apply.
pub fn workload_warnings(kind: &str, ns: &str, obj: serde_json::Value) -> Vec<String> {
    let w = |at_once: i32, how: String, fix: &str, name: Option<String>| {
        (at_once > 1)
            .then(|| warning(kind, ns, &name.unwrap_or_default(), at_once, &how, fix))
            .into_iter()
            .collect()
    };
    match kind {
        "Deployment" => {
            let Ok(d) = serde_json::from_value::<Deployment>(obj) else {
                return Vec::new();
            };
            let spec = &d.spec;
            let replicas = spec.replicas.unwrap_or(1);
            let strategy = spec.strategy.as_ref();
            let recreate = strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate");
            let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
            let extra = if recreate {
                0
            } else {
                scaled(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true)
            };
            let name = d.metadata.name.clone().unwrap_or_default();
            let mut out = set_size_warnings(ns, &name, &spec.template, replicas, extra, || {
                scaled(
                    rolling.and_then(|r| r.max_unavailable.as_ref()),
                    replicas,
                    false,
                )
            });
            if !fixes_address(&spec.template) {
                return out;
            }
            out.extend(w(
                replicas + extra,
                format!("replicas {replicas} + maxSurge {extra}"),
                "use replicas 1 with strategy Recreate or maxSurge 0, or drop pinip.io/ip",
                d.metadata.name,
            ));
            out
        }
        "StatefulSet" => {
            let Ok(s) = serde_json::from_value::<StatefulSet>(obj) else {
                return Vec::new();
            };
            if !fixes_address(&s.spec.template) {
                return Vec::new();
            }
            let replicas = s.spec.replicas.unwrap_or(1);
            w(
                replicas,
                format!("replicas {replicas}"),
                "drop pinip.io/ip: every ordinal keeps an address of its own by default",
                s.metadata.name,
            )
        }
        "DaemonSet" => {
            let Ok(d) = serde_json::from_value::<DaemonSet>(obj) else {
                return Vec::new();
            };
            if !fixes_address(&d.spec.template) {
                return Vec::new();
            }
            w(
                2,
                "one per node".into(),
                "drop pinip.io/ip, or select a single node",
                d.metadata.name,
            )
        }
        "Job" => {
            let Ok(j) = serde_json::from_value::<Job>(obj) else {
                return Vec::new();
            };
            let Some(spec) = j.spec.as_ref().filter(|s| fixes_address(&s.template)) else {
                return Vec::new();
            };
            let parallelism = spec.parallelism.unwrap_or(1);
            w(
                parallelism,
                format!("parallelism {parallelism}"),
                "use parallelism 1, or drop pinip.io/ip",
                j.metadata.name,
            )
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(ip: bool) -> serde_json::Value {
        let ann = if ip {
            json!({"pinip.io/ip": "10.0.0.5"})
        } else {
            json!({})
        };
        json!({"metadata": {"annotations": ann}, "spec": {"containers": []}})
    }

    fn deploy(replicas: i32, strategy: serde_json::Value, ip: bool) -> serde_json::Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas, "selector": {},
            "strategy": strategy, "template": template(ip)}})
    }

    #[test]
    fn deployments() {
        let warn = |v| workload_warnings("Deployment", "ns", v);
        // Default rolling update: 1 replica + 25% surge rounded up = 2 pods at once.
        let got = warn(deploy(1, json!({}), true));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("Deployment ns/web") && got[0].contains("2 pods at once"),
            "{got:?}"
        );
        assert!(warn(deploy(1, json!({"type": "Recreate"}), true)).is_empty());
        assert!(
            warn(deploy(
                1,
                json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
                true
            ))
            .is_empty()
        );
        assert!(!warn(deploy(2, json!({"type": "Recreate"}), true)).is_empty());
        assert!(warn(deploy(3, json!({}), false)).is_empty());
        assert_eq!(scaled(Some(&IntOrString::String("50%".into())), 3, true), 2);
    }

    #[test]
    fn set_sizes_that_block_pods_or_rollouts() {
        let warn = |replicas: i32, strategy: serde_json::Value, size: &str| {
            workload_warnings(
                "Deployment",
                "ns",
                json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas,
                    "selector": {}, "strategy": strategy, "template": {"metadata": {
                        "annotations": {"pinip.io/retain": "app", "pinip.io/set-size": size}}}}}),
            )
        };
        let got = warn(3, json!({}), "2");
        assert!(
            got.len() == 1 && got[0].contains("only 2 of its pods can run"),
            "{got:?}"
        );
        // 3 replicas: maxUnavailable 25% rounds down to 0, maxSurge up to 1.
        let got = warn(3, json!({}), "3");
        assert!(
            got.len() == 1 && got[0].contains("rollouts cannot finish"),
            "{got:?}"
        );
        assert!(warn(3, json!({}), "4").is_empty());
        assert!(warn(3, json!({"type": "Recreate"}), "3").is_empty());
        assert!(warn(3, json!({"rollingUpdate": {"maxUnavailable": 1}}), "3").is_empty());
        assert!(
            warn(8, json!({}), "8").is_empty(),
            "8 × 25% = 2 may be unavailable"
        );
    }

    #[test]
    fn statefulsets_daemonsets_jobs() {
        let sts = |n: i32| json!({"metadata": {"name": "db"}, "spec": {"replicas": n, "selector": {}, "serviceName": "db", "template": template(true)}});
        assert!(workload_warnings("StatefulSet", "ns", sts(1)).is_empty());
        assert_eq!(workload_warnings("StatefulSet", "ns", sts(2)).len(), 1);
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {}, "template": template(true)}});
        assert_eq!(workload_warnings("DaemonSet", "ns", ds).len(), 1);
        let job = |p: i32| json!({"metadata": {"name": "j"}, "spec": {"parallelism": p, "template": template(true)}});
        assert!(workload_warnings("Job", "ns", job(1)).is_empty());
        assert_eq!(workload_warnings("Job", "ns", job(3)).len(), 1);
        assert!(workload_warnings("Job", "ns", json!("garbage")).is_empty());
    }
}
