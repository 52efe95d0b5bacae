//! Admission benchmark on the real test bed (a benchmark, not a test). In one run it
//!
//! 1. creates N pods with no pinip webhook registered (the baseline), then
//! 2. registers two webhook replicas behind the bed's load balancer (a userspace TCP proxy
//!    standing in for a Service) and creates N pods in a pinip-enabled namespace, then
//! 3. points the registration straight at replica 0 (no proxy on the path, as with a
//!    Service that the kernel forwards) and creates N more,
//!
//! and prints for each phase pod-creation throughput and its ratio to the baseline,
//! client-side create latencies, the webhooks' own decision time (and the part of it spent
//! on the IPClaim create), /mutate as the webhook serves it and as kube-apiserver measures it
//! (`apiserver_admission_webhook_admission_duration_seconds`), webhook calls and claim writes
//! per pod, and each process's CPU seconds per 1000 pods (from `/proc`).
//!
//!   integration/bench.sh            # builds release binaries, then runs this
//!   PINIP_BENCH_PODS=1000 …         # pods per phase (default 1000)
//!   PINIP_BENCH_PPROF_DIR=/tmp/p …   # also kube-apiserver's CPU profile of each phase
//!                                    # (go tool pprof -top -cum /tmp/p/kube-apiserver-with-pinip.pb.gz)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use pinip_integration::{Bed, BedOptions};
use pinip_integration::{measure, pinip};
use serde_json::json;

const CONCURRENCY: usize = 16;

/// The label of the webhooks' /mutate series in `pinip_webhook_request_seconds`.
const MUTATE_PATH: &str = "path=\"/mutate\"";

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        // Never scheduled, and not even tried: only admission and storage are measured. (A
        // scheduler that tries writes each pod's Unschedulable condition, a status patch that
        // cost kube-apiserver more than a pod create, and landed inside a slow phase's window
        // but mostly after a fast one's.)
        "spec": {"schedulerName": "pinip-bench-no-scheduler",
                 "containers": [{"name": "app", "image": "registry.invalid/none:1"}]},
    }))
    .expect("pod")
}

struct Phase {
    pods_per_sec: f64,
    median_ms: f64,
    p99_ms: f64,
}

async fn create_pods(client: &Client, ns: &str, n: usize) -> Result<Phase> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &pod(&format!("p-{i}")))
                    .await?;
                Ok::<_, kube::Error>(t.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let total = start.elapsed();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    Ok(Phase {
        pods_per_sec: n as f64 / total.as_secs_f64(),
        median_ms: q(0.5),
        p99_ms: q(0.99),
    })
}

/// With a profile directory (`PINIP_BENCH_PPROF_DIR`): kube-apiserver's CPU profile over the
/// next `seconds` (longer than the phase it covers; idle time adds nothing to a CPU profile),
/// to `<dir>/kube-apiserver-<phase>.pb.gz`.
fn start_profile(
    dir: Option<&PathBuf>,
    client: &Client,
    phase: &str,
    seconds: u64,
) -> Option<(PathBuf, tokio::task::JoinHandle<Result<()>>)> {
    let dir = dir?.clone();
    let path = dir.join(format!("kube-apiserver-{phase}.pb.gz"));
    let (client, out) = (client.clone(), path.clone());
    let task = tokio::spawn(async move {
        std::fs::create_dir_all(&dir)?;
        measure::apiserver_cpu_profile(&client, seconds, &out).await
    });
    Some((path, task))
}

async fn finish_profile(
    profile: Option<(PathBuf, tokio::task::JoinHandle<Result<()>>)>,
) -> Result<Option<PathBuf>> {
    let Some((path, task)) = profile else {
        return Ok(None);
    };
    task.await??;
    Ok(Some(path))
}

/// Calls of pinip's admission webhooks and writes of IPClaims, as kube-apiserver counts them.
async fn pinip_costs(client: &Client) -> Result<(f64, f64)> {
    let m = measure::apiserver_metrics(client).await?;
    let calls = measure::counter(
        &m,
        "apiserver_admission_webhook_admission_duration_seconds_count",
        &["pinip.io\""],
    );
    Ok((calls, measure::writes(&m, "ipclaims")))
}

/// Cumulative histogram buckets (le → count) of one webhook's CREATE admissions.
async fn webhook_buckets(client: &Client, webhook: &str) -> Result<BTreeMap<u64, f64>> {
    let text = measure::apiserver_metrics(client).await?;
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    // Summed over the label combinations (rejected, type) of this webhook.
    add_buckets(
        &mut buckets,
        &text,
        "apiserver_admission_webhook_admission_duration_seconds_bucket{",
        |l| l.contains(&format!("name=\"{webhook}\"")) && l.contains("operation=\"CREATE\""),
    )?;
    Ok(buckets)
}

