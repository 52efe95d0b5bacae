//! The admission webhook end to end: kube-apiserver calls two real webhook replicas (behind a
//! loopback load balancer) by URL; the real scheduler places pods; the node agents run
//! Debian's bridge plugin delegating IPAM to the real `pinip` CNI plugin.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::{ClaimPhase, IPClaim, IPPool};
use pinip_integration::pinip::{self, Webhooks};
use pinip_integration::suite::Suite;
use pinip_integration::wait::{pod_running, wait_for};
use pinip_integration::{Bed, BedOptions, Ipam};
use serde_json::{Value, json};

const NOWHERE: &str = "pinip.test/nowhere";

fn pod(name: &str, annotations: Value, spec_extra: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.invalid/none:1"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations}, "spec": spec,
    }))
    .expect("pod")
}

/// A pod spec fragment that no node satisfies, for pods whose admission is all we test.
fn unschedulable() -> Value {
    json!({"nodeSelector": {NOWHERE: "yes"}})
}

fn allocation(p: &Pod) -> Result<Allocation> {
    let raw = p
        .annotations()
        .get(ALLOCATION)
        .with_context(|| format!("pod {} has no allocation", p.name_any()))?;
    Ok(raw.parse()?)
}

fn first_ip(p: &Pod) -> Result<String> {
    Ok(allocation(p)?.interfaces[0].ips[0]
        .address
        .addr()
        .to_string())
}

