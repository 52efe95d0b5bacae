//! The binder end to end: the real `pinip-binder` (one or two replicas, as processes with the
//! binder's identity) against kube-apiserver, kube-controller-manager (StatefulSet,
//! Deployment, ReplicaSet and garbage-collector controllers) and kube-scheduler, with the real
//! webhook deciding addresses and the node agents running the CNI chain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::{ClaimPhase, IPClaim, IPPool};
use pinip_integration::binders::{Binders, start_binders};
use pinip_integration::pinip::{self, Webhooks};
use pinip_integration::wait::{pods_running, wait_for};
use pinip_integration::{Bed, BedOptions, Ipam};
use serde_json::json;

const IMAGE: &str = "registry.invalid/none:1";

/// A bed with pinip installed, one webhook replica (no cool-down, so released addresses are
/// reused at once and any double assignment would show), pools, and binders with `binder_args`.
/// Pools `ov-a` and `ov-b` overlap: they are created before the validating webhook is
/// registered, as an old install or a webhook outage would leave them.
async fn setup(binders: usize, binder_args: &[&str]) -> Result<(Bed, Webhooks, Binders, Client)> {
    let bin_dir = pinip::bin_dir()?;
    let bed = Bed::start(BedOptions {
        ipam: Ipam::Pinip { bin_dir },
        ..Default::default()
    })
    .await?;
    pinip::install(&bed)?;
    let client = bed.client();
    for (name, spec) in [
        (
            "main",
            json!({"cidr": "10.40.0.0/24", "gateway": "10.40.0.1", "default": true}),
        ),
        ("ov-a", json!({"cidr": "10.90.0.0/24"})),
        ("ov-b", json!({"cidr": "10.90.0.128/25"})),
    ] {
        pinip::apply_pool(&client, name, spec).await?;
    }
    let hooks = pinip::start_webhooks(&bed, 1, &["--cooldown=0s"]).await?;
    pinip::register(&client, &hooks, "pinip").await?;
    wait_for(
        "the webhook to see pool main",
        Duration::from_secs(20),
        || async {
            Ok(pinip::webhook_get(hooks.metrics_ports[0], "/metrics")
                .await?
                .contains("pool=\"main\"")
                .then_some(()))
        },
    )
    .await?;
    let binders = start_binders(&bed, binders, binder_args).await?;
    Ok((bed, hooks, binders, client))
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn allocation(p: &Pod) -> Result<Allocation> {
    p.annotations()
        .get(ALLOCATION)
        .with_context(|| format!("pod {} has no allocation", p.name_any()))?
        .parse()
        .map_err(Into::into)
}

/// (claim name, address) of the pod's first address.
fn first(p: &Pod) -> Result<(String, String)> {
    let a = allocation(p)?;
    let ip = &a.interfaces[0].ips[0];
    Ok((ip.claim.clone(), ip.address.to_string()))
}

/// Waits until the pod's claims record exactly this pod and node, phase Bound.
async fn bound(claims: &Api<IPClaim>, p: &Pod) -> Result<IPClaim> {
    let (claim, address) = first(p)?;
    let (uid, node) = (p.uid().unwrap_or_default(), node_of(p));
    wait_for(
        &format!(
            "claim {claim} bound to {} ({uid}) on {node:?}",
            p.name_any()
        ),
        Duration::from_secs(20),
        || async {
            let c = claims.get_opt(&claim).await?;
            Ok(c.filter(|c| {
                c.spec.address == address
                    && c.spec.pod.as_ref().map(|p| p.uid.as_str()) == Some(uid.as_str())
                    && c.spec.node == node
                    && c.phase() == ClaimPhase::Bound
            }))
        },
    )
    .await
}

async fn gone(claims: &Api<IPClaim>, names: &[String], limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_for(&format!("claims {names:?} deleted"), limit, || async {
        for n in names {
            if claims.get_opt(n).await?.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    Ok(start.elapsed())
}

fn statefulset(name: &str, replicas: i32) -> Result<StatefulSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}]}}}}))?)
}

