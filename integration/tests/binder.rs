//! The binder end to end: the real `pinip-binder` (one replica, as a process with the
//! binder's identity) against kube-apiserver, kube-controller-manager (StatefulSet,
//! Deployment, ReplicaSet and garbage-collector controllers) and kube-scheduler, with the real
//! webhook deciding addresses and the node agents running the CNI chain: bind, follow, scale,
//! release and reclaim, one case per test. Leadership is `binder_failover.rs`.

mod binder_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, ResourceQuota};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pinip_api::annotations::ALLOCATION;
use pinip_api::{ClaimPhase, IPClaim, IPPool};
use pinip_integration::pinip;
use pinip_integration::wait::{pods_running, wait_for};
use serde_json::json;

use binder_common::*;
use pinip_integration::stack::Stack;
use pinip_integration::suite::Suite;

fn main() {
    pinip_integration::cases!(
        Suite::new(start),
        statefulset_claims_follow_scale_and_go,
        spoofed_allocation_is_a_reported_conflict,
        deployment_claims_go_with_it,
        retain_app_claims_survive_pods_and_go_with_the_deployment,
        rejected_pods_reservations_are_reclaimed,
        pool_status_and_metrics,
        binds_in_one_write_and_with_an_older_crd,
    )
    .run()
}

async fn start() -> Result<Stack> {
    let (bed, hooks, binders, client) = setup(1, &["--reclaim-grace=5s"]).await?;
    Ok(Stack {
        hooks,
        binders,
        client,
        bed,
    })
}

async fn statefulset_claims_follow_scale_and_go(s: &Stack) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("bind", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    // A StatefulSet of 3: every claim records its pod and node.
    sets.create(&PostParams::default(), &statefulset("db", 3)?)
        .await?;
    let db = pods_running(&pods, "app=db", 3).await?;
    let mut addresses = BTreeMap::new();
    for p in &db {
        let c = bound(&claims, p).await?;
        assert_eq!(c.spec.owner.kind, "StatefulSet");
        let workload = c
            .annotations()
            .get("pinip.io/workload")
            .cloned()
            .unwrap_or_default();
        assert!(workload.contains("\"kind\":\"StatefulSet\""), "{workload}");
        addresses.insert(p.name_any(), first(p)?);
    }
    let bound_events = events(client, &ns, "IPBound").await?;
    assert!(!bound_events.is_empty(), "no IPBound event");
    // Delete pod 1 with its node cordoned: the recreated pod lands elsewhere with the same
    // address; the claim follows its uid and node.
    let old = pods.get("db-1").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let old_node = node_of(&old).context("db-1 has no node")?;
    let cordon = |on: bool| Patch::Merge(json!({"spec": {"unschedulable": on}}));
    nodes
        .patch(&old_node, &PatchParams::default(), &cordon(true))
        .await?;
    pods.delete("db-1", &DeleteParams::default()).await?;
    let deleted = Instant::now();
    let new = wait_for(
        "db-1 recreated and Running",
        Duration::from_secs(60),
        || async {
            let p = pods.get_opt("db-1").await?;
            Ok(p.filter(|p| p.uid() != old.uid() && phase(p) == Some("Running")))
        },
    )
    .await;
    // Uncordoned before anything is asserted: later cases schedule on this node.
    nodes
        .patch(&old_node, &PatchParams::default(), &cordon(false))
        .await?;
    let new = new?;
    assert_eq!(first(&new)?, addresses["db-1"]);
    assert_ne!(node_of(&new), Some(old_node.clone()));
    bound(&claims, &new).await?;
    eprintln!(
        "db-1 recreated on {:?} (was {:?}); claim followed {:?} after the delete",
        node_of(&new),
        node_of(&old),
        deleted.elapsed()
    );

    // Scale 3 → 1: the ordinals' claims stay, Released, without pod or node.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await?;
    for ordinal in ["db-1", "db-2"] {
        let claim = addresses[ordinal].0.clone();
        wait_for(
            &format!("claim {claim} Released"),
            Duration::from_secs(60),
            || async {
                let c = claims.get_opt(&claim).await?;
                Ok(c.filter(|c| {
                    c.phase() == ClaimPhase::Released
                        && c.spec.pod.is_none()
                        && c.spec.node.is_none()
                }))
            },
        )
        .await?;
    }
    // ... and 1 → 3 gives the pods their addresses back.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await?;
    for p in pods_running(&pods, "app=db", 3).await? {
        assert_eq!(first(&p)?, addresses[&p.name_any()], "{}", p.name_any());
        bound(&claims, &p).await?;
    }

    // Deleting the StatefulSet removes its claims.
    let db_claims: Vec<String> = addresses.values().map(|(c, _)| c.clone()).collect();
    sets.delete("db", &DeleteParams::default()).await?;
    let took = gone(&claims, &db_claims, Duration::from_secs(60)).await?;
    eprintln!("StatefulSet deleted: its 3 claims gone after {took:?}");
    Ok(())
}