async fn denied(api: &Api<Pod>, p: &Pod) -> String {
    match api.create(&PostParams::default(), p).await {
        Ok(_) => panic!("pod {} was admitted", p.name_any()),
        Err(kube::Error::Api(s)) => s.message,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn node_zone(client: &Client, node: &str) -> Result<String> {
    let n = Api::<Node>::all(client.clone()).get(node).await?;
    Ok(n.labels()["topology.kubernetes.io/zone"].clone())
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// The pod's address as configured inside its network namespace by the CNI chain.
async fn configured(bed: &Bed, p: &Pod) -> Result<Vec<String>> {
    bed.pod_addresses(p, "eth0").await
}

fn main() {
    pinip_integration::cases!(
        Suite::new(start),
        bare_pods_get_their_zone_address_configured_by_containerd,
        generate_name_pod_is_admitted_and_keeps_its_claim,
        zoned_deployment_lands_in_its_zone,
        statefulset_pod_recreated_keeps_its_address,
        concurrent_pods_get_distinct_addresses,
        exhausted_pool_denies_and_cannot_be_deleted,
        supplied_or_changed_allocations_denied,
        overlapping_pool_denied,
        dry_run_creates_no_claim,
        only_pinip_writes_claims,
        pinip_requests_run_under_its_flowschema,
        denials_and_decisions_are_counted,
    )
    .run()
}

/// What every case shares. Dropped in this order: webhooks, then the bed.
struct Hooked {
    hooks: Webhooks,
    client: Client,
    bed: Bed,
}

/// The bed every case runs on: two webhook replicas by URL, four pools, containerd on both
/// zone-a nodes.
async fn start() -> Result<Hooked> {
    let bin_dir = pinip::bin_dir()?;
    let bed = Bed::start(BedOptions {
        ipam: Ipam::Pinip { bin_dir },
        // node-3 (zone a) omits the pod-annotations capability: pinip reads the pod instead.
        no_capability_nodes: vec!["node-3".into()],
        // Both zone-a nodes run a real containerd (with and without the capability).
        containerd_nodes: vec!["node-1".into(), "node-3".into()],
        ..Default::default()
    })
    .await?;
    pinip::install(&bed)?;
    let hooks = pinip::start_webhooks(&bed, 2, &["--cooldown=30s"]).await?;
    let client = bed.client();
    pinip::register(&client, &hooks, "pinip").await?;
    let pools = [
        (
            "zone-a",
            json!({"cidr": "10.50.0.0/24", "gateway": "10.50.0.1", "default": true,
            "routes": [{"dst": "0.0.0.0/0"}],
            "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "a"}}}),
        ),
        (
            "zone-b",
            json!({"cidr": "10.51.0.0/24", "gateway": "10.51.0.1",
            "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "b"}}}),
        ),
        (
            "big",
            json!({"cidr": "10.60.0.0/22", "gateway": "10.60.0.1"}),
        ),
        ("tiny", json!({"cidr": "10.70.0.0/30"})),
    ];
    for (name, spec) in pools {
        pinip::apply_pool(&client, name, spec).await?;
    }
    // Both replicas must see the pools before the first decision.
    wait_for(
        "pools in both webhooks' metrics",
        Duration::from_secs(20),
        || async {
            for port in &hooks.metrics_ports {
                if !pinip::webhook_get(*port, "/metrics")
                    .await?
                    .contains("pool=\"tiny\"")
                {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    Ok(Hooked { hooks, client, bed })
}

async fn bare_pods_get_their_zone_address_configured_by_containerd(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("bare", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A bare pod pinned to a zone-a node gets an address of the zone-a default pool, and has
    // exactly that address configured in its sandbox by containerd's CNI call: on node-1 pinip
    // reads the annotation from the runtime, on node-3 from the API server.
    for node in ["node-1", "node-3"] {
        let name = format!("bare-{node}");
        let p = pod(
            &name,
            json!({}),
            json!({"nodeSelector": {"kubernetes.io/hostname": node}}),
        );
        let created = pods.create(&PostParams::default(), &p).await?;
        let a = allocation(&created)?;
        let ip = &a.interfaces[0].ips[0];
        assert_eq!(ip.pool, "zone-a");
        assert!(ip.address.to_string().starts_with("10.50.0."), "{ip:?}");
        let affinity = serde_json::to_string(&created.spec.as_ref().unwrap().affinity)?;
        assert!(
            affinity.contains("topology.kubernetes.io/zone"),
            "{affinity}"
        );
        let p = pod_running(&pods, &name).await?;
        assert_eq!(node_of(&p), node);
        let pod_ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        assert_eq!(pod_ip, ip.address.addr().to_string());
        assert_eq!(
            configured(bed, &p).await?,
            vec![ip.address.to_string()],
            "{node}"
        );
        let claim = claims.get(&ip.claim).await?;
        assert_eq!(claim.spec.address, ip.address.to_string());
        assert_eq!(claim.spec.owner.kind, "Pod");
    }
    Ok(())
}

async fn generate_name_pod_is_admitted_and_keeps_its_claim(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("generate", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A bare pod that has only generateName at admission is admitted and keeps its claim.
    let generated: Pod = serde_json::from_value(json!({"metadata": {"generateName": "gen-"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}], "nodeSelector": {NOWHERE: "yes"}}}))?;
    let generated = pods.create(&PostParams::default(), &generated).await?;
    let claim = claims
        .get(&allocation(&generated)?.interfaces[0].ips[0].claim)
        .await?;
    assert_eq!(
        (
            claim.spec.owner.kind.as_str(),
            claim.spec.owner.name.as_str()
        ),
        ("Pod", "gen-")
    );
    Ok(())
}

async fn zoned_deployment_lands_in_its_zone(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("zoned", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A pool with a zone nodeSelector: every pod lands in that zone (real scheduler).
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "zoned"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "zoned"}},
            "template": {"metadata": {"labels": {"app": "zoned"}, "annotations": {"pinip.io/pool": "zone-b"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}}}}))?;
    deploys.create(&PostParams::default(), &d).await?;
    let zoned = wait_for("4 zoned pods Running", Duration::from_secs(60), || async {
        let l = pods
            .list(&ListParams::default().labels("app=zoned"))
            .await?
            .items;
        let up = l
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok((up == 4).then_some(l))
    })
    .await?;
    for p in &zoned {
        assert_eq!(
            node_zone(client, &node_of(p)).await?,
            "b",
            "{}",
            p.name_any()
        );
        assert!(first_ip(p)?.starts_with("10.51.0."));
        assert_eq!(configured(bed, p).await?.len(), 1);
        let claim = claims
            .get(&allocation(p)?.interfaces[0].ips[0].claim)
            .await?;
        assert_eq!(
            (
                claim.spec.owner.kind.as_str(),
                claim.spec.owner.name.as_str()
            ),
            ("Deployment", "zoned")
        );
    }
    Ok(())
}

async fn statefulset_pod_recreated_keeps_its_address(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("stateful", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A StatefulSet pod deleted and recreated gets the same address.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}}}}))?;
    sets.create(&PostParams::default(), &s).await?;
    let before = pod_running(&pods, "db-1").await?;
    let ip_before = first_ip(&before)?;
    pods.delete("db-1", &DeleteParams::default()).await?;
    let after = wait_for(
        "db-1 recreated and Running",
        Duration::from_secs(60),
        || async {
            let p = pods.get_opt("db-1").await?;
            Ok(p.filter(|p| {
                p.uid() != before.uid()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }))
        },
    )
    .await?;
    assert_eq!(first_ip(&after)?, ip_before);
    assert_eq!(
        configured(bed, &after).await?,
        vec![allocation(&after)?.interfaces[0].ips[0].address.to_string()]
    );
    let claim = claims
        .get(&allocation(&after)?.interfaces[0].ips[0].claim)
        .await?;
    assert_eq!(claim.spec.owner.ordinal, Some(1));
    Ok(())
}

async fn concurrent_pods_get_distinct_addresses(s: &Hooked) -> Result<()> {
    let (bed, hooks, client) = (&s.bed, &s.hooks, &s.client);
    let ns = bed
        .temp_namespace("concurre", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // 200 pods created concurrently through two replicas get 200 distinct addresses.
    let conflicts_before = conflict_total(hooks).await?;
    let created: Vec<Pod> = futures::stream::iter(0..200)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p = pod(
                    &format!("many-{i}"),
                    json!({"pinip.io/pool": "big"}),
                    unschedulable(),
                );
                pods.create(&PostParams::default(), &p).await
            }
        })
        .buffer_unordered(50)
        .try_collect()
        .await?;
    let ips: BTreeSet<String> = created.iter().map(first_ip).collect::<Result<_>>()?;
    assert_eq!(ips.len(), 200, "duplicate addresses among 200 pods");
    let per_replica: Vec<usize> = hooks
        .lb
        .counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    assert!(
        per_replica.iter().all(|c| *c > 0),
        "a replica got no connection: {per_replica:?}"
    );
    let big_claims = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.pool == "big")
        .count();
    assert_eq!(big_claims, 200);
    // Deleting a pool with live claims is denied, naming how many.
    let err = Api::<IPPool>::all(client.clone())
        .delete("big", &DeleteParams::default())
        .await
        .expect_err("delete admitted");
    assert!(
        err.to_string().contains("200 addresses are still claimed"),
        "{err}"
    );
    eprintln!(
        "200 concurrent pods: connections per replica {per_replica:?}, 409 retries {}",
        conflict_total(hooks).await? - conflicts_before
    );
    Ok(())
}

