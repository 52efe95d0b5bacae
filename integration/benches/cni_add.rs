//! CNI ADD latency, exec to result, with the pod's allocation read two ways, against Debian's
//! host-local in the same run (a benchmark, not a test):
//!   - pinip, annotations from runtimeConfig (the pod-annotations capability: no API call),
//!   - pinip, one GET of the pod from the test bed's real kube-apiserver,
//!   - host-local, fresh dataDir, same range.
//!
//! Calls are interleaved so that machine load hits all three alike.
//!
//!   integration/bench.sh cni        # PINIP_BENCH_CALLS=N (default 300)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use pinip_integration::pinip;
use pinip_integration::{Bed, BedOptions};
use serde_json::{Value, json};

const ALLOCATION: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/16","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"}]}]}"#;

fn add(binary: &Path, conf: &Value, id: &str, pod: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/pinip-bench-unused")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} ADD failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(took)
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    (q(0.5), q(0.99))
}

#[tokio::main]
async fn main() -> Result<()> {
    let calls: usize = std::env::var("PINIP_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(200);
    let bed = Bed::start(BedOptions {
        nodes: 0,
        ..Default::default()
    })
    .await?;
    bed.namespace("bench", json!({})).await?;
    // No webhook on this bed: the annotation is written directly, as the webhook would.
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "web-0", "annotations": {"pinip.io/allocation": ALLOCATION}},
        "spec": {"nodeSelector": {"pinip.test/nowhere": "yes"}, "containers": [{"name": "a", "image": "none"}]}}),
    )?;
    Api::<Pod>::namespaced(bed.client(), "bench")
        .create(&PostParams::default(), &pod)
        .await?;
    let pinip_bin = pinip::bin_dir()?.join("pinip");
    let host_local = Path::new("/usr/lib/cni/host-local");
    let data = tempfile::tempdir()?;
    let cni_kubeconfig = bed.dir.join("cni.kubeconfig");
    let base = |ipam: Value| json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": ipam});
    let mut with_caps = base(json!({"type": "pinip"}));
    with_caps["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"pinip.io/allocation": ALLOCATION}});
    let api_read = base(json!({"type": "pinip", "kubeconfig": cni_kubeconfig}));
    let hl = base(
        json!({"type": "host-local", "ranges": [[{"subnet": "10.30.0.0/16"}]],
        "dataDir": data.path()}),
    );
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..calls + 10 {
        let id = format!("bench{i:059}");
        let t = (
            add(&pinip_bin, &with_caps, &id, "web-0")?,
            add(&pinip_bin, &api_read, &id, "web-0")?,
            add(host_local, &hl, &id, "web-0")?,
        );
        if i >= 10 {
            a.push(t.0);
            b.push(t.1);
            c.push(t.2);
        }
    }
    let (a, b, c) = (stats(a), stats(b), stats(c));
    println!(
        "CNI ADD latency, exec to result, {calls} calls each (after 10 warm-up), interleaved:"
    );
    println!(
        "  pinip, runtimeConfig annotations: median {:.2} ms, p99 {:.2} ms",
        a.0, a.1
    );
    println!(
        "  pinip, GET from kube-apiserver:   median {:.2} ms, p99 {:.2} ms",
        b.0, b.1
    );
    println!(
        "  host-local:                       median {:.2} ms, p99 {:.2} ms",
        c.0, c.1
    );
    println!(
        "  ratios to host-local (median): annotations {:.2}, API read {:.2}",
        a.0 / c.0,
        b.0 / c.0
    );
    Ok(())
}
