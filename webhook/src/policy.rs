//! Which pools a pod draws from: the pool it names, else the pool holding the address it asks
//! for, else the default pools its namespace may use whose nodes can satisfy the pod's own
//! node constraints. One pool per address family.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use pinip_api::annotations::{IpRequest, PoolRequest};
use pinip_api::{Family, IPPool, UsablePool};
use pinip_index::Pool;

use crate::reason::Denial;

/// A pool chosen for one family of a pod's addresses.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub pool: Arc<Pool>,
    pub usable: UsablePool,
    /// The exact address the pod asked for in this family.
    pub explicit: Option<IpAddr>,
}

impl Chosen {
    pub fn name(&self) -> String {
        self.pool.name.clone()
    }
}

/// Whether `selector` (absent: everything) admits `labels`.
pub fn selector_admits(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match selector {
        None => true,
        Some(s) => Selector::try_from(s.clone()).is_ok_and(|sel| sel.matches(labels)),
    }
}

pub fn namespace_may_use(pool: &IPPool, ns_labels: &BTreeMap<String, String>) -> bool {
    selector_admits(pool.spec.namespace_selector.as_ref(), ns_labels)
}

/// The pool's node selector as node-selector requirements (matchLabels become `In`).
pub fn node_requirements(sel: &LabelSelector) -> Vec<NodeSelectorRequirement> {
    let mut reqs: Vec<NodeSelectorRequirement> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| NodeSelectorRequirement {
            key: k.clone(),
            operator: "In".into(),
            values: Some(vec![v.clone()]),
        })
        .collect();
    reqs.extend(
        sel.match_expressions
            .iter()
            .flatten()
            .map(|e| NodeSelectorRequirement {
                key: e.key.clone(),
                operator: e.operator.clone(),
                values: e.values.clone(),
            }),
    );
    reqs
}

/// What a set of requirements says about one label key: the values it may take (None: any)
/// and whether it must exist or must not.
#[derive(Default)]
struct KeyConstraint {
    allowed: Option<Vec<String>>,
    forbidden: Vec<String>,
    must_exist: bool,
    must_not_exist: bool,
}

fn constrain(map: &mut BTreeMap<String, KeyConstraint>, r: &NodeSelectorRequirement) {
    let c = map.entry(r.key.clone()).or_default();
    let vals = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => {
            c.must_exist = true;
            c.allowed = Some(match c.allowed.take() {
                None => vals,
                Some(prev) => prev.into_iter().filter(|v| vals.contains(v)).collect(),
            });
        }
        "NotIn" => c.forbidden.extend(vals),
        "Exists" => c.must_exist = true,
        "DoesNotExist" => c.must_not_exist = true,
        // Gt/Lt compare integers; treat them as satisfiable (the scheduler decides).
        _ => {}
    }
}

/// Whether some node could carry labels satisfying all of `reqs` (label-level reasoning: no
/// node list is consulted).
fn satisfiable(reqs: &[NodeSelectorRequirement]) -> bool {
    let mut map = BTreeMap::new();
    for r in reqs {
        constrain(&mut map, r);
    }
    map.values().all(|c| {
        if c.must_not_exist {
            return !c.must_exist;
        }
        match &c.allowed {
            Some(vals) => vals.iter().any(|v| !c.forbidden.contains(v)),
            None => true,
        }
    })
}

/// A node's name and labels, as the webhook's watch knows them.
pub type NodeLabels = (String, BTreeMap<String, String>);

fn requirement_admits(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let vals = r.values.as_deref().unwrap_or_default();
    let int = |s: &String| s.parse::<i64>().ok();
    let bound = vals.first().and_then(int);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value.and_then(int).zip(bound).is_some_and(|(v, b)| v > b),
        "Lt" => value.and_then(int).zip(bound).is_some_and(|(v, b)| v < b),
        _ => false,
    }
}

/// The node-selector terms of the pod's required node affinity (ORed).
fn required_terms(pod: &Pod) -> &[k8s_openapi::api::core::v1::NodeSelectorTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default()
}

