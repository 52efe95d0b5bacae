//! Rollout benchmark (a benchmark, not a test): the time from creating Deployments until every
//! one of their pods is Running, as a user rolling out an application sees it, for three IPAMs
//! on one bed in the same run, each on its own nodes:
//!
//!   - host-local (Debian's; no API cost: the baseline),
//!   - whereabouts (built from its Go module; a cluster-wide Lease and an IPPool update per
//!     ADD and per DEL),
//!   - pinip (webhook and binder replicas as the manifests run them; the plugin reads the
//!     allocation from the pod-annotations capability).
//!
//! Two shapes each: one Deployment of N replicas, and N/10 Deployments of 10. The bed's
//! kube-controller-manager and kube-scheduler run with raised client QPS so that they are not
//! the limit; its node agents make sandboxes with the bed's CNI runtime (bridge + the IPAM, in
//! network namespaces), at most 8 at a time as a runtime's worker pool. Each rollout gets a
//! fresh namespace, deleted (and waited for) before the next, so that one IPAM's teardown
//! does not load the next one's rollout. Printed per rollout: time to all Running, pods/s,
//! failed pod creations and failed sandboxes (events), API writes per pod as kube-apiserver
//! counts them, and CPU seconds per 1000 pods of each process; then the medians over the
//! runs and the ratios pinip / host-local and pinip / whereabouts.
//!
//!   integration/bench.sh rollout      # PINIP_BENCH_RUNS (3), PINIP_ROLLOUT_PODS (1000),
//!                                     # PINIP_ROLLOUT_WHEREABOUTS_RUNS (as many; whereabouts
//!                                     # takes ~8 min per 1000 pods each way on 2 cores)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use pinip_integration::measure::{self, Cpu, env_usize, median};
use pinip_integration::stack::{Stack, StackOptions};
use pinip_integration::{BedOptions, Ipam, whereabouts};
use serde_json::{Value, json};

/// Nodes per IPAM: 1000 pods fit in 5 nodes of 250 pods each with room to spare, and no
/// node's bridge nears its 1024 ports.
const NODES_PER_IPAM: usize = 5;
const CREATE_CONCURRENCY: usize = 16;
const ROLLOUT_LIMIT: Duration = Duration::from_secs(20 * 60);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    HostLocal,
    Whereabouts,
    Pinip,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::HostLocal, Kind::Whereabouts, Kind::Pinip];

    fn label(self) -> &'static str {
        match self {
            Kind::HostLocal => "host-local",
            Kind::Whereabouts => "whereabouts",
            Kind::Pinip => "pinip",
        }
    }

    /// Its nodes: node-1…5 host-local, node-6…10 whereabouts, node-11…15 pinip.
    fn nodes(self) -> Vec<String> {
        let first = match self {
            Kind::HostLocal => 1,
            Kind::Whereabouts => 1 + NODES_PER_IPAM,
            Kind::Pinip => 1 + 2 * NODES_PER_IPAM,
        };
        (first..first + NODES_PER_IPAM)
            .map(|i| format!("node-{i}"))
            .collect()
    }

    fn namespace_labels(self) -> Value {
        match self {
            Kind::Pinip => json!({"pinip.io/enabled": "true"}),
            _ => json!({}),
        }
    }
}

fn deployment(name: &str, replicas: usize, nodes: &[String]) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                // The default grace period: a pod leaves the API only after its node agent has
                // torn its sandbox down (CNI DEL included), so that a deleted namespace means
                // no IPAM work left behind.
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}
                        ]}]
                    }}},
                    "containers": [{"name": "app", "image": "registry.invalid/none:1"}],
                },
            },
        },
    }))?)
}

/// What one rollout measured.
struct Rollout {
    secs: f64,
    failed_creates: usize,
    failed_sandboxes: usize,
    /// (what, count per pod)
    per_pod: Vec<(String, f64)>,
    cpu: String,
}