/// Cumulative buckets of one of the webhooks' own histograms (`pinip_webhook_<name>`, the
/// series whose labels contain `labels`), summed over replicas, with its sum under the key 0
/// (no bucket has le 0).
async fn webhook_histogram(
    hooks: &pinip::Webhooks,
    name: &str,
    labels: &str,
) -> Result<BTreeMap<u64, f64>> {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let sum = format!("pinip_webhook_{name}_sum");
    for port in &hooks.metrics_ports {
        let text = pinip::webhook_get(*port, "/metrics").await?;
        add_buckets(
            &mut buckets,
            &text,
            &format!("pinip_webhook_{name}_bucket{{"),
            |l| l.contains(labels),
        )?;
        for line in text
            .lines()
            .filter(|l| l.starts_with(&sum) && l.contains(labels))
        {
            let v = line.rsplit(' ').next().unwrap_or_default();
            *buckets.entry(0).or_default() += v.parse::<f64>()?;
        }
    }
    Ok(buckets)
}

/// The mean in ms of a histogram from [`webhook_histogram`].
fn mean_ms(h: &BTreeMap<u64, f64>) -> f64 {
    let count = h.get(&u64::MAX).copied().unwrap_or(0.0);
    h.get(&0).copied().unwrap_or(f64::NAN) / count * 1e3
}

/// The share of observations at or below `le_ms` (a bucket bound).
fn share_within(h: &BTreeMap<u64, f64>, le_ms: u64) -> f64 {
    let count = h.get(&u64::MAX).copied().unwrap_or(0.0);
    h.get(&(le_ms * 1000)).copied().unwrap_or(f64::NAN) / count
}

/// Adds to `buckets` (le in µs → count) the bucket lines of `text` that start with `prefix`
/// and that `keep` accepts.
fn add_buckets(
    buckets: &mut BTreeMap<u64, f64>,
    text: &str,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    for line in text.lines().filter(|l| l.starts_with(prefix) && keep(l)) {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let count = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok());
        if let (Some(le), Some(count)) = (le, count) {
            let le_us = if le == "+Inf" {
                u64::MAX
            } else {
                (le.parse::<f64>()? * 1e6) as u64
            };
            *buckets.entry(le_us).or_default() += count;
        }
    }
    Ok(())
}

/// A quantile from cumulative buckets, interpolated linearly inside its bucket (as PromQL's
/// histogram_quantile does).
fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let total = *buckets.get(&u64::MAX)?;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_count) = (0u64, 0.0);
    // Key 0 is a histogram's sum (webhook_histogram), not a bucket.
    for (&le, &count) in buckets.range(1..) {
        if count >= rank {
            if le == u64::MAX {
                return Some(prev_le as f64 / 1e3);
            }
            let frac = if count > prev_count {
                (rank - prev_count) / (count - prev_count)
            } else {
                0.0
            };
            return Some((prev_le as f64 + frac * (le - prev_le) as f64) / 1e3);
        }
        (prev_le, prev_count) = (le, count);
    }
    None
}

