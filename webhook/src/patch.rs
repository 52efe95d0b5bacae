//! The JSON patch answering /mutate: the `pinip.io/allocation` annotation and, when a pool
//! has a nodeSelector, a required node affinity merged into the pod's own (every existing
//! term gains the pool's requirements; nothing of the pod's is replaced).

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use pinip_api::annotations::{ALLOCATION, Allocation};

/// The patch from `pod` to `pod` + allocation + node requirements.
pub fn mutation(
    pod: &Pod,
    allocation: &Allocation,
    node_reqs: &[NodeSelectorRequirement],
) -> Result<json_patch::Patch, serde_json::Error> {
    let before = serde_json::to_value(pod)?;
    let mut after = pod.clone();
    after
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ALLOCATION.to_string(), allocation.render());
    if !node_reqs.is_empty() {
        require_nodes(&mut after, node_reqs);
    }
    Ok(json_patch::diff(&before, &serde_json::to_value(&after)?))
}

fn require_nodes(pod: &mut Pod, reqs: &[NodeSelectorRequirement]) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let exprs = term.match_expressions.get_or_insert_with(Vec::new);
        for r in reqs {
            if !exprs.contains(r) {
                exprs.push(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alloc() -> Allocation {
        r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.0.0.5/24","pool":"p","claim":"10-0-0-5"}]}]}"#
            .parse()
            .unwrap()
    }

    fn apply(pod: &Pod, patch: &json_patch::Patch) -> Pod {
        let mut v = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut v, patch).unwrap();
        serde_json::from_value(v).unwrap()
    }

    fn zone_a() -> Vec<NodeSelectorRequirement> {
        vec![NodeSelectorRequirement {
            key: "zone".into(),
            operator: "In".into(),
            values: Some(vec!["a".into()]),
        }]
    }

    #[test]
    fn adds_annotation_to_pod_without_annotations() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .unwrap();
        let out = apply(&pod, &mutation(&pod, &alloc(), &[]).unwrap());
        assert_eq!(
            out.metadata.annotations.unwrap()[ALLOCATION],
            alloc().render()
        );
        assert!(out.spec.unwrap().affinity.is_none());
    }

    #[test]
    fn merges_node_requirements_into_every_existing_term() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {"keep": "me"}},
            "spec": {"containers": [], "affinity": {
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]}}}}})).unwrap();
        let out = apply(&pod, &mutation(&pod, &alloc(), &zone_a()).unwrap());
        assert_eq!(out.metadata.annotations.as_ref().unwrap()["keep"], "me");
        let aff = out.spec.unwrap().affinity.unwrap();
        assert!(aff.pod_anti_affinity.is_some(), "other affinity kept");
        let terms = aff
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].match_expressions.as_ref().unwrap().len(), 2);
        assert_eq!(terms[1].match_expressions.as_ref().unwrap(), &zone_a());
        assert!(terms[1].match_fields.is_some(), "matchFields kept");
    }
}
