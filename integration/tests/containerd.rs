//! pinip through a real containerd: the node agent asks containerd for each pod's sandbox
//! over CRI, and containerd calls the node's CNI chain (Debian's bridge delegating IPAM to the
//! `pinip` plugin) itself. node-1 declares the pod-annotations capability (containerd hands
//! pinip the annotations), node-2 does not (pinip reads the pod from the API server).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_integration::containerd::{mounts_under, processes_mentioning};
use pinip_integration::pinip;
use pinip_integration::wait::{event_message, pod_running, wait_for};
use pinip_integration::{Bed, BedOptions, Ipam, netns};
use serde_json::{Value, json};

fn pod(name: &str, node: &str, annotations: Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "ctd"}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}],
            "nodeSelector": {"kubernetes.io/hostname": node}},
    }))?)
}

fn allocated(p: &Pod) -> Result<Vec<String>> {
    let a: Allocation = p
        .annotations()
        .get(ALLOCATION)
        .with_context(|| format!("pod {} has no allocation", p.name_any()))?
        .parse()?;
    Ok(a.interfaces[0]
        .ips
        .iter()
        .map(|ip| ip.address.to_string())
        .collect())
}

fn pod_ips(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ips.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|ip| ip.ip)
        .collect()
}

async fn setup() -> Result<(Bed, pinip::Webhooks, Client)> {
    let bed = Bed::start(BedOptions {
        nodes: 2,
        ipam: Ipam::Pinip {
            bin_dir: pinip::bin_dir()?,
        },
        containerd_nodes: vec!["node-1".into(), "node-2".into()],
        no_capability_nodes: vec!["node-2".into()],
        ..Default::default()
    })
    .await?;
    pinip::install(&bed)?;
    let hooks = pinip::start_webhooks(&bed, 1, &[]).await?;
    let client = bed.client();
    pinip::register(&client, &hooks, "pinip").await?;
    pinip::apply_pool(
        &client,
        "v4",
        json!({"cidr": "10.90.0.0/24", "gateway": "10.90.0.1", "default": true,
               "routes": [{"dst": "0.0.0.0/0"}]}),
    )
    .await?;
    pinip::apply_pool(&client, "v6", json!({"cidr": "fd00:90::/64"})).await?;
    Ok((bed, hooks, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_runs_the_chain_with_pinip() -> Result<()> {
    let (bed, _hooks, client) = setup().await?;
    let ns = bed
        .temp_namespace("ctd", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let create = |p: Pod| {
        let pods = pods.clone();
        async move {
            wait_for(
                "the webhook to see the pools",
                Duration::from_secs(20),
                || {
                    let (pods, p) = (pods.clone(), p.clone());
                    async move {
                        match pods.create(&PostParams::default(), &p).await {
                            // The webhook's pool watch may not have caught up yet.
                            Err(kube::Error::Api(s))
                                if s.message.contains("no default pool")
                                    || s.message.contains("does not exist") =>
                            {
                                Ok(None)
                            }
                            other => Ok(Some(other?)),
                        }
                    }
                },
            )
            .await
        }
    };

    // Dual stack and an exact address, with and without the capability: containerd's sandbox
    // has exactly the annotated addresses, and the pod reports them.
    let mut sandboxes = Vec::new();
    for node in ["node-1", "node-2"] {
        let cases = [
            (format!("dual-{node}"), json!({"pinip.io/pool": "v4,v6"})),
            (
                format!("exact-{node}"),
                json!({"pinip.io/ip": if node == "node-1" { "10.90.0.77" } else { "10.90.0.78" }}),
            ),
        ];
        for (name, ann) in cases {
            let created = create(pod(&name, node, ann)?).await?;
            let want = allocated(&created)?;
            let p = pod_running(&pods, &name).await?;
            let got: BTreeSet<String> = bed.pod_addresses(&p, "eth0").await?.into_iter().collect();
            assert_eq!(got, want.iter().cloned().collect(), "{name} on {node}");
            let bare: Vec<String> = want
                .iter()
                .map(|a| a.split('/').next().unwrap_or_default().to_string())
                .collect();
            assert_eq!(pod_ips(&p), bare, "{name}: podIPs");
            if name.starts_with("dual") {
                assert_eq!(want.len(), 2, "{want:?}");
                assert!(want[1].starts_with("fd00:90::"), "{want:?}");
            } else {
                assert_eq!(want, vec![format!("{}/24", bare[0])]);
            }
            sandboxes.push((p.uid().unwrap_or_default(), bed.pod_netns(&p).await?));
        }
    }
    eprintln!("sandboxes (pod uid, netns): {sandboxes:?}");
    // Each sandbox is containerd's own (named cni-<uuid>), not the bed's.
    for (_, netns) in &sandboxes {
        assert!(netns.starts_with("cni-"), "{netns}");
    }

    // A pod without an allocation (its namespace did not opt in) fails at the sandbox, and its
    // events carry pinip's error as the kubelet reports a CRI failure.
    let plain = bed.temp_namespace("ctd-plain", json!({})).await?;
    let plain_pods: Api<Pod> = Api::namespaced(client.clone(), &plain);
    plain_pods
        .create(&PostParams::default(), &pod("orphan", "node-1", json!({}))?)
        .await?;
    let note = event_message(
        &client,
        &plain,
        "FailedCreatePodSandBox on orphan",
        Duration::from_secs(30),
        |e| {
            e.reason.as_deref() == Some("FailedCreatePodSandBox")
                && e.involved_object.name.as_deref() == Some("orphan")
        },
    )
    .await?;
    eprintln!("orphan's event: {note}");
    for part in [
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox",
        "plugin type=\"bridge\" failed (add)",
        &format!("pod {plain}/orphan has no pinip.io/allocation annotation"),
    ] {
        assert!(note.contains(part), "missing {part:?} in {note}");
    }
    let orphan = plain_pods.get("orphan").await?;
    assert_ne!(
        orphan.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    let ctd1 = bed
        .containerds
        .iter()
        .find(|c| c.node == "node-1")
        .context("node-1 containerd")?;
    assert!(
        ctd1.sandboxes_of(&orphan.metadata.uid.unwrap_or_default())
            .await?
            .is_empty(),
        "containerd kept the failed sandbox"
    );
    plain_pods
        .delete("orphan", &DeleteParams::default())
        .await?;

    // DEL leaves nothing behind: no sandbox, namespace, bridge port or shim.
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for c in &bed.containerds {
            ids.extend(c.all_sandboxes().await?);
        }
        ids
    };
    assert_eq!(ids.len(), sandboxes.len(), "{ids:?}");
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    wait_for("every sandbox gone", Duration::from_secs(60), || async {
        let left = pods.list(&ListParams::default()).await?.items.len()
            + plain_pods.list(&ListParams::default()).await?.items.len();
        let mut sbs = 0;
        for c in &bed.containerds {
            sbs += c.all_sandboxes().await?.len();
        }
        Ok((left == 0 && sbs == 0).then_some(()))
    })
    .await?;
    let present = netns::list()?;
    for (uid, ns) in &sandboxes {
        assert!(!present.contains(ns), "namespace {ns} of pod {uid} left");
    }
    for node in ["node-1", "node-2"] {
        let ports = netns::ip(&[
            "-n",
            &bed.node_netns(node),
            "-o",
            "link",
            "show",
            "master",
            "cni0",
        ])?;
        assert!(
            ports.trim().is_empty(),
            "{node}: bridge ports left: {ports}"
        );
    }
    for id in &ids {
        assert!(
            processes_mentioning(id).is_empty(),
            "a process of sandbox {id} left"
        );
    }

    // Teardown stops containerd and leaves no process, mount or cgroup of it.
    let dirs: Vec<_> = bed.containerds.iter().map(|c| c.dir.clone()).collect();
    let bed_name = bed
        .dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    drop(bed);
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")?
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&bed_name))
        })
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    for d in &dirs {
        let d = d.display().to_string();
        assert!(processes_mentioning(&d).is_empty(), "process of {d} left");
        assert!(
            mounts_under(std::path::Path::new(&d))?.is_empty(),
            "mounts under {d} left"
        );
    }
    Ok(())
}