#[tokio::main]
async fn main() -> Result<()> {
    let pprof_dir = std::env::var_os("PINIP_BENCH_PPROF_DIR").map(PathBuf::from);
    let n = measure::env_usize("PINIP_BENCH_PODS", 1000);
    let bed = Bed::start(BedOptions {
        nodes: 1,
        apiserver_profiling: pprof_dir.is_some(),
        ..Default::default()
    })
    .await?;
    let client = bed.client();
    pinip::install(&bed)?;
    pinip::apply_pool(
        &client,
        "bench",
        json!({"cidr": "10.90.0.0/20", "default": true}),
    )
    .await?;

    // Warm-up: the first writes of a fresh API server are slower for both phases alike.
    let warm = bed.temp_namespace("warm", json!({})).await?;
    create_pods(&client, &warm, 50).await?;

    let mut cpu = measure::Cpu::default();
    for (name, pid) in bed
        .cp
        .as_ref()
        .context("a bed this benchmark started")?
        .named_pids()
    {
        cpu.add(&name, [pid]);
    }
    let plain = bed.temp_namespace("baseline", json!({})).await?;
    // Profile windows of about twice the phases' lengths on this bed (~800 and ~150 pods/s).
    let profile = start_profile(
        pprof_dir.as_ref(),
        &client,
        "baseline",
        (n / 400 + 2) as u64,
    );
    let cpu_before = cpu.snapshot()?;
    let baseline = create_pods(&client, &plain, n).await?;
    let cpu_baseline = measure::cpu_per_1000(&cpu_before, &cpu.snapshot()?, n);
    let profile_baseline = finish_profile(profile).await?;

    // No binder runs here, so no reservation is ever bound: the per-namespace cap on unbound
    // reservations (which counts claims the binder has not bound yet) is lifted for the
    // 1000-pod phase.
    let hooks =
        pinip::start_webhooks(&bed, 2, &["--max-reservations-per-namespace=1000000"]).await?;
    cpu.add(
        "pinip-webhook (2 replicas)",
        hooks.procs.iter().filter_map(|p| p.pid()),
    );
    let via_lb = with_pinip(
        &bed,
        &hooks,
        &mut cpu,
        n,
        Route::LoadBalancer,
        pprof_dir.as_ref(),
    )
    .await?;
    let direct = with_pinip(&bed, &hooks, &mut cpu, n, Route::Direct, None).await?;

    println!(
        "admission benchmark: {n} pods per phase, {CONCURRENCY} concurrent creates, 2 webhook replicas"
    );
    println!(
        "  baseline (no webhook):  {:7.1} pods/s   create median {:6.2} ms  p99 {:6.2} ms",
        baseline.pods_per_sec, baseline.median_ms, baseline.p99_ms
    );
    println!("  CPU seconds per 1000 pods, baseline: {cpu_baseline}");
    for phase in [&via_lb, &direct] {
        phase.print(&baseline, n);
    }
    for (phase, p) in [
        ("baseline", profile_baseline),
        ("with pinip", via_lb.profile.clone()),
    ] {
        if let Some(p) = p {
            println!(
                "  kube-apiserver CPU profile, {phase}: go tool pprof -top -cum {}",
                p.display()
            );
        }
    }
    Ok(())
}

/// How kube-apiserver reaches the webhooks in a phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through the bed's load balancer, a userspace TCP proxy in this process standing in for
    /// a Service (both replicas).
    LoadBalancer,
    /// Straight to replica 0, with no proxy on the path, as a Service forwarded by the kernel
    /// (kube-proxy) would be.
    Direct,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::LoadBalancer => {
                "with pinip, through the bed's load balancer (a userspace proxy for a Service)"
            }
            Route::Direct => "with pinip, straight to replica 0 (no proxy on the path)",
        }
    }
}

/// What one phase with the webhook measured.
struct WithPinip {
    route: Route,
    phase: Phase,
    cpu: String,
    calls_per_pod: f64,
    claim_writes_per_pod: f64,
    decision: BTreeMap<u64, f64>,
    claim_create: BTreeMap<u64, f64>,
    served: BTreeMap<u64, f64>,
    mutate: BTreeMap<u64, f64>,
    validate: BTreeMap<u64, f64>,
    profile: Option<PathBuf>,
}

/// Registers the webhooks at `route`, then creates `n` pods in a new pinip-enabled namespace.
async fn with_pinip(
    bed: &Bed,
    hooks: &pinip::Webhooks,
    cpu: &mut measure::Cpu,
    n: usize,
    route: Route,
    pprof_dir: Option<&PathBuf>,
) -> Result<WithPinip> {
    let client = bed.client();
    let url = match route {
        Route::LoadBalancer => hooks.url(),
        Route::Direct => hooks.replica_url(0),
    };
    pinip::register_at(&client, &url, &hooks.ca_pem, "pinip").await?;
    let enabled = bed
        .temp_namespace("enabled", json!({"pinip.io/enabled": "true"}))
        .await?;
    // Wait until the webhooks know the pool (a first pod decided) and kube-apiserver calls
    // the new address (its webhook configuration is read from a watch).
    let api: Api<Pod> = Api::namespaced(client.clone(), &enabled);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .create(&PostParams::default(), &pod("probe"))
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "webhook never admitted a probe pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mutate_before = webhook_buckets(&client, "enabled-namespaces.mutate.pinip.io").await?;
    let validate_before = webhook_buckets(&client, "pods.validate.pinip.io").await?;
    let decision_before = webhook_histogram(hooks, "decision_seconds", "").await?;
    let create_before = webhook_histogram(hooks, "claim_create_seconds", "").await?;
    let served_before = webhook_histogram(hooks, "request_seconds", MUTATE_PATH).await?;
    let replica1_before = replica_served(hooks, 1).await?;
    let costs_before = pinip_costs(&client).await?;
    let profile = start_profile(pprof_dir, &client, "with-pinip", (n / 75 + 3) as u64);
    let cpu_before = cpu.snapshot()?;
    let phase = create_pods(&client, &enabled, n).await?;
    let cpu_with = measure::cpu_per_1000(&cpu_before, &cpu.snapshot()?, n);
    let profile = finish_profile(profile).await?;
    let costs_after = pinip_costs(&client).await?;
    if route == Route::Direct {
        let by_replica1 = replica_served(hooks, 1).await? - replica1_before;
        anyhow::ensure!(
            by_replica1 == 0.0,
            "replica 1 served {by_replica1} /mutate requests in the phase straight to replica 0"
        );
    }
    let delta = |after: BTreeMap<u64, f64>, before: &BTreeMap<u64, f64>| -> BTreeMap<u64, f64> {
        after
            .into_iter()
            .map(|(le, c)| (le, c - before.get(&le).copied().unwrap_or(0.0)))
            .collect()
    };
    Ok(WithPinip {
        route,
        phase,
        cpu: cpu_with,
        calls_per_pod: (costs_after.0 - costs_before.0) / n as f64,
        claim_writes_per_pod: (costs_after.1 - costs_before.1) / n as f64,
        decision: delta(
            webhook_histogram(hooks, "decision_seconds", "").await?,
            &decision_before,
        ),
        claim_create: delta(
            webhook_histogram(hooks, "claim_create_seconds", "").await?,
            &create_before,
        ),
        served: delta(
            webhook_histogram(hooks, "request_seconds", MUTATE_PATH).await?,
            &served_before,
        ),
        mutate: delta(
            webhook_buckets(&client, "enabled-namespaces.mutate.pinip.io").await?,
            &mutate_before,
        ),
        validate: delta(
            webhook_buckets(&client, "pods.validate.pinip.io").await?,
            &validate_before,
        ),
        profile,
    })
}