fn bare_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"churn": "yes"}},
        "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}}))?)
}

async fn events(client: &Client, ns: &str, reason: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// Every pool's status matches its claims, as recomputed here.
async fn pool_status_correct(client: &Client) -> Result<Option<()>> {
    let claims = Api::<IPClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut count: BTreeMap<String, i64> = BTreeMap::new();
    for c in &claims {
        *count.entry(c.spec.pool.clone()).or_default() += 1;
    }
    for p in Api::<IPPool>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let want = count.get(&p.name_any()).copied().unwrap_or(0);
        let total = p.spec.usable()?.size() as i64;
        match &p.status {
            Some(s) if s.allocated == want && s.total == total && s.conditions.len() == 2 => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(()))
}

/// Bind, follow, scale, release and reclaim on one bed with one binder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binder_lifecycle() -> Result<()> {
    let (bed, _hooks, binders, client) = setup(1, &["--reclaim-grace=5s"]).await?;
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
    let bound_events = events(&client, &ns, "IPBound").await?;
    assert!(!bound_events.is_empty(), "no IPBound event");

    // A pod naming another owner's claim is a conflict: a Warning event and a metric, and the
    // claim stays with its pod. (kube-system is outside the webhooks' scope, so nothing stops
    // the spoofed allocation there.)
    let db0 = pods.get("db-0").await?;
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
            Ok(events(&client, "kube-system", "IPConflict")
                .await?
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(spoof_name.as_str())
                }))
        },
    )
    .await?;
    assert_eq!(conflict.type_.as_deref(), Some("Warning"));
    eprintln!("conflict reported: {}", conflict.note.unwrap_or_default());
    assert!(
        binders
            .metric(0, "pinip_binder_conflicts_total{reason=\"not_holder\"}")
            .await?
            >= 1.0
    );
    bound(&claims, &db0).await?;
    system.delete(&spoof_name, &DeleteParams::default()).await?;

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
    .await?;
    assert_eq!(first(&new)?, addresses["db-1"]);
    assert_ne!(node_of(&new), Some(old_node.clone()));
    bound(&claims, &new).await?;
    nodes
        .patch(&old_node, &PatchParams::default(), &cordon(false))
        .await?;
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
    assert!(!events(&client, &ns, "IPReleased").await?.is_empty());

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

    // Pool status: counts recomputed from the claims; overlapping pools flagged.
    wait_for(
        "pool status to match the claims",
        Duration::from_secs(20),
        || pool_status_correct(&client),
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
    let table = pinip::kubectl(&bed, &["get", "ipp", "main"])?;
    assert!(
        table.contains("ALLOCATED") && table.contains("TOTAL") && table.contains(" 253 "),
        "{table}"
    );

    // Metrics.
    assert!(binders.metric(0, "pinip_binder_reclaimed_total").await? >= 2.0);
    assert!(
        binders
            .metric(0, "pinip_binder_reconciles_total{result=\"ok\"}")
            .await?
            > 0.0
    );
    assert_eq!(binders.metric(0, "pinip_binder_leader").await?, 1.0);
    let text = binders.get(0, "/metrics").await?;
    assert!(
        text.contains("pinip_binder_claims{phase=\"Bound\"}"),
        "{text}"
    );
    Ok(())
}