/// API writes per resource, and pinip's webhook calls, as kube-apiserver counts them.
fn costs(metrics: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = [
        "pods",
        "ipclaims",
        "ippools",
        "overlappingrangeipreservations",
        "leases",
    ]
    .iter()
    .map(|r| (format!("{r} writes"), measure::writes(metrics, r)))
    .collect();
    out.push((
        "pinip webhook calls".into(),
        measure::counter(
            metrics,
            "apiserver_admission_webhook_admission_duration_seconds_count",
            &["pinip.io\""],
        ),
    ));
    out
}

/// Creates `deployments` Deployments of `replicas` in a fresh namespace on `kind`'s nodes and
/// waits until all their pods are Running; then deletes the namespace and waits until it is
/// gone.
async fn rollout(
    stack: &Stack,
    cpu: &Cpu,
    kind: Kind,
    deployments: usize,
    replicas: usize,
) -> Result<Rollout> {
    let client = &stack.client;
    let ns = stack
        .bed
        .temp_namespace(
            &format!("rollout-{}", kind.label()),
            kind.namespace_labels(),
        )
        .await?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let want = deployments * replicas;
    let nodes = kind.nodes();

    // The watch starts before the first create, so that no pod's Running is missed.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut running: HashSet<String> = HashSet::new();
        let mut stream = watcher(pods_api, watcher::Config::default()).boxed();
        let mut ready_tx = Some(ready_tx);
        while let Some(ev) = stream.try_next().await? {
            let pod = match ev {
                watcher::Event::InitDone => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                watcher::Event::Delete(_) | watcher::Event::Init => continue,
            };
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Running") {
                running.insert(pod.name_any());
                if running.len() >= want {
                    return Ok::<_, anyhow::Error>(Instant::now());
                }
            }
        }
        bail!("pod watch ended")
    });
    ready_rx.await.context("pod watch never listed")?;

    let before = measure::apiserver_metrics(client).await?;
    let cpu_before = cpu.snapshot()?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    futures::stream::iter(0..deployments)
        .map(|i| {
            let deploys = deploys.clone();
            let d = deployment(&format!("app-{i}"), replicas, &nodes);
            async move { Ok::<_, anyhow::Error>(deploys.create(&PostParams::default(), &d?).await?) }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let done = tokio::time::timeout(ROLLOUT_LIMIT, watch)
        .await
        .with_context(|| format!("{want} pods not Running after {ROLLOUT_LIMIT:?}"))???;
    let secs = (done - start).as_secs_f64();
    let cpu_after = cpu.snapshot()?;
    let after = measure::apiserver_metrics(client).await?;

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events = events.list(&ListParams::default()).await?.items;
    let count = |reason: &str| {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.count.unwrap_or(1).max(1) as usize)
            .sum::<usize>()
    };
    let (b, a) = (costs(&before), costs(&after));
    let per_pod = a
        .iter()
        .zip(&b)
        .map(|((what, a), (_, b))| (what.clone(), (a - b) / want as f64))
        .collect();
    let r = Rollout {
        secs,
        failed_creates: count("FailedCreate"),
        failed_sandboxes: count("FailedCreatePodSandBox"),
        per_pod,
        cpu: measure::cpu_per_1000(&cpu_before, &cpu_after, want),
    };

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    let gone = Instant::now();
    // Gone from the API, and no sandbox left on any node (a pod deleted at once would leave
    // its DEL for later).
    while namespaces.get_opt(&ns).await?.is_some() || !stack.bed.pod_sandboxes().await?.is_empty() {
        if gone.elapsed() > ROLLOUT_LIMIT {
            bail!("namespace {ns} or its sandboxes not gone after {ROLLOUT_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(r)
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = env_usize("PINIP_BENCH_RUNS", 3).max(1);
    let pods = env_usize("PINIP_ROLLOUT_PODS", 1000).max(10) / 10 * 10;
    // 0: no whereabouts (its rollouts take minutes; iterate on the other two).
    let wb_runs = env_usize("PINIP_ROLLOUT_WHEREABOUTS_RUNS", runs).min(runs);
    let wb = whereabouts::Build::get()?;
    let mut bed = BedOptions {
        nodes: 3 * NODES_PER_IPAM,
        containerd_nodes: Vec::new(),
        ..Default::default()
    };
    for node in Kind::HostLocal.nodes() {
        bed.node_ipam.push((node, Ipam::HostLocal));
    }
    // Named by the nodes' network configuration before the bed starts; written after.
    let wb_dir = tempfile::tempdir()?;
    let wb_config = wb_dir.path().join("whereabouts.conf");
    for node in Kind::Whereabouts.nodes() {
        bed.node_ipam.push((
            node,
            Ipam::Whereabouts {
                bin_dir: wb.bin_dir(),
                config: wb_config.clone(),
                range: "10.40.0.0/16".into(),
            },
        ));
    }
    // The pinip nodes take the stack's IPAM (pinip).
    let stack = Stack::start(StackOptions {
        bed,
        ..Default::default()
    })
    .await?;
    whereabouts::install(&stack.bed, &wb, &wb_config).await?;
    stack
        .pool("rollout", json!({"cidr": "10.90.0.0/16", "default": true}))
        .await?;

    let mut cpu = Cpu::default();
    for (name, pid) in stack.bed.cp.as_ref().context("a started bed")?.named_pids() {
        cpu.add(&name, [pid]);
    }
    cpu.add(
        "pinip-webhook (2)",
        stack.hooks.procs.iter().filter_map(|p| p.pid()),
    );
    cpu.add("pinip-binder (2)", stack.binders.pids());

    // Warm-up: a first small rollout per IPAM (caches, connections, first writes).
    for kind in Kind::ALL {
        rollout(&stack, &cpu, kind, 1, 10).await?;
    }

    let shapes = [(1, pods), (pods / 10, 10)];
    // secs[shape][kind] over the runs
    let mut secs = vec![vec![Vec::new(); Kind::ALL.len()]; shapes.len()];
    println!(
        "rollout benchmark: {runs} runs; {NODES_PER_IPAM} nodes per IPAM, sandboxes by the bed's CNI runtime (bridge + IPAM), 8 at a time"
    );
    for run in 1..=runs {
        for (s, &(deployments, replicas)) in shapes.iter().enumerate() {
            for (k, kind) in Kind::ALL.into_iter().enumerate() {
                if kind == Kind::Whereabouts && run > wb_runs {
                    continue;
                }
                let r = rollout(&stack, &cpu, kind, deployments, replicas).await?;
                let want = deployments * replicas;
                println!(
                    "run {run}, {deployments} Deployment(s) × {replicas}, {:<11}: {:6.1} s to all Running ({:5.1} pods/s), {} failed pod creates, {} failed sandboxes",
                    kind.label(),
                    r.secs,
                    want as f64 / r.secs,
                    r.failed_creates,
                    r.failed_sandboxes
                );
                let per_pod: Vec<String> = r
                    .per_pod
                    .iter()
                    .filter(|(_, v)| *v > 0.0)
                    .map(|(what, v)| format!("{what} {v:.2}"))
                    .collect();
                println!("    per pod: {}", per_pod.join(", "));
                println!("    CPU s per 1000 pods: {}", r.cpu);
                secs[s][k].push(r.secs);
            }
        }
    }
    println!("medians over {runs} runs (whereabouts: {wb_runs}):");
    for (s, &(deployments, replicas)) in shapes.iter().enumerate() {
        let m: Vec<f64> = secs[s].iter().map(|v| median(v)).collect();
        println!(
            "  {deployments} × {replicas}: host-local {:.1} s, whereabouts {:.1} s, pinip {:.1} s; pinip / host-local {:.2} (target ≤ 1.3), pinip / whereabouts {:.2} (target ≤ 0.5)",
            m[0],
            m[1],
            m[2],
            m[2] / m[0],
            m[2] / m[1]
        );
    }
    Ok(())
}
