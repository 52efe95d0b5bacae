//! pinip's main job on the local test bed, end to end, for a person to watch:
//! a real control plane with nodes in two zones, the webhook and binder run with the
//! manifests' settings, the example pools, a StatefulSet and a Deployment whose pods get
//! fixed addresses (configured by Debian's bridge plugin through the pinip IPAM plugin), pods
//! deleted and recreated, and `kubectl get ipp,ipc` at the end. Run it with `./demo.sh`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_integration::pinip::{self, MANIFESTS};
use pinip_integration::wait::wait_for;
use pinip_integration::{Bed, BedOptions, Ipam, binders};
use serde_json::json;

const NS: &str = "demo";

fn step(s: &str) {
    println!("\n==> {s}");
}

#[derive(Clone)]
struct Row {
    name: String,
    uid: String,
    ip: String,
    node: String,
    zone: String,
    configured: String,
}

async fn rows(bed: &Bed, client: &Client, zones: &BTreeMap<String, String>) -> Result<Vec<Row>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut out = Vec::new();
    for p in pods.list(&ListParams::default()).await?.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ip = p
            .annotations()
            .get(ALLOCATION)
            .and_then(|a| a.parse::<Allocation>().ok())
            .and_then(|a| {
                a.interfaces
                    .first()
                    .and_then(|i| i.ips.first())
                    .map(|ip| ip.address.to_string())
            })
            .unwrap_or_default();
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let uid = p.uid().unwrap_or_default();
        let configured = bed
            .pod_addresses(&p, "eth0")
            .await
            .map(|a| a.join(","))
            .unwrap_or_default();
        out.push(Row {
            name: p.name_any(),
            uid,
            ip,
            zone: zones.get(&node).cloned().unwrap_or_default(),
            node,
            configured,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn print(rows: &[Row]) {
    println!(
        "  {:<22} {:<16} {:<8} {:<5} IN ITS NETNS (eth0)",
        "POD", "ADDRESS", "NODE", "ZONE"
    );
    for r in rows {
        println!(
            "  {:<22} {:<16} {:<8} {:<5} {}",
            r.name, r.ip, r.node, r.zone, r.configured
        );
    }
}

async fn all_running(client: &Client, n: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for(
        &format!("{n} pods Running"),
        Duration::from_secs(120),
        || async {
            let l = pods.list(&ListParams::default()).await?.items;
            let up = l
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((up == n).then_some(()))
        },
    )
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    step(
        "starting the test bed: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, 3 nodes",
    );
    let bed = Bed::start(BedOptions {
        ipam: Ipam::Pinip {
            bin_dir: pinip::bin_dir()?,
        },
        ..Default::default()
    })
    .await?;
    println!(
        "  ready in {:.1}s; kubeconfig {}",
        bed.startup.as_secs_f64(),
        bed.kubeconfig.display()
    );
    let client = bed.client();
    let zones: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| {
            let zone = n
                .labels()
                .get("topology.kubernetes.io/zone")
                .cloned()
                .unwrap_or_default();
            (n.name_any(), zone)
        })
        .collect();
    println!("  nodes and zones: {zones:?}");

    step("installing pinip: CRDs and RBAC from manifests/, 2 webhook replicas, 2 binder replicas");
    pinip::install(&bed)?;
    let hooks = pinip::start_webhooks(&bed, 2, &["--cooldown=30s"]).await?;
    pinip::register(&client, &hooks, "pinip").await?;
    let _binders = binders::start_binders(&bed, 2, &[]).await?;
    println!(
        "  webhook reached by URL {}; the binders elect a leader through a Lease",
        hooks.url()
    );

    step("applying manifests/examples/ippools.yaml (a default pool per zone)");
    let examples = std::path::Path::new(MANIFESTS).join("examples/ippools.yaml");
    for doc in pinip::manifest_docs(&examples)? {
        pinip::apply(&client, &doc).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("{}", pinip::kubectl(&bed, &["get", "ipp"])?);

    step("namespace demo (pinip.io/enabled=true): StatefulSet db (3) and Deployment web (3)");
    bed.namespace(NS, json!({"pinip.io/enabled": "true"}))
        .await?;
    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": app, "image": "registry.invalid/none:1"}]}})
    };
    let sts: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": template("db")}}))?;
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &sts)
        .await?;
    let dep: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("web")}}))?;
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &dep)
        .await?;
    all_running(&client, 6).await?;
    let before = rows(&bed, &client, &zones).await?;
    print(&before);

    step("deleting pod db-1 and one web pod; their controllers recreate them");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let web = before
        .iter()
        .find(|r| r.name.starts_with("web-"))
        .context("no web pod")?
        .clone();
    let old_db1 = before
        .iter()
        .find(|r| r.name == "db-1")
        .context("no db-1")?
        .clone();
    pods.delete("db-1", &DeleteParams::default()).await?;
    pods.delete(&web.name, &DeleteParams::default()).await?;
    wait_for("db-1 recreated", Duration::from_secs(120), || async {
        let p = pods.get_opt("db-1").await?;
        Ok(p.filter(|p| {
            p.uid().as_deref() != Some(old_db1.uid.as_str())
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .map(|_| ()))
    })
    .await?;
    all_running(&client, 6).await?;
    let after = rows(&bed, &client, &zones).await?;
    print(&after);
    let new_db1 = after.iter().find(|r| r.name == "db-1").context("no db-1")?;
    println!(
        "\n  db-1 before: {} on {}   after: {} on {}   -> {}",
        old_db1.ip,
        old_db1.node,
        new_db1.ip,
        new_db1.node,
        if new_db1.ip == old_db1.ip {
            "same address (the StatefulSet ordinal keeps it)"
        } else {
            "ADDRESS CHANGED"
        }
    );
    if let Some(n) = after
        .iter()
        .find(|r| r.name.starts_with("web-") && !before.iter().any(|o| o.name == r.name))
    {
        println!(
            "  {} (deleted) had {}; its replacement {} got {} (Deployments default to retain: none)",
            web.name, web.ip, n.name, n.ip
        );
    }

    step("kubectl get ipp,ipc");
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("{}", pinip::kubectl(&bed, &["get", "ipp,ipc"])?);

    if std::env::args().any(|a| a == "--keep") {
        step(&format!(
            "bed kept running: export KUBECONFIG={}   (Ctrl-C tears it down)",
            bed.kubeconfig.display()
        ));
        tokio::signal::ctrl_c().await?;
    }
    step("tearing down");
    Ok(())
}
