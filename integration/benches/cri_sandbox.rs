//! Sandbox creation as the kubelet asks for it (CRI `RunPodSandbox` to a real containerd, which
//! runs runc and the node's CNI chain), with Debian's bridge delegating IPAM to pinip (pod
//! annotations from the runtime: no API call) against host-local, in the same run (a
//! benchmark, not a test). Two containerds, one per node, each with its own conflist; the
//! sandboxes are interleaved so that machine load hits both alike, and each is stopped and
//! removed (untimed) before the next.
//!
//!   integration/bench.sh cri        # PINIP_BENCH_SANDBOXES=N (default 60, at least 50)

use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use pinip_integration::containerd::{self, Containerd, NodeRuntime};
use pinip_integration::{Bed, BedOptions, nodenet, pinip};
use serde_json::{Value, json};

fn pod(i: usize, ipam: &str, annotations: Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{ipam}-{i}"), "namespace": "bench",
            "uid": format!("00000000-0000-4000-8000-{ipam:0>4.4}{i:08}"),
            "annotations": annotations},
    }))?)
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    (q(0.5), q(0.9))
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("PINIP_BENCH_SANDBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(50);
    // The bed gives the namespaces' prefix, the directory and the cleanup; its nodes are
    // made here, one per IPAM.
    let bed = Bed::start(BedOptions {
        nodes: 0,
        ..Default::default()
    })
    .await?;
    let image = containerd::pause_image()?;
    let cni_path = [pinip::bin_dir()?, "/usr/lib/cni".into()];
    let chain = |ipam: Value| {
        json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": false, "ipMasq": false,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}, "ipam": ipam}]})
    };
    let pinip_conf = chain(json!({"type": "pinip"}));
    let hl_conf = chain(
        json!({"type": "host-local", "ranges": [[{"subnet": "10.30.0.0/16"}]],
        "dataDir": bed.dir.join("host-local")}),
    );
    let mut nodes = Vec::new();
    for (name, conf) in [("pinip", &pinip_conf), ("host-local", &hl_conf)] {
        let ns = bed.node_netns(name);
        nodenet::create(&ns)?;
        let c = Containerd::start(NodeRuntime {
            node: name,
            node_netns: pinip_integration::netns::path(&ns),
            dir: bed.dir.join("containerd").join(name),
            conflist: conf,
            cni_path: &cni_path,
            pause_image: &image,
            cgroup_parent: format!(
                "/{}-{name}",
                bed.dir.file_name().unwrap_or_default().to_string_lossy()
            ),
        })
        .await?;
        nodes.push(c);
    }
    let (mut with_pinip, mut with_hl) = (Vec::new(), Vec::new());
    let warmup = 5;
    for i in 0..n + warmup {
        let alloc = format!(
            r#"{{"version":1,"interfaces":[{{"name":"eth0","ips":[{{"address":"10.20.{}.{}/16","gateway":"10.20.0.1","pool":"blue","claim":"c"}}]}}]}}"#,
            i / 250,
            i % 250 + 2
        );
        let pods = [
            pod(i, "pinip", json!({"pinip.io/allocation": alloc}))?,
            pod(i, "hl", json!({}))?,
        ];
        for (c, p) in nodes.iter().zip(pods) {
            let t = Instant::now();
            let sb = c.run(&p, 0).await?;
            let took = t.elapsed();
            anyhow::ensure!(!sb.ips.is_empty(), "{}: sandbox without address", c.node);
            c.remove(&sb.id).await?;
            if i >= warmup {
                if c.node == "pinip" {
                    with_pinip.push(took);
                } else {
                    with_hl.push(took);
                }
            }
        }
    }
    let (p, h) = (stats(with_pinip), stats(with_hl));
    println!(
        "RunPodSandbox to a real containerd (runc + bridge + IPAM), {n} sandboxes each after {warmup} warm-up, interleaved:"
    );
    println!(
        "  bridge + pinip (runtime annotations): median {:.1} ms, p90 {:.1} ms",
        p.0, p.1
    );
    println!(
        "  bridge + host-local:                  median {:.1} ms, p90 {:.1} ms",
        h.0, h.1
    );
    println!(
        "  pinip / host-local (median): {:.3}; difference {:+.1} ms",
        p.0 / h.0,
        p.0 - h.0
    );
    for c in &nodes {
        c.stop();
    }
    Ok(())
}