/// Whether the pod's nodeSelector and required node affinity admit node `name` with `labels`.
pub fn pod_admits_node(pod: &Pod, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let spec = pod.spec.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let terms = required_terms(pod);
    let name = name.to_string();
    let term_ok = |t: &k8s_openapi::api::core::v1::NodeSelectorTerm| {
        t.match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_admits(r, labels.get(&r.key)))
            && t.match_fields
                .iter()
                .flatten()
                .all(|r| r.key == "metadata.name" && requirement_admits(r, Some(&name)))
    };
    selector_ok && (terms.is_empty() || terms.iter().any(term_ok))
}

/// Whether the pool's nodes can satisfy the pod's nodeSelector and required node affinity:
/// some known node is selected by both. Without a node list (none watched yet) it reasons on
/// labels alone.
pub fn nodes_compatible(pool: &IPPool, pod: &Pod, nodes: &[NodeLabels]) -> bool {
    let Some(sel) = pool.spec.node_selector.as_ref() else {
        return true;
    };
    if !nodes.is_empty() {
        return nodes
            .iter()
            .any(|(n, l)| selector_admits(Some(sel), l) && pod_admits_node(pod, n, l));
    }
    let mut base = node_requirements(sel);
    let spec = pod.spec.as_ref();
    base.extend(
        spec.and_then(|s| s.node_selector.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| NodeSelectorRequirement {
                key: k.clone(),
                operator: "In".into(),
                values: Some(vec![v.clone()]),
            }),
    );
    let terms = required_terms(pod);
    if terms.is_empty() {
        return satisfiable(&base);
    }
    // Terms are ORed: one compatible term is enough.
    terms.iter().any(|t| {
        let mut reqs = base.clone();
        reqs.extend(t.match_expressions.clone().unwrap_or_default());
        satisfiable(&reqs)
    })
}

/// What the webhook's index tells about the cluster, for choosing among default pools.
pub trait PoolUsage {
    /// Every node's name and labels (empty when unknown).
    fn nodes(&self) -> Vec<NodeLabels>;
    /// Addresses of `pool` that are claimed.
    fn claimed(&self, pool: &str) -> u128;
    /// Whether the pod's owner already holds a retained claim in `pool`.
    fn held_by_owner(&self, pool: &str) -> bool;
}