async fn spoofed_allocation_is_a_reported_conflict(s: &Stack) -> Result<()> {
    let (bed, binders, client) = (&s.bed, &s.binders, &s.client);
    let ns = bed
        .temp_namespace("bind", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A pod naming another owner's claim is a conflict: a Warning event and a metric, and the
    // claim stays with its pod. (kube-system is outside the webhooks' scope, so nothing stops
    // the spoofed allocation there.)
    pods.create(&PostParams::default(), &bare_pod("held")?)
        .await?;
    let db0 = pods_running(&pods, "churn=yes", 1)
        .await?
        .pop()
        .context("pod held")?;
    bound(&claims, &db0).await?;
    let spoof_name = format!("spoof-{}", std::process::id());
    let spoof: Pod = serde_json::from_value(json!({
        "metadata": {"name": spoof_name, "annotations": {ALLOCATION: allocation(&db0)?.render()}},
        "spec": {"containers": [{"name": "app", "image": IMAGE}],
            "nodeSelector": {"pinip.test/nowhere": "yes"}}}))?;
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    system.create(&PostParams::default(), &spoof).await?;
    let conflict = wait_for(
        "an IPConflict event on the spoofing pod",
        Duration::from_secs(20),
        || async {
            Ok(events(client, "kube-system", "IPConflict")
                .await?
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(spoof_name.as_str())
                }))
        },
    )
    .await;
    // Removed before anything is asserted: later cases must not see it.
    system.delete(&spoof_name, &DeleteParams::default()).await?;
    let conflict = conflict?;
    assert_eq!(conflict.type_.as_deref(), Some("Warning"));
    eprintln!("conflict reported: {}", conflict.note.unwrap_or_default());
    assert!(
        binders
            .metric(0, "pinip_binder_conflicts_total{reason=\"not_holder\"}")
            .await?
            >= 1.0
    );
    bound(&claims, &db0).await?;

    Ok(())
}

async fn deployment_claims_go_with_it(s: &Stack) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("bind", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // A Deployment of 5 deleted: all its claims are gone within 10 s.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}}}}))?;
    deploys.create(&PostParams::default(), &d).await?;
    let web = pods_running(&pods, "app=web", 5).await?;
    let mut web_claims = Vec::new();
    for p in &web {
        let c = bound(&claims, p).await?;
        assert_eq!(
            (c.spec.owner.kind.as_str(), c.spec.owner.name.as_str()),
            ("Deployment", "web")
        );
        web_claims.push(c.name_any());
    }
    deploys.delete("web", &DeleteParams::default()).await?;
    let took = gone(&claims, &web_claims, Duration::from_secs(10)).await?;
    eprintln!("Deployment of 5 deleted: its claims gone after {took:?}");
    assert!(!events(client, &ns, "IPReleased").await?.is_empty());
    Ok(())
}

async fn retain_app_claims_survive_pods_and_go_with_the_deployment(s: &Stack) -> Result<()> {
    let (bed, client) = (&s.bed, &s.client);
    let ns = bed
        .temp_namespace("bind", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // retain app: a Deployment's claims record the Deployment behind the ReplicaSet, survive
    // their pods (Released, or taken again by a replacement pod), and go with the Deployment.
    let keep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "keep"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "keep"}},
            "template": {"metadata": {"labels": {"app": "keep"}, "annotations": {"pinip.io/retain": "app"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}}}}))?;
    deploys.create(&PostParams::default(), &keep).await?;
    let kept = pods_running(&pods, "app=keep", 2).await?;
    for p in &kept {
        let c = bound(&claims, p).await?;
        let workload = c
            .annotations()
            .get("pinip.io/workload")
            .cloned()
            .unwrap_or_default();
        assert!(
            workload.contains("\"kind\":\"Deployment\"") && workload.contains("\"name\":\"keep\""),
            "{workload}"
        );
    }
    let (first_claim, _) = first(&kept[0])?;
    pods.delete(&kept[0].name_any(), &DeleteParams::default())
        .await?;
    let replacement = pods_running(&pods, "app=keep", 2).await?;
    for p in &replacement {
        bound(&claims, p).await?;
    }
    wait_for(
        "the first pod's claim kept for the Deployment",
        Duration::from_secs(20),
        || async {
            let c = claims
                .get_opt(&first_claim)
                .await?
                .context("retained claim deleted")?;
            let held = replacement
                .iter()
                .any(|p| c.spec.pod.as_ref().map(|r| r.uid.as_str()) == p.uid().as_deref());
            Ok((held || c.phase() == ClaimPhase::Released).then_some(()))
        },
    )
    .await?;
    let keep_claims: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.owner.namespace == ns && c.spec.owner.name == "keep")
        .map(|c| c.name_any())
        .collect();
    assert!(keep_claims.len() >= 2, "{keep_claims:?}");
    deploys.delete("keep", &DeleteParams::default()).await?;
    let took = gone(&claims, &keep_claims, Duration::from_secs(20)).await?;
    eprintln!(
        "retain-app Deployment deleted: its {} claims gone after {took:?}",
        keep_claims.len()
    );
    Ok(())
}

