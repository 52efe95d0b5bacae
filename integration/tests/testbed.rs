//! The test bed itself, against the real upstream components: the control plane comes up, a
//! Deployment's pods are scheduled by the real scheduler onto the bed's nodes and get
//! addresses really configured in their network namespaces, deleting the Deployment removes
//! every pod namespace, and teardown leaves no process, namespace or file behind.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pinip_integration::wait::wait_for;
use pinip_integration::{Bed, BedOptions, MainPlugin, netns};
use serde_json::json;

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]},
            },
        },
    }))
    .expect("deployment")
}

fn running_with_ip(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    (st.phase.as_deref() == Some("Running")).then_some(())?;
    st.pod_ip.clone()
}

async fn deployment_round_trip(plugin: MainPlugin) -> Result<()> {
    let bed = Bed::start_or_attach(BedOptions {
        main_plugin: plugin,
        ..Default::default()
    })
    .await?;
    eprintln!("{plugin:?} bed ready in {:?}", bed.startup);
    let prefix = bed.netns_prefix.clone();
    let client = bed.client();
    let ns = bed.temp_namespace("demo", json!({})).await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deploys
        .create(&PostParams::default(), &deployment("web", 3))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = wait_for(
        "3 pods Running with addresses",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let l = pods.list(&ListParams::default().labels("app=web")).await?;
                let ok = l.items.len() == 3 && l.items.iter().all(|p| running_with_ip(p).is_some());
                Ok(ok.then_some(l.items))
            }
        },
    )
    .await?;

    let mut ips = Vec::new();
    for p in &list {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            bed.nodes.iter().any(|n| n.name == node),
            "{} on unknown node {node:?}",
            p.name_any()
        );
        let ip = running_with_ip(p).unwrap();
        let configured = bed.pod_addresses(p, "eth0").await?;
        assert!(
            configured
                .iter()
                .any(|a| a.split('/').next() == Some(ip.as_str())),
            "pod {} reports {ip} but its namespace has {configured:?}",
            p.name_any()
        );
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "addresses not distinct: {ips:?}");
    assert_eq!(bed.pod_sandboxes().await?.len(), 3);

    deploys.delete("web", &DeleteParams::foreground()).await?;
    wait_for(
        "pods and their namespaces gone",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let bed = &bed;
            async move {
                let left = pods.list(&ListParams::default()).await?.items.len();
                Ok((left == 0 && bed.pod_sandboxes().await?.is_empty()).then_some(()))
            }
        },
    )
    .await?;

    let pids: Vec<u32> = bed.component_pids();
    let attached = bed.cp.is_none();
    drop(bed);
    if attached {
        return Ok(());
    }
    assert!(
        netns::list_with_prefix(&prefix)?.is_empty(),
        "namespaces left after teardown"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))?.contains(" Z "),
            "process {pid} still running after teardown"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_pods_get_addresses_on_bridge_and_macvlan() -> Result<()> {
    deployment_round_trip(MainPlugin::Bridge).await?;
    deployment_round_trip(MainPlugin::Macvlan).await
}
