//! ADD latency, exec to result: the `pinip` binary as IPAM (annotations from runtimeConfig, the
//! path containerd takes) against Debian's `host-local` IPAM (fresh temporary dataDir, same
//! range) and against the physical limit, a static no-op binary (C, built here with `cc
//! -static`) that reads the same stdin and exits; interleaved in one run. The same no-op
//! linked dynamically against glibc (as `pinip` is) shows what glibc's loading alone costs. Needs no cluster and
//! no root; needs /usr/lib/cni/host-local (`apt-get install -y containernetworking-plugins`).
//!
//! `pinip` as the runtime execs it on a node is static (the image builds it with musl);
//! `PINIP_STATIC_PINIP` names such a build of it (glibc `crt-static`, from
//! `cni-plugin/build-static.sh`) to time beside the dynamically linked one `cargo` builds.
//!
//! Run: `integration/bench.sh add` (builds the static `pinip`, then runs this), or
//! `cargo bench -p pinip-cni --bench add_latency` for the dynamic build alone
//! (PINIP_BENCH_CALLS sets the number of measured calls per plugin; default 300, at least 200).

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const WARMUP: usize = 10;

const ALLOCATION: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/16","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"}]}]}"#;

fn add(binary: &str, conf: &Value, container_id: &str) -> Result<(Duration, Vec<u8>), String> {
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
    Ok((took, out.stdout))
}

/// A no-op executable fed the same stdin: static, what any exec'd plugin costs at least;
/// dynamic, what a plugin linked against the system's glibc costs at least.
fn build_noop(dir: &Path, linking: &str) -> Result<String, String> {
    let src = dir.join("noop.c");
    let bin = dir.join(format!("noop{linking}"));
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void){char b[4096];while(read(0,b,sizeof b)>0){}return 0;}\n",
    )
    .map_err(|e| format!("write {}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-O2", linking, "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc {linking} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin.display().to_string())
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

    let (noop, noop_dynamic) = match (
        build_noop(data_dir.path(), "-static"),
        build_noop(data_dir.path(), "-no-pie"),
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("add_latency: cannot build the no-op yardstick: {e}");
            return ExitCode::FAILURE;
        }
    };
    let static_pinip = std::env::var("PINIP_STATIC_PINIP").ok();
    if let Some(p) = &static_pinip
        && !Path::new(p).is_file()
    {
        eprintln!("add_latency: PINIP_STATIC_PINIP={p} is not a file");
        return ExitCode::FAILURE;
    }
    // (label, binary, config, whether it must print an IPAM result)
    let mut runs: Vec<(&str, &str, &Value, bool)> = vec![
        (
            "pinip (runtimeConfig annotations)",
            pinip,
            &pinip_conf,
            true,
        ),
        (
            "host-local (fresh dataDir, same range)",
            HOST_LOCAL,
            &host_local_conf,
            true,
        ),
        ("static no-op, same stdin", &noop, &pinip_conf, false),
        (
            "dynamic (glibc) no-op, same stdin",
            &noop_dynamic,
            &pinip_conf,
            false,
        ),
    ];
    if let Some(p) = &static_pinip {
        runs.push(("pinip, static build (as on a node)", p, &pinip_conf, true));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(calls); runs.len()];
    for i in 0..(WARMUP + calls) {
        let id = format!("bench{i:06}");
        // Rotate which goes first so none always runs on a warmer cache.
        for k in 0..runs.len() {
            let j = (i + k) % runs.len();
            let (_, binary, conf, ipam) = runs[j];
            match add(binary, conf, &id) {
                Ok((took, stdout)) => {
                    if ipam {
                        let result: Value = match serde_json::from_slice(&stdout) {
                            Ok(v) => v,
                            Err(e) => {
                                eprintln!("add_latency: {binary} printed no JSON result: {e}");
                                return ExitCode::FAILURE;
                            }
                        };
                        if result["ips"][0]["address"].as_str().is_none() {
                            eprintln!("add_latency: {binary} returned no address: {result}");
                            return ExitCode::FAILURE;
                        }
                    }
                    if i >= WARMUP {
                        times[j].push(took);
                    }
                }
                Err(e) => {
                    eprintln!("add_latency: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    println!(
        "ADD latency, exec to result, {calls} calls each (after {WARMUP} warm-up calls), interleaved:"
    );
    let mut medians = Vec::new();
    for ((label, ..), t) in runs.iter().zip(times.iter_mut()) {
        let (med, p99) = stats(t);
        println!("  {label}: median {:.3} ms  p99 {:.3} ms", ms(med), ms(p99));
        medians.push(ms(med));
    }
    println!(
        "  ratio pinip / host-local: median {:.2}",
        medians[0] / medians[1]
    );
    println!(
        "  ratio pinip / static no-op exec: median {:.2}",
        medians[0] / medians[2]
    );
    println!(
        "  ratio dynamic no-op / static no-op exec: median {:.2}",
        medians[3] / medians[2]
    );
    match medians.get(4) {
        Some(m) => println!(
            "  ratio static pinip / static no-op exec: median {:.2}",
            m / medians[2]
        ),
        None => println!(
            "  (static pinip not timed: integration/bench.sh add builds it and sets PINIP_STATIC_PINIP)"
        ),
    }
    ExitCode::SUCCESS
}