async fn rejected_pods_reservations_are_reclaimed(s: &Stack) -> Result<()> {
    let (bed, binders, client) = (&s.bed, &s.binders, &s.client);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let reclaimed_before = binders.metric(0, "pinip_binder_reclaimed_total").await?;
    // Pods rejected after the webhook decided (ResourceQuota runs after mutating webhooks):
    // a bare pod's reservation is deleted after the grace period, a StatefulSet ordinal's is
    // Released and kept while the StatefulSet exists.
    let qns = bed
        .temp_namespace("quota", json!({"pinip.io/enabled": "true"}))
        .await?;
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )?;
    Api::<ResourceQuota>::namespaced(client.clone(), &qns)
        .create(&PostParams::default(), &quota)
        .await?;
    let qpods: Api<Pod> = Api::namespaced(client.clone(), &qns);
    let before: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    let err = qpods
        .create(&PostParams::default(), &bare_pod("rejected")?)
        .await
        .expect_err("pod admitted despite the quota");
    let rejected = Instant::now();
    assert!(err.to_string().contains("quota"), "{err}");
    let orphan = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|c| !before.contains(&c.name_any()) && c.spec.owner.namespace == qns)
        .context("the webhook created no claim for the rejected pod")?;
    assert_eq!(orphan.phase(), ClaimPhase::Reserved);
    let qsets: Api<StatefulSet> = Api::namespaced(client.clone(), &qns);
    qsets
        .create(&PostParams::default(), &statefulset("q", 1)?)
        .await?;
    gone(&claims, &[orphan.name_any()], Duration::from_secs(30)).await?;
    let reclaim_after = rejected.elapsed();
    eprintln!(
        "rejected pod's reservation reclaimed {reclaim_after:?} after the rejection (grace 5s)"
    );
    assert!(
        reclaim_after >= Duration::from_secs(4),
        "reclaimed before the grace period"
    );
    assert!(binders.metric(0, "pinip_binder_reclaimed_total").await? >= reclaimed_before + 1.0);
    // The StatefulSet's q-0 is refused by the quota on every retry: its ordinal's claim stays
    // reserved for q-0 while the controller retries, is never promoted to a Released member of
    // the set (it was never bound), and goes with the StatefulSet.
    let q0 = wait_for("q-0's reservation", Duration::from_secs(30), || async {
        let l = claims.list(&ListParams::default()).await?.items;
        Ok(l.into_iter()
            .find(|c| c.spec.owner.namespace == qns && c.spec.owner.ordinal == Some(0)))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    if let Some(c) = claims.get_opt(&q0.name_any()).await? {
        assert_ne!(
            c.phase(),
            ClaimPhase::Released,
            "a claim that was never bound became a retained member"
        );
    }
    qsets.delete("q", &DeleteParams::default()).await?;
    gone(&claims, &[q0.name_any()], Duration::from_secs(30)).await?;
    Ok(())
}

async fn pool_status_and_metrics(s: &Stack) -> Result<()> {
    let (bed, binders, client) = (&s.bed, &s.binders, &s.client);
    let ns = bed
        .temp_namespace("bind", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    // Pool status: counts recomputed from the claims; overlapping pools flagged.
    wait_for(
        "pool status to match the claims",
        Duration::from_secs(20),
        || pool_status_correct(client),
    )
    .await?;
    let pools: Api<IPPool> = Api::all(client.clone());
    for name in ["ov-a", "ov-b"] {
        let p = pools.get(name).await?;
        let cond = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Overlapping"))
            .with_context(|| format!("pool {name} has no Overlapping condition"))?;
        assert_eq!(cond.status, "True", "{cond:?}");
    }
    let main = pools.get("main").await?;
    let exhausted = main
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Exhausted")
        .unwrap();
    assert_eq!(exhausted.status, "False");
    let table = pinip::kubectl(bed, &["get", "ipp", "main"])?;
    assert!(
        table.contains("ALLOCATED") && table.contains("TOTAL") && table.contains(" 253 "),
        "{table}"
    );

    // Metrics (of a pod bound in this case).
    let reconciles_before = binders
        .metric(0, "pinip_binder_reconciles_total{result=\"ok\"}")
        .await?;
    pods.create(&PostParams::default(), &bare_pod("counted")?)
        .await?;
    let p = pods_running(&pods, "churn=yes", 1)
        .await?
        .pop()
        .context("pod counted")?;
    bound(&claims, &p).await?;
    assert!(
        binders
            .metric(0, "pinip_binder_reconciles_total{result=\"ok\"}")
            .await?
            > reconciles_before
    );
    assert_eq!(binders.metric(0, "pinip_binder_leader").await?, 1.0);
    let text = binders.get(0, "/metrics").await?;
    assert!(
        text.contains("pinip_binder_claims{phase=\"Bound\"}"),
        "{text}"
    );
    Ok(())
}

/// Creates pod `name`, on `node` from the start or (`None`) placed by kube-scheduler half a
/// second after its creation (a scheduling gate held that long, so that the binder has seen it
/// unscheduled), and returns the versions its claim goes through until it is Bound to the pod,
/// each as (pod uid set, phase). Watched from before the pod is created, so none is missed (a
/// watch delivers every version of an object).
async fn claim_versions_until_bound(
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: Option<&str>,
) -> Result<Vec<(bool, ClaimPhase)>> {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::watcher;
    let claims: Api<IPClaim> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut stream = watcher(claims, watcher::Config::default()).boxed();
    // The initial list first: the pod is created once the watch runs.
    while let Some(ev) = stream.try_next().await? {
        if matches!(ev, watcher::Event::InitDone) {
            break;
        }
    }
    // Already on its node, or placed by the scheduler within --unscheduled-bind-delay: the
    // binder binds pod and node (and phase Bound) at once.
    let gates = if node.is_some() {
        json!([])
    } else {
        json!([{"name": "pinip.test/hold"}])
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "schedulingGates": gates, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": IMAGE}]}}))?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    if node.is_none() {
        let (pods, name) = (pods.clone(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let lifted = pods
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"schedulingGates": null}})),
                )
                .await;
            if let Err(e) = lifted {
                eprintln!("lifting the scheduling gate of {name}: {e}");
            }
        });
    }
    let (claim, _) = first(&pod)?;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .with_context(|| format!("claim {claim} not Bound to {name} in 30 s: {seen:?}"))??
            .context("claim watch ended")?;
        // After a relist (the CRD changes under the watch) versions come as InitApply.
        let (watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = ev else {
            continue;
        };
        if c.name_any() != claim {
            continue;
        }
        let uid = c
            .spec
            .pod
            .as_ref()
            .map(|p| p.uid.clone())
            .filter(|u| !u.is_empty());
        seen.push((uid.is_some(), c.phase()));
        if c.phase() == ClaimPhase::Bound {
            anyhow::ensure!(
                uid == pod.uid(),
                "claim {claim} Bound to another pod: {seen:?}"
            );
            return Ok(seen);
        }
    }
}