/// Picks the pools for a pod. `pools` is every pool known. Among several fitting default
/// pools of a family, the one where the owner already holds a retained address wins (a
/// StatefulSet pod keeps its pool, and so its address), then the one with the most free
/// addresses (pods spread over, e.g., one default pool per zone), then the first by name.
pub fn choose(
    pools: &[Arc<Pool>],
    pod: &Pod,
    ns_labels: &BTreeMap<String, String>,
    pool_req: Option<&PoolRequest>,
    ip_req: Option<&IpRequest>,
    usage: &dyn PoolUsage,
) -> Result<Vec<Chosen>, Denial> {
    let mut chosen: Vec<Chosen> = Vec::new();
    let usable = |p: &Arc<Pool>| {
        p.usable.clone().map_err(|reason| Denial::BadPool {
            pool: p.name.clone(),
            reason,
        })
    };
    if let Some(req) = pool_req {
        for name in &req.0 {
            let pool = pools
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| Denial::UnknownPool { pool: name.clone() })?;
            if !namespace_may_use(&pool.object, ns_labels) {
                return Err(Denial::NamespaceNotAllowed { pool: name.clone() });
            }
            if !pool.network().is_empty() {
                return Err(Denial::OtherNetwork {
                    pool: name.clone(),
                    network: pool.network().to_string(),
                });
            }
            let u = usable(pool)?;
            if chosen.iter().any(|c| c.usable.family() == u.family()) {
                return Err(Denial::SameFamilyPools {
                    pools: req.to_string(),
                });
            }
            let explicit = ip_req.and_then(|r| r.for_family(u.family()));
            if let Some(ip) = explicit
                && !u.contains(&ip)
            {
                return Err(Denial::AddressNotInPool {
                    pool: name.clone(),
                    ip,
                });
            }
            chosen.push(Chosen {
                pool: pool.clone(),
                usable: u,
                explicit,
            });
        }
        if let Some(r) = ip_req {
            for ip in &r.0 {
                if !chosen.iter().any(|c| c.usable.family() == Family::of(ip)) {
                    return Err(Denial::AddressNotInPool {
                        pool: req.to_string(),
                        ip: *ip,
                    });
                }
            }
        }
        return Ok(chosen);
    }
    if let Some(r) = ip_req {
        for ip in &r.0 {
            // Prefer the default network's pools; then by name, for a stable choice.
            let mut holders: Vec<(&Arc<Pool>, &UsablePool)> = pools
                .iter()
                .filter(|p| namespace_may_use(&p.object, ns_labels))
                .filter_map(|p| p.usable.as_ref().ok().map(|u| (p, u)))
                .filter(|(_, u)| u.contains(ip))
                .collect();
            holders.sort_by_key(|(p, _)| (!p.network().is_empty(), p.name.clone()));
            let (pool, u) = holders
                .into_iter()
                .next()
                .ok_or(Denial::NoPoolForAddress { ip: *ip })?;
            if !pool.network().is_empty() {
                return Err(Denial::OtherNetwork {
                    pool: pool.name.clone(),
                    network: pool.network().to_string(),
                });
            }
            chosen.push(Chosen {
                pool: pool.clone(),
                usable: u.clone(),
                explicit: Some(*ip),
            });
        }
        return Ok(chosen);
    }
    let mut defaults: Vec<&Arc<Pool>> = pools
        .iter()
        .filter(|p| p.object.spec.default && p.network().is_empty())
        .collect();
    defaults.sort_by_key(|p| p.name.clone());
    if defaults.is_empty() {
        return Err(Denial::NoDefaultPool {
            why: "no IPPool has default: true".into(),
        });
    }
    let mut skipped = Vec::new();
    // Decide by the known nodes when some node fits some admitted pool; otherwise (no node
    // yet, or nodes an autoscaler will add) by labels alone rather than deny.
    let mut nodes = usage.nodes();
    if !defaults.iter().any(|p| {
        namespace_may_use(&p.object, ns_labels) && nodes_compatible(&p.object, pod, &nodes)
    }) {
        nodes.clear();
    }
    for p in defaults {
        if !namespace_may_use(&p.object, ns_labels) {
            skipped.push(format!("{} (namespace not admitted)", p.name));
            continue;
        }
        if !nodes_compatible(&p.object, pod, &nodes) {
            skipped.push(format!(
                "{} (its nodeSelector conflicts with the pod's node constraints)",
                p.name
            ));
            continue;
        }
        let Ok(u) = p.usable.clone() else {
            skipped.push(format!("{} (invalid spec)", p.name));
            continue;
        };
        let rank = |name: &str, u: &UsablePool| {
            (
                usage.held_by_owner(name),
                u.size().saturating_sub(usage.claimed(name)),
            )
        };
        // `defaults` is sorted by name, so on equal rank the first name stays.
        match chosen.iter().position(|c| c.usable.family() == u.family()) {
            Some(i) if rank(&p.name, &u) <= rank(&chosen[i].name(), &chosen[i].usable) => {}
            Some(i) => {
                chosen[i] = Chosen {
                    pool: p.clone(),
                    usable: u,
                    explicit: None,
                }
            }
            None => chosen.push(Chosen {
                pool: p.clone(),
                usable: u,
                explicit: None,
            }),
        }
    }
    if chosen.is_empty() {
        return Err(Denial::NoDefaultPool {
            why: format!("no default pool fits: {}", skipped.join(", ")),
        });
    }
    // IPv4 first, so the pod's primary address is stable across families.
    chosen.sort_by_key(|c| c.usable.family());
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str, spec: serde_json::Value) -> IPPool {
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap()
    }

    fn pool(name: &str, spec: serde_json::Value) -> Arc<Pool> {
        Arc::new(Pool::parse(Arc::new(object(name, spec))))
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Claimed counts per pool, and the pools where the owner holds a claim.
    struct Usage(Vec<(&'static str, u128)>, Vec<&'static str>);

    impl PoolUsage for Usage {
        fn nodes(&self) -> Vec<NodeLabels> {
            Vec::new()
        }
        fn claimed(&self, pool: &str) -> u128 {
            self.0
                .iter()
                .find(|(p, _)| *p == pool)
                .map_or(0, |(_, n)| *n)
        }
        fn held_by_owner(&self, pool: &str) -> bool {
            self.1.contains(&pool)
        }
    }

    #[allow(non_upper_case_globals)]
    const none_claimed: Usage = Usage(Vec::new(), Vec::new());

    fn empty_pod() -> Pod {
        pod(json!({"containers": []}))
    }

    #[test]
    fn defaults_pick_one_per_family_respecting_namespace_and_nodes() {
        let pools = vec![
            pool(
                "a4",
                json!({"cidr": "10.1.0.0/24", "default": true,
                "nodeSelector": {"matchLabels": {"zone": "a"}}}),
            ),
            pool(
                "b4",
                json!({"cidr": "10.2.0.0/24", "default": true,
                "nodeSelector": {"matchLabels": {"zone": "b"}}}),
            ),
            pool("v6", json!({"cidr": "fd00::/64", "default": true})),
            pool(
                "team",
                json!({"cidr": "10.3.0.0/24", "default": true,
                "namespaceSelector": {"matchLabels": {"team": "x"}}}),
            ),
        ];
        let p = pod(json!({"containers": [], "nodeSelector": {"zone": "b"}}));
        let c = choose(&pools, &p, &labels(&[]), None, None, &none_claimed).unwrap();
        let names: Vec<String> = c.iter().map(Chosen::name).collect();
        assert_eq!(names, ["b4", "v6"]);
        let c = choose(
            &pools,
            &empty_pod(),
            &labels(&[("team", "x")]),
            None,
            None,
            &none_claimed,
        )
        .unwrap();
        assert_eq!(c[0].name(), "a4");
    }

    #[test]
    fn fitting_default_pools_rank_by_owner_then_free_addresses() {
        let pools = vec![
            pool("a", json!({"cidr": "10.1.0.0/24", "default": true})),
            pool("b", json!({"cidr": "10.2.0.0/24", "default": true})),
        ];
        let pick = |usage: Usage| {
            choose(&pools, &empty_pod(), &labels(&[]), None, None, &usage).unwrap()[0].name()
        };
        assert_eq!(
            pick(Usage(vec![], vec![])),
            "a",
            "ties go to the first name"
        );
        assert_eq!(pick(Usage(vec![("a", 1)], vec![])), "b");
        assert_eq!(pick(Usage(vec![("a", 3), ("b", 10)], vec![])), "a");
        assert_eq!(
            pick(Usage(vec![("a", 1)], vec!["a"])),
            "a",
            "the pool of the owner's retained claim wins over free space"
        );
    }

    #[test]
    fn with_known_nodes_a_pool_fits_only_where_a_node_admits_pod_and_pool() {
        let zone_b = object(
            "b4",
            json!({"cidr": "10.2.0.0/24", "default": true,
            "nodeSelector": {"matchLabels": {"zone": "b"}}}),
        );
        let nodes: Vec<NodeLabels> = vec![
            (
                "node-1".into(),
                labels(&[("zone", "a"), ("kubernetes.io/hostname", "node-1")]),
            ),
            (
                "node-2".into(),
                labels(&[("zone", "b"), ("kubernetes.io/hostname", "node-2")]),
            ),
        ];
        let on = |host: &str| {
            pod(json!({"containers": [], "nodeSelector": {"kubernetes.io/hostname": host}}))
        };
        // Label-level reasoning cannot see that node-1 is in zone a; the node list can.
        assert!(nodes_compatible(&zone_b, &on("node-1"), &[]));
        assert!(!nodes_compatible(&zone_b, &on("node-1"), &nodes));
        assert!(nodes_compatible(&zone_b, &on("node-2"), &nodes));
        let by_field = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}]}}}}),
        );
        assert!(nodes_compatible(&zone_b, &by_field, &nodes));
        let gt = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]}}}}),
        );
        assert!(!nodes_compatible(&zone_b, &gt, &nodes));
    }

    #[test]
    fn without_any_fitting_node_labels_decide() {
        struct Nodes;
        impl PoolUsage for Nodes {
            fn nodes(&self) -> Vec<NodeLabels> {
                vec![(
                    "node-1".into(),
                    [("zone".to_string(), "a".to_string())].into(),
                )]
            }
            fn claimed(&self, _: &str) -> u128 {
                0
            }
            fn held_by_owner(&self, _: &str) -> bool {
                false
            }
        }
        let pools = vec![pool(
            "b4",
            json!({"cidr": "10.2.0.0/24", "default": true,
            "nodeSelector": {"matchLabels": {"zone": "b"}}}),
        )];
        // No zone-b node exists yet (an autoscaler may add one): the pool still fits.
        let c = choose(&pools, &empty_pod(), &labels(&[]), None, None, &Nodes).unwrap();
        assert_eq!(c[0].name(), "b4");
    }

    #[test]
    fn required_affinity_terms_are_ored() {
        let pools = vec![pool(
            "a4",
            json!({"cidr": "10.1.0.0/24", "default": true,
            "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}),
        )];
        let aff = |vals: serde_json::Value| {
            pod(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": vals}}}}),
            )
        };
        let ok = aff(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]},
        ]));
        assert!(choose(&pools, &ok, &labels(&[]), None, None, &none_claimed).is_ok());
        let bad = aff(json!([{"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}]));
        let err = choose(&pools, &bad, &labels(&[]), None, None, &none_claimed).unwrap_err();
        assert!(
            err.to_string()
                .contains("conflicts with the pod's node constraints"),
            "{err}"
        );
    }

    #[test]
    fn named_pools_and_explicit_addresses() {
        let pools = vec![
            pool(
                "blue",
                json!({"cidr": "10.20.0.0/24", "gateway": "10.20.0.1"}),
            ),
            pool("blue6", json!({"cidr": "fd00:20::/64"})),
            pool(
                "private",
                json!({"cidr": "10.30.0.0/24",
                "namespaceSelector": {"matchLabels": {"team": "x"}}}),
            ),
        ];
        let p = empty_pod();
        let none = labels(&[]);
        let req: PoolRequest = "blue,blue6".parse().unwrap();
        assert_eq!(
            choose(&pools, &p, &none, Some(&req), None, &none_claimed)
                .unwrap()
                .len(),
            2
        );
        let err = |pr: Option<&str>, ip: Option<&str>| {
            let pr: Option<PoolRequest> = pr.map(|s| s.parse().unwrap());
            let ip: Option<IpRequest> = ip.map(|s| s.parse().unwrap());
            choose(&pools, &p, &none, pr.as_ref(), ip.as_ref(), &none_claimed)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(Some("nope"), None), "pool nope does not exist");
        assert_eq!(
            err(Some("private"), None),
            "this namespace may not use pool private (its namespaceSelector does not admit the namespace)"
        );
        assert_eq!(
            err(Some("blue"), Some("10.20.0.1")),
            "address 10.20.0.1 is not one pool blue hands out (outside its ranges, excluded, or its gateway)"
        );
        assert_eq!(
            err(None, Some("10.30.0.5")),
            "no pool this namespace may use contains 10.30.0.5"
        );
        let c = choose(
            &pools,
            &p,
            &none,
            None,
            Some(&"10.20.0.7".parse().unwrap()),
            &none_claimed,
        )
        .unwrap();
        assert_eq!(
            (c[0].name(), c[0].explicit),
            ("blue".into(), Some("10.20.0.7".parse().unwrap()))
        );
        assert_eq!(
            err(None, None),
            "no default pool: no IPPool has default: true"
        );
    }

    #[test]
    fn pools_of_other_networks_never_serve_the_primary_interface() {
        let pools = vec![
            pool("main", json!({"cidr": "10.20.0.0/24"})),
            pool("side", json!({"cidr": "10.20.0.0/24", "network": "net1"})),
            pool(
                "only-side",
                json!({"cidr": "10.30.0.0/24", "network": "net1"}),
            ),
        ];
        let p = empty_pod();
        let none = labels(&[]);
        let req: PoolRequest = "side".parse().unwrap();
        let ip: IpRequest = "10.20.0.5".parse().unwrap();
        let e = choose(&pools, &p, &none, Some(&req), Some(&ip), &none_claimed).unwrap_err();
        assert_eq!(e.metric_label(), "other_network", "{e}");
        // An address both networks hold goes to the primary network's pool.
        let c = choose(&pools, &p, &none, None, Some(&ip), &none_claimed).unwrap();
        assert_eq!(c[0].name(), "main");
        let ip: IpRequest = "10.30.0.5".parse().unwrap();
        let e = choose(&pools, &p, &none, None, Some(&ip), &none_claimed).unwrap_err();
        assert_eq!(e.metric_label(), "other_network", "{e}");
    }
}