async fn exhausted_pool_denies_and_cannot_be_deleted(s: &Hooked) -> Result<()> {
    let (bed, hooks, client) = (&s.bed, &s.hooks, &s.client);
    let ns = bed
        .temp_namespace("exhauste", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let exhausted_before = counter(
        hooks,
        "pinip_webhook_denials_total{reason=\"pool_exhausted\"}",
    )
    .await?;
    // An exhausted pool denies creation, naming the pod, the pool and the reason.
    for i in 0..2 {
        pods.create(
            &PostParams::default(),
            &pod(
                &format!("tiny-{i}"),
                json!({"pinip.io/pool": "tiny"}),
                unschedulable(),
            ),
        )
        .await?;
    }
    let msg = denied(
        &pods,
        &pod("tiny-2", json!({"pinip.io/pool": "tiny"}), unschedulable()),
    )
    .await;
    assert!(
        msg.contains(&format!(
            "pinip: pod {ns}/tiny-2 (pool tiny): pool tiny is exhausted: all 2 addresses are in use"
        )),
        "{msg}"
    );
    assert_eq!(
        counter(
            hooks,
            "pinip_webhook_denials_total{reason=\"pool_exhausted\"}"
        )
        .await?,
        exhausted_before + 1.0,
        "the denial is counted"
    );
    // Deleting a pool with live claims is denied.
    let err = Api::<IPPool>::all(client.clone())
        .delete("tiny", &DeleteParams::default())
        .await
        .expect_err("delete admitted");
    assert!(
        err.to_string().contains("2 addresses are still claimed"),
        "{err}"
    );
    Ok(())
}

async fn supplied_or_changed_allocations_denied(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("supplied", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = pods
        .create(
            &PostParams::default(),
            &pod("owner", json!({"pinip.io/pool": "zone-b"}), unschedulable()),
        )
        .await?;
    // A user-supplied allocation is denied, in enabled and in other namespaces.
    let spoof = json!({ALLOCATION: allocation(&before)?.render()});
    let msg = denied(&pods, &pod("spoof", spoof.clone(), unschedulable())).await;
    assert!(
        msg.contains("pinip.io/allocation is written only by the pinip webhook"),
        "{msg}"
    );
    let plain_ns = bed.temp_namespace("plain", json!({})).await?;
    let plain: Api<Pod> = Api::namespaced(client.clone(), &plain_ns);
    let msg = denied(&plain, &pod("spoof", spoof, unschedulable())).await;
    assert!(
        msg.contains("pinip.io/allocation is written only by the pinip webhook"),
        "{msg}"
    );
    // ... and so is changing a pod's pinip annotations after creation.
    let change = json!({"metadata": {"annotations": {"pinip.io/pool": "zone-a"}}});
    let err = pods
        .patch("owner", &PatchParams::default(), &Patch::Merge(change))
        .await
        .expect_err("annotation change admitted");
    assert!(
        err.to_string()
            .contains("pinip.io/ annotations cannot change after creation"),
        "{err}"
    );
    // A pod in a namespace that did not opt in, without annotations, passes untouched.
    let untouched = plain
        .create(
            &PostParams::default(),
            &pod("untouched", json!({}), unschedulable()),
        )
        .await?;
    assert!(untouched.annotations().get(ALLOCATION).is_none());
    Ok(())
}

async fn overlapping_pool_denied(s: &Hooked) -> Result<()> {
    let client = &s.client;
    // An overlapping IPPool is denied.
    let pools: Api<IPPool> = Api::all(client.clone());
    let overlap: IPPool =
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": "overlap"}, "spec": {"cidr": "10.50.0.0/25"}}))?;
    let err = pools
        .create(&PostParams::default(), &overlap)
        .await
        .expect_err("overlap admitted");
    assert!(err.to_string().contains("overlaps pool zone-a"), "{err}");
    Ok(())
}

async fn dry_run_creates_no_claim(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("dry", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A dry-run creation is decided but creates no claim.
    let count = claims.list(&ListParams::default()).await?.items.len();
    let dry = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod("dry", json!({"pinip.io/pool": "big"}), unschedulable()),
        )
        .await?;
    assert!(first_ip(&dry)?.starts_with("10.60."));
    assert_eq!(
        claims.list(&ListParams::default()).await?.items.len(),
        count
    );
    Ok(())
}

async fn only_pinip_writes_claims(s: &Hooked) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("only", json!({"pinip.io/enabled": "true"}))
        .await?;
    let claims: Api<IPClaim> = Api::all(client.clone());
    // Only pinip's own identities write IPClaims (ValidatingAdmissionPolicy); the admin may not.
    let forged: IPClaim =
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
        "metadata": {"name": "10-60-3-250"}, "spec": {"pool": "big", "address": "10.60.3.250/22",
        "owner": {"kind": "Pod", "namespace": ns, "name": "thief"}}}))?;
    let err = claims
        .create(&PostParams::default(), &forged)
        .await
        .expect_err("forged claim admitted");
    assert!(
        err.to_string()
            .contains("only pinip service accounts write them"),
        "{err}"
    );
    // ... nor change, re-status or delete one that exists.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owner = pods
        .create(
            &PostParams::default(),
            &pod("owner", json!({"pinip.io/pool": "zone-b"}), unschedulable()),
        )
        .await?;
    let existing = allocation(&owner)?.interfaces[0].ips[0].claim.clone();
    let steal = json!({"spec": {"pod": {"name": "thief"}}});
    let status = json!({"status": {"phase": "Released"}});
    let attempts = [
        (
            "update",
            claims
                .patch(&existing, &PatchParams::default(), &Patch::Merge(&steal))
                .await
                .map(|_| ()),
        ),
        (
            // Status is part of the claim (no status subresource): the same rule covers it.
            "status",
            claims
                .patch(&existing, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(|_| ()),
        ),
        (
            "delete",
            claims
                .delete(&existing, &DeleteParams::default())
                .await
                .map(|_| ()),
        ),
    ];
    for (what, r) in attempts {
        let err = r.expect_err(what).to_string();
        assert!(
            err.contains("only pinip service accounts write them"),
            "{what}: {err}"
        );
    }
    // The webhook's own identity writes claims but not their status (no status subresource:
    // the policy keeps the phase the binder's): neither on an existing claim nor at creation.
    let kubeconfig = bed.identity_kubeconfig(
        &bed.dir.join("only-webhook.kubeconfig"),
        pinip::WEBHOOK_USER,
        Some("system:serviceaccounts"),
    )?;
    let as_webhook: Api<IPClaim> =
        Api::all(pinip_integration::controlplane::client_for(&kubeconfig).await?);
    let mut released = forged.clone();
    released.status = Some(pinip_api::IPClaimStatus {
        phase: Some(ClaimPhase::Released),
        ..Default::default()
    });
    let attempts = [
        (
            "status patch",
            as_webhook
                .patch(&existing, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(|_| ()),
        ),
        (
            "create with a status",
            as_webhook
                .create(&PostParams::default(), &released)
                .await
                .map(|_| ()),
        ),
    ];
    for (what, r) in attempts {
        let err = r.expect_err(what).to_string();
        assert!(err.contains("only the binder writes it"), "{what}: {err}");
    }
    let kept = claims.get(&existing).await?;
    assert_ne!(kept.phase(), ClaimPhase::Released, "the phase changed");
    Ok(())
}

async fn pinip_requests_run_under_its_flowschema(s: &Hooked) -> Result<()> {
    let client = &s.client;
    // pinip's API calls run under its FlowSchema, at the controllers' priority level.
    let apf = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let dispatched = apf
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_dispatched_requests_total{")
                && l.contains("flow_schema=\"pinip\"")
                && l.contains("priority_level=\"workload-high\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(dispatched > 0.0, "no request under FlowSchema pinip");
    Ok(())
}

async fn denials_and_decisions_are_counted(s: &Hooked) -> Result<()> {
    let (bed, hooks, client) = (&s.bed, &s.hooks, &s.client);
    let ns = bed
        .temp_namespace("denials", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Denials and decisions are counted, by reason, in either replica.
    let denials_before = counter(
        hooks,
        "pinip_webhook_denials_total{reason=\"unknown_pool\"}",
    )
    .await?;
    let decisions_before = counter(hooks, "pinip_webhook_decision_seconds_count").await?;
    denied(
        &pods,
        &pod("ghost", json!({"pinip.io/pool": "nope"}), unschedulable()),
    )
    .await;
    pods.create(
        &PostParams::default(),
        &pod(
            "decided",
            json!({"pinip.io/pool": "zone-b"}),
            unschedulable(),
        ),
    )
    .await?;
    let denials = counter(
        hooks,
        "pinip_webhook_denials_total{reason=\"unknown_pool\"}",
    )
    .await?;
    let decisions = counter(hooks, "pinip_webhook_decision_seconds_count").await?;
    assert_eq!(
        denials,
        denials_before + 1.0,
        "unknown_pool denials counted"
    );
    // At least: a controller may create a pod of an earlier case's workload meanwhile.
    assert!(decisions >= decisions_before + 2.0, "decisions counted");
    Ok(())
}

/// The sum over both replicas of the samples whose line starts with `prefix`.
async fn counter(hooks: &Webhooks, prefix: &str) -> Result<f64> {
    let mut total = 0.0;
    for port in &hooks.metrics_ports {
        let m = pinip::webhook_get(*port, "/metrics").await?;
        total += m
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

async fn conflict_total(hooks: &Webhooks) -> Result<u64> {
    let mut total = 0;
    for port in &hooks.metrics_ports {
        let m = pinip::webhook_get(*port, "/metrics").await?;
        total += m
            .lines()
            .find(|l| l.starts_with("pinip_webhook_claim_conflicts_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    Ok(total)
}
