//! Test-bed nodes as a kubelet registers them: Node objects with zone and hostname labels and
//! allocatable pods, a Ready condition, and a node Lease renewed as the kubelet's heartbeat.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const FIELD_MANAGER: &str = "pinip-testbed-kubelet";

/// One node's identity.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub zone: String,
    /// Reported as the node's InternalIP. Nothing sends traffic to it.
    pub internal_ip: String,
}

/// `count` nodes named node-1…, spread over zones a and b.
pub fn node_specs(count: usize) -> Vec<NodeSpec> {
    (1..=count)
        .map(|i| NodeSpec {
            name: format!("node-{i}"),
            zone: if i % 2 == 1 { "a" } else { "b" }.to_string(),
            internal_ip: format!("10.255.0.{i}"),
        })
        .collect()
}

pub fn time_now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn micro_now() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub async fn register(client: &Client, spec: &NodeSpec) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": spec.name,
            "labels": {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                ZONE_LABEL: spec.zone,
            },
        },
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    report_status(client, spec).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let created = nodes.get(&spec.name).await?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": spec.name,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": spec.name,
                "uid": created.metadata.uid,
            }],
        },
        "spec": {"holderIdentity": spec.name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

/// The node's status: Ready, capacity and addresses, as the kubelet reports it.
pub async fn report_status(client: &Client, spec: &NodeSpec) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = time_now();
    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("Ready", "True", "KubeletReady"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": spec.internal_ip},
            {"type": "Hostname", "address": spec.name},
        ],
        "nodeInfo": {
            "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "machineID": spec.name,
            "systemUUID": spec.name, "bootID": spec.name, "kernelVersion": "",
            "osImage": "pinip test bed", "containerRuntimeVersion": "pinip-testbed://1",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    nodes
        .patch_status(
            &spec.name,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await?;
    Ok(())
}

/// Renews the node Lease every few seconds and re-reports Ready now and then, forever.
pub async fn heartbeat(client: Client, spec: NodeSpec) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut tick = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let renew = json!({"spec": {"renewTime": micro_now()}});
        if let Err(e) = leases
            .patch(
                &spec.name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(renew),
            )
            .await
        {
            tracing::warn!(node = %spec.name, error = %e, "lease renewal failed");
        }
        tick += 1;
        if tick.is_multiple_of(4)
            && let Err(e) = report_status(&client, &spec).await
        {
            tracing::warn!(node = %spec.name, error = %e, "node status update failed");
        }
    }
}