/// /mutate requests replica `i` has served.
async fn replica_served(hooks: &pinip::Webhooks, i: usize) -> Result<f64> {
    let text = pinip::webhook_get(hooks.metrics_ports[i], "/metrics").await?;
    let count = format!("pinip_webhook_request_seconds_count{{{MUTATE_PATH}}}");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&count))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

impl WithPinip {
    fn print(&self, baseline: &Phase, n: usize) {
        let (p, label) = (&self.phase, self.route.label());
        println!("  {label}:");
        println!(
            "    {:7.1} pods/s   create median {:6.2} ms  p99 {:6.2} ms",
            p.pods_per_sec, p.median_ms, p.p99_ms
        );
        println!(
            "    throughput ratio (with / without): {:.2}; create median ratio: {:.2}",
            p.pods_per_sec / baseline.pods_per_sec,
            p.median_ms / baseline.median_ms
        );
        let (decision, create, served) = (&self.decision, &self.claim_create, &self.served);
        println!(
            "    webhook-measured decision time (inside /mutate, claim write included): p50 {:.2} ms, p99 {:.2} ms over {} decisions, {:.1} % within 25 ms",
            quantile(decision, 0.5).unwrap_or(f64::NAN),
            quantile(decision, 0.99).unwrap_or(f64::NAN),
            decision.get(&u64::MAX).copied().unwrap_or(0.0),
            100.0 * share_within(decision, 25)
        );
        println!(
            "      of which the IPClaim create (request to answer): p50 {:.2} ms, p99 {:.2} ms over {} creates; means: decision {:.2} ms, create {:.2} ms, the rest {:.2} ms",
            quantile(create, 0.5).unwrap_or(f64::NAN),
            quantile(create, 0.99).unwrap_or(f64::NAN),
            create.get(&u64::MAX).copied().unwrap_or(0.0),
            mean_ms(decision),
            mean_ms(create),
            mean_ms(decision) - mean_ms(create),
        );
        println!(
            "    /mutate requests as the webhook serves them (headers read to answer): p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, {:.1} % within 25 ms",
            quantile(served, 0.5).unwrap_or(f64::NAN),
            quantile(served, 0.99).unwrap_or(f64::NAN),
            mean_ms(served),
            100.0 * share_within(served, 25)
        );
        for (name, b) in [
            ("mutate", &self.mutate),
            ("validate (pods)", &self.validate),
        ] {
            println!(
                "    kube-apiserver-measured {name} webhook latency: p50 {:.2} ms, p99 {:.2} ms over {} calls, {:.1} % within 25 ms",
                quantile(b, 0.5).unwrap_or(f64::NAN),
                quantile(b, 0.99).unwrap_or(f64::NAN),
                b.get(&u64::MAX).copied().unwrap_or(0.0),
                100.0 * share_within(b, 25)
            );
        }
        println!(
            "      (kube-apiserver's buckets are 5, 25, 100, 500 ms …: its quantiles are interpolated within them)"
        );
        println!(
            "    per pod (kube-apiserver's counters): {:.2} pinip webhook calls, {:.2} IPClaim writes (no binder runs here); {n} pods",
            self.calls_per_pod, self.claim_writes_per_pod
        );
        println!("    CPU seconds per 1000 pods: {}", self.cpu);
    }
}