/// How long after its creation the scheduler placed pod `name` (whole seconds, as the API
/// server keeps them).
async fn scheduling_latency(client: &kube::Client, ns: &str, name: &str) -> Result<Duration> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get(name).await?;
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .context("no creationTimestamp")?
        .0;
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.as_ref())
        .context("pod not scheduled")?
        .0;
    Ok(Duration::try_from(scheduled.duration_since(created)).unwrap_or_default())
}

/// Serves `crd` (JSON) as the IPClaim CRD and waits until kube-apiserver's handler serves
/// `/status` of claim `probe` or not, as `with_status` says: the admin's status patch is
/// refused by policy (403) where the subresource is served and not found (404) where not.
async fn serve_claim_crd(
    s: &Stack,
    crd: &serde_json::Value,
    with_status: bool,
    probe: &str,
) -> Result<()> {
    let file = s.bed.dir.join("ipclaims-crd.json");
    std::fs::write(&file, crd.to_string())?;
    pinip::kubectl(
        &s.bed,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &file.display().to_string(),
        ],
    )?;
    let claims: Api<IPClaim> = Api::all(s.client.clone());
    let in_a_row = std::sync::atomic::AtomicUsize::new(0);
    wait_for(
        &format!("ipclaims/status served: {with_status}"),
        Duration::from_secs(30),
        || async {
            let r = claims
                .patch_status(
                    probe,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Released"}})),
                )
                .await;
            let served = match r {
                Err(kube::Error::Api(e)) if e.code == 404 => false,
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => true,
                other => anyhow::bail!("probe status patch: {other:?}"),
            };
            // Several answers in a row: every handler has the new CRD.
            use std::sync::atomic::Ordering::Relaxed;
            if served == with_status {
                in_a_row.fetch_add(1, Relaxed);
            } else {
                in_a_row.store(0, Relaxed);
            }
            Ok((in_a_row.load(Relaxed) >= 3).then_some(()))
        },
    )
    .await
}

