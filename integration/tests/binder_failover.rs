//! Binder leadership end to end: churn with the leader SIGKILLed and restarted, then leader
//! hand-over (SIGKILL and graceful), on two replicas of the real `pinip-binder`.

mod binder_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pinip_api::IPClaim;
use pinip_integration::wait::{pods_running, wait_for};
use serde_json::json;

use binder_common::*;

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
