//! ADD latency, exec to result: the `pinip` binary as IPAM (annotations from runtimeConfig, the
//! path containerd takes) against Debian's `host-local` IPAM (fresh temporary dataDir, same
//! range), interleaved in one run. Needs no cluster and no root; needs
//! /usr/lib/cni/host-local (`apt-get install -y containernetworking-plugins`).
//!
//! Run: `cargo bench -p pinip-cni --bench add_latency` (PINIP_BENCH_CALLS sets the number of
//! measured calls per plugin; default 300, at least 200).

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const WARMUP: usize = 10;

const ALLOCATION: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/16","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"}]}]}"#;

fn add(binary: &str, conf: &Value, container_id: &str) -> Result<(Duration, Value), String> {
    let stdin = conf.to_string();
    let start = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", "/var/run/netns/pinip-bench-unused")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={container_id};IgnoreUnknown=1;K8S_POD_NAMESPACE=db"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {binary}: {e}"))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes())
            .map_err(|e| format!("write stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait {binary}: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{binary} ADD failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{binary} printed no JSON result: {e}"))?;
    Ok((took, v))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 (nearest rank) of `v`, sorted in place.
fn stats(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    let p99 = v[rank.clamp(1, v.len()) - 1];
    (median, p99)
}

fn main() -> ExitCode {
    let calls: usize = std::env::var("PINIP_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
        .max(200);
    let pinip = env!("CARGO_BIN_EXE_pinip");
    if !Path::new(HOST_LOCAL).exists() {
        eprintln!(
            "add_latency: {HOST_LOCAL} is missing (apt-get install -y containernetworking-plugins)"
        );
        return ExitCode::FAILURE;
    }
    let data_dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("add_latency: cannot make a temporary dataDir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pinip_conf = json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
        "ipam": {"type": "pinip"},
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"pinip.io/allocation": ALLOCATION}}
    });
    let host_local_conf = json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.path(),
            "ranges": [[{"subnet": "10.20.0.0/16", "gateway": "10.20.0.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    });

    let mut pinip_times = Vec::with_capacity(calls);
    let mut host_local_times = Vec::with_capacity(calls);
    for i in 0..(WARMUP + calls) {
        let id = format!("bench{i:06}");
        // Alternate which goes first so neither always runs on a warmer cache.
        let order: [(&str, &Value); 2] = if i % 2 == 0 {
            [(pinip, &pinip_conf), (HOST_LOCAL, &host_local_conf)]
        } else {
            [(HOST_LOCAL, &host_local_conf), (pinip, &pinip_conf)]
        };
        for (binary, conf) in order {
            match add(binary, conf, &id) {
                Ok((took, result)) => {
                    if result["ips"][0]["address"].as_str().is_none() {
                        eprintln!("add_latency: {binary} returned no address: {result}");
                        return ExitCode::FAILURE;
                    }
                    if i >= WARMUP {
                        if binary == pinip {
                            pinip_times.push(took);
                        } else {
                            host_local_times.push(took);
                        }
                    }
                }
                Err(e) => {
                    eprintln!("add_latency: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    let (p_med, p_p99) = stats(&mut pinip_times);
    let (h_med, h_p99) = stats(&mut host_local_times);
    println!(
        "ADD latency, exec to result, {calls} calls each (after {WARMUP} warm-up calls), interleaved:"
    );
    println!(
        "  pinip (runtimeConfig annotations): median {:.3} ms  p99 {:.3} ms",
        ms(p_med),
        ms(p_p99)
    );
    println!(
        "  host-local (fresh dataDir, same range): median {:.3} ms  p99 {:.3} ms",
        ms(h_med),
        ms(h_p99)
    );
    println!(
        "  ratio pinip / host-local: median {:.2}  p99 {:.2}",
        ms(p_med) / ms(h_med),
        ms(p_p99) / ms(h_p99)
    );
    ExitCode::SUCCESS
}