async fn binds_in_one_write_and_with_an_older_crd(s: &Stack) -> Result<()> {
    let ns = s
        .bed
        .temp_namespace("onewrite", json!({"pinip.io/enabled": "true"}))
        .await?;
    let node = s.bed.nodes[0].name.clone();
    let client = &s.client;
    // This release's CRD: no status subresource; the bind is one write, so no version of the
    // claim has its pod without being Bound.
    let v = claim_versions_until_bound(client, &ns, "one", Some(&node)).await?;
    let probe = first(
        &Api::<Pod>::namespaced(client.clone(), &ns)
            .get("one")
            .await?,
    )?
    .0;
    assert!(
        !v.iter()
            .any(|(uid, phase)| *uid && *phase != ClaimPhase::Bound),
        "a version with the pod but not Bound: {v:?}"
    );
    assert_eq!(v.len(), 2, "created, then bound in one write: {v:?}");
    // Placed by kube-scheduler once the binder has seen it unscheduled: still one
    // bind write (the first bind waits --unscheduled-bind-delay, 3 s, for the node).
    let placed = claim_versions_until_bound(client, &ns, "placed", None).await?;
    let scheduled_after = scheduling_latency(client, &ns, "placed").await?;
    assert_eq!(
        placed.len(),
        2,
        "created, then bound in one write once the scheduler placed it {scheduled_after:?} after its creation: {placed:?}"
    );
    // Never placed: bound without a node once the delay is over.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let held = |name: &str| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"schedulingGates": [{"name": "pinip.test/hold"}],
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "app", "image": IMAGE}]}}))?)
    };
    let unplaced = pods
        .create(&PostParams::default(), &held("unplaced")?)
        .await?;
    let unplaced_claim = first(&unplaced)?.0;
    let c = wait_for(
        "an unplaced pod's claim bound without a node after the delay",
        Duration::from_secs(15),
        || async {
            let c = claims.get(&unplaced_claim).await?;
            let uid = c.spec.pod.as_ref().map(|p| p.uid.clone());
            Ok((uid == unplaced.uid()).then_some(c))
        },
    )
    .await?;
    assert_eq!(
        (c.phase(), c.spec.node.clone()),
        (ClaimPhase::Reserved, None)
    );
    pods.delete("unplaced", &DeleteParams::default()).await?;

    // An older release's CRD (with the status subresource, which drops status from a spec
    // write): the binder notices and binds in two writes. Restored whatever happens.
    let older = serde_json::to_value(<IPClaim as kube::CustomResourceExt>::crd())?;
    let current = serde_json::to_value(pinip_api::crd::ipclaim_crd())?;
    let with_older = match serve_claim_crd(s, &older, true, &probe).await {
        Ok(()) => claim_versions_until_bound(client, &ns, "older", Some(&node)).await,
        Err(e) => Err(e),
    };
    let restored = serve_claim_crd(s, &current, false, &probe).await;
    let with_older = with_older?;
    restored?;
    assert!(
        with_older
            .iter()
            .any(|(uid, phase)| *uid && *phase == ClaimPhase::Reserved),
        "the older CRD did not split the bind (was it served?): {with_older:?}"
    );
    // Upgraded again: the first bind finds /status gone and writes once more in one; the next
    // is one write from the start.
    let upgraded = claim_versions_until_bound(client, &ns, "upgraded", Some(&node)).await?;
    let after = claim_versions_until_bound(client, &ns, "after", Some(&node)).await?;
    assert_eq!(
        after.len(),
        2,
        "one write again after the upgrade: {after:?} (the bind on the upgrade: {upgraded:?})"
    );
    eprintln!("placed by the scheduler {scheduled_after:?} after creation: {placed:?}");
    eprintln!(
        "claim versions until Bound: one write {v:?}; older CRD {with_older:?}; on the upgrade {upgraded:?}; after {after:?}"
    );
    Ok(())
}
