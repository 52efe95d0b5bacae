//! What the binder suites share: the bed with pinip, pools and binders, and the checks on
//! claims, events and pool status.
#![allow(dead_code)] // each suite uses some of it

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::{ClaimPhase, IPClaim, IPPool};
use pinip_integration::binders::{Binders, start_binders};
use pinip_integration::pinip::{self, Webhooks};
use pinip_integration::wait::wait_for;
use pinip_integration::{Bed, BedOptions, Ipam};
use serde_json::json;

pub const IMAGE: &str = "registry.invalid/none:1";

/// A bed with pinip installed, one webhook replica (no cool-down, so released addresses are
/// reused at once and any double assignment would show), pools, and binders with `binder_args`.
/// Pools `ov-a` and `ov-b` overlap: they are created before the validating webhook is
/// registered, as an old install or a webhook outage would leave them.
pub async fn setup(
    binders: usize,
    binder_args: &[&str],
) -> Result<(Bed, Webhooks, Binders, Client)> {
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

pub fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

pub fn allocation(p: &Pod) -> Result<Allocation> {
    p.annotations()
        .get(ALLOCATION)
        .with_context(|| format!("pod {} has no allocation", p.name_any()))?
        .parse()
        .map_err(Into::into)
}

/// (claim name, address) of the pod's first address.
pub fn first(p: &Pod) -> Result<(String, String)> {
    let a = allocation(p)?;
    let ip = &a.interfaces[0].ips[0];
    Ok((ip.claim.clone(), ip.address.to_string()))
}

/// Waits until the pod's claims record exactly this pod and node, phase Bound.
pub async fn bound(claims: &Api<IPClaim>, p: &Pod) -> Result<IPClaim> {
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

pub async fn gone(claims: &Api<IPClaim>, names: &[String], limit: Duration) -> Result<Duration> {
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

pub fn statefulset(name: &str, replicas: i32) -> Result<StatefulSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}]}}}}))?)
}

pub fn bare_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"churn": "yes"}},
        "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}}))?)
}

pub async fn events(client: &Client, ns: &str, reason: &str) -> Result<Vec<Event>> {
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
pub async fn pool_status_correct(client: &Client) -> Result<Option<()>> {
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