/// Churn with the leader SIGKILLed and restarted, then leader hand-over, on two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binder_failover() -> Result<()> {
    let (bed, _hooks, mut binders, client) = setup(
        2,
        &[
            "--lease-duration=4s",
            "--lease-renew-period=1s",
            "--reclaim-grace=10s",
        ],
    )
    .await?;
    let leader = wait_for("a leader", Duration::from_secs(15), || {
        binders.leader(&client)
    })
    .await?;
    let standby = 1 - leader;
    assert_eq!(binders.metric(leader, "pinip_binder_leader").await?, 1.0);
    assert_eq!(binders.metric(standby, "pinip_binder_leader").await?, 0.0);

    // Churn: 100 pods created, half of them deleted and 25 more created, while the leader is
    // SIGKILLed and later restarted.
    let ns = bed
        .temp_namespace("churn", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let create = |names: Vec<String>| {
        let pods = pods.clone();
        async move {
            futures::stream::iter(names)
                .map(|n| {
                    let pods = pods.clone();
                    async move {
                        pods.create(&PostParams::default(), &bare_pod(&n)?)
                            .await
                            .map_err(anyhow::Error::from)
                    }
                })
                .buffer_unordered(20)
                .try_collect::<Vec<Pod>>()
                .await
        }
    };
    create((0..50).map(|i| format!("c-{i}")).collect()).await?;
    binders.kill(leader);
    let killed = Instant::now();
    create((50..100).map(|i| format!("c-{i}")).collect()).await?;
    futures::stream::iter((0..100).step_by(2))
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.delete(&format!("c-{i}"), &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(20)
        .try_collect::<Vec<()>>()
        .await?;
    let took_over = wait_for("the standby to lead", Duration::from_secs(15), || async {
        Ok((binders.leader(&client).await? == Some(standby)).then_some(()))
    })
    .await
    .map(|_| killed.elapsed())?;
    binders.restart(leader).await?;
    create((100..125).map(|i| format!("c-{i}")).collect()).await?;
    eprintln!("churn: standby took over {took_over:?} after the leader was SIGKILLed (lease 4s)");

    // Converged: every live pod's claim is bound to it; no claim without a live pod; no
    // address on two live pods; pool status right.
    let live = pods_running(&pods, "churn=yes", 75).await?;
    let claims: Api<IPClaim> = Api::all(client.clone());
    let mut seen = BTreeSet::new();
    for p in &live {
        let (_, address) = first(p)?;
        assert!(seen.insert(address.clone()), "{address} on two live pods");
        bound(&claims, p).await?;
    }
    wait_for(
        "no claim without a live pod",
        Duration::from_secs(30),
        || async {
            let n = claims
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|c| c.spec.owner.namespace == ns)
                .count();
            Ok((n == live.len()).then_some(()))
        },
    )
    .await?;
    wait_for(
        "pool status to match the claims",
        Duration::from_secs(20),
        || pool_status_correct(&client),
    )
    .await?;

    // Hand-over: SIGKILL the leader → the other takes over within the lease time.
    let leader = binders.leader(&client).await?.context("no leader")?;
    let other = 1 - leader;
    binders.kill(leader);
    let t = Instant::now();
    wait_for(
        "the other replica to lead",
        Duration::from_secs(15),
        || async { Ok((binders.metric(other, "pinip_binder_leader").await? == 1.0).then_some(())) },
    )
    .await?;
    let after_kill = t.elapsed();
    binders.restart(leader).await?;
    // Graceful: SIGTERM releases the lease, the other takes over at once.
    let t = Instant::now();
    binders.stop(other);
    let stopped_in = t.elapsed();
    wait_for(
        "the restarted replica to lead",
        Duration::from_secs(15),
        || async {
            Ok((binders.metric(leader, "pinip_binder_leader").await? == 1.0).then_some(()))
        },
    )
    .await?;
    let after_term = t.elapsed();
    eprintln!(
        "hand-over: {after_kill:?} after SIGKILL (lease 4s), {after_term:?} after SIGTERM (of which {stopped_in:?} for the old leader to exit)"
    );
    assert!(
        after_kill <= Duration::from_secs(4) + Duration::from_secs(2),
        "{after_kill:?}"
    );
    assert!(after_term < Duration::from_secs(2), "{after_term:?}");
    assert!(!binders.running(other));

    // The new leader still keeps things right: a pod deleted now loses its claim.
    let victim = &live[0];
    let (claim, _) = first(victim)?;
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await?;
    gone(&claims, &[claim], Duration::from_secs(15)).await?;
    Ok(())
}
