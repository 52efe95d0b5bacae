//! CNI ADD latency, exec to result, with the pod's allocation read two ways, against Debian's
//! host-local and whereabouts (built from its Go module, `whereabouts/build.sh`) in the same
//! run (a benchmark, not a test):
//!   - pinip, annotations from runtimeConfig (the pod-annotations capability: no API call),
//!   - pinip, one GET of the pod from the test bed's real kube-apiserver,
//!   - host-local, fresh dataDir, same range,
//!   - whereabouts, its IPPool CRD on the same kube-apiserver (a Lease per call, then a patch
//!     of the pool), configured by a flat file naming a kubeconfig whose context names the
//!     namespace it keeps its pools in.
//!
//! Serially, interleaved so that machine load hits all four alike; then each alone with 32
//! calls in flight.
//!
//!   integration/bench.sh cni        # PINIP_BENCH_CALLS=N (default 300)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use pinip_integration::{Bed, BedOptions};
use pinip_integration::{measure, pinip, whereabouts};
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
    let calls = measure::env_usize("PINIP_BENCH_CALLS", 300).max(200);
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
    // whereabouts: its CRDs, a namespace for its pools, a kubeconfig whose context names it.
    let wb = whereabouts::Build::get()?;
    let wb_flat = bed.dir.join("whereabouts.conf");
    whereabouts::install(&bed, &wb, &wb_flat).await?;
    let wb_bin = wb.plugin();
    let wbc = base(json!({"type": "whereabouts", "range": "10.40.0.0/16",
        "configuration_path": wb_flat}));

    let runs: [(&str, &Path, &Value); 4] = [
        ("pinip, runtimeConfig annotations", &pinip_bin, &with_caps),
        ("pinip, GET from kube-apiserver  ", &pinip_bin, &api_read),
        ("host-local                      ", host_local, &hl),
        ("whereabouts                     ", &wb_bin, &wbc),
    ];
    let mut serial: Vec<Vec<Duration>> = vec![Vec::new(); runs.len()];
    for i in 0..calls + 10 {
        let id = format!("serial{i:058}");
        for (k, (_, bin, conf)) in runs.iter().enumerate() {
            let t = add(bin, conf, &id, "web-0")?;
            if i >= 10 {
                serial[k].push(t);
            }
        }
    }
    println!(
        "CNI ADD latency, exec to result, {calls} calls each (after 10 warm-up), interleaved:"
    );
    let medians: Vec<f64> = runs
        .iter()
        .zip(serial)
        .map(|((label, ..), t)| {
            let (m, p99) = stats(t);
            println!("  {label}: median {m:.2} ms, p99 {p99:.2} ms");
            m
        })
        .collect();
    println!(
        "  ratios to host-local (median): annotations {:.2}, API read {:.2}, whereabouts {:.2}; annotations / whereabouts {:.3}",
        medians[0] / medians[2],
        medians[1] / medians[2],
        medians[3] / medians[2],
        medians[0] / medians[3]
    );

    println!("CNI ADD with {PARALLEL} calls in flight, {calls} calls each, one IPAM at a time:");
    let mut par = Vec::new();
    for (k, (label, bin, conf)) in runs.iter().enumerate() {
        let started = Instant::now();
        let (times, failed) = parallel(bin, conf, calls, &format!("par{k}"));
        let wall = started.elapsed().as_secs_f64();
        let ok = times.len();
        let failures = match &failed {
            Some(first) => format!("; {} failed, the first with: {first}", calls - ok),
            None => String::new(),
        };
        if ok == 0 {
            println!("  {label}: every call failed{failures}");
            par.push((f64::NAN, f64::NAN, 0.0));
            continue;
        }
        let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / ok as f64;
        let (m, p99) = stats(times);
        println!(
            "  {label}: median {m:.2} ms, mean {mean:.2} ms, p99 {p99:.2} ms, {:.0} successful ADDs/s{failures}",
            ok as f64 / wall
        );
        par.push((m, mean, ok as f64 / wall));
    }
    println!(
        "  annotations / whereabouts: median latency {:.3}, mean latency {:.3}, throughput x{:.0}",
        par[0].0 / par[3].0,
        par[0].1 / par[3].1,
        par[0].2 / par[3].2
    );
    Ok(())
}

const PARALLEL: usize = 32;

/// `calls` ADDs, `PARALLEL` at a time: the latency of each that succeeded, and the first
/// failure's message (a plugin may fail under this load: that is part of what is measured).
fn parallel(bin: &Path, conf: &Value, calls: usize, tag: &str) -> (Vec<Duration>, Option<String>) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new((Vec::with_capacity(calls), None::<String>));
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= calls {
                        return;
                    }
                    let id = format!("{tag}-{i:054}");
                    let r = add(bin, conf, &id, "web-0");
                    let mut o = out.lock().expect("times lock");
                    match r {
                        Ok(t) => o.0.push(t),
                        Err(e) => {
                            o.1.get_or_insert_with(|| {
                                e.to_string()
                                    .split_whitespace()
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            });
                        }
                    }
                }
            });
        }
    });
    out.into_inner().expect("times lock")
}
