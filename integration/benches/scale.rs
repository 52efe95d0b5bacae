//! Scale benchmark on the real test bed (a benchmark, not a test): what N existing claims cost
//! the webhook and the binder. In one run it
//!
//! 1. creates IPPool `scale` (10.50.0.0/16) holding N claims (default 50 000), IPPool `full`
//!    (10.52.0.0/22) 99 % claimed, and IPPool `empty` (10.51.0.0/24) with none, the claims
//!    written directly (retained members of a StatefulSet scaled to zero: they stay);
//! 2. starts one webhook and one binder (release builds) against them and prints their ready
//!    time and memory (VmRSS, and the peak VmHWM);
//! 3. sends AdmissionReviews straight to the webhook (kube-apiserver's client certificate,
//!    one kept-alive connection, serially): dry runs for a pod of each pool, then real
//!    decisions (the claim is written), and prints medians, p90 and the ratio to the empty pool;
//! 4. creates pods through kube-apiserver one at a time and prints how long the binder takes
//!    to bind each one's claim, and the binder's reconcile time.
//!
//!   integration/bench.sh scale            # builds release binaries, then runs this
//!   PINIP_SCALE_CLAIMS=50000 …             # claims in pool `scale` (default 50 000)

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_api::claim::RETAIN_LABEL;
use pinip_api::{IPClaim, IPPoolSpec, Owner, claim_name};
use pinip_integration::binders::start_binders;
use pinip_integration::controlplane::{client_for, write_kubeconfig};
use pinip_integration::pinip::{self, BINDER_USER, WEBHOOK_USER};
use pinip_integration::{Bed, BedOptions};
use serde_json::{Value, json};

const FILL_CONCURRENCY: usize = 32;
const FILLER_NS: &str = "scale-filler";
const FILLER: &str = "filler";
/// Serial review samples per pool and kind.
const DRY_SAMPLES: usize = 300;
const REAL_SAMPLES: usize = 100;
const SETTLE_SAMPLES: usize = 10;

fn pools() -> [(&'static str, Value); 3] {
    [
        ("scale", json!({"cidr": "10.50.0.0/16"})),
        ("full", json!({"cidr": "10.52.0.0/22"})),
        ("empty", json!({"cidr": "10.51.0.0/24"})),
    ]
}

/// A process's resident and peak resident memory, in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} in /proc/{pid}/status"))?;
        let v: f64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(v / 1024.0)
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// Creates `count` claims of `pool` (its usable addresses from `skip` on), as the webhook
/// would, and marks them Released as the binder would: retained members of the filler
/// StatefulSet (scaled to zero), which the binder keeps.
async fn fill(
    writer: &Client,
    status_writer: &Client,
    pool: &str,
    spec: &Value,
    count: usize,
    first_ordinal: usize,
) -> Result<()> {
    let usable = serde_json::from_value::<IPPoolSpec>(spec.clone())?.usable()?;
    ensure!(
        usable.size() >= count as u128,
        "pool {pool} is smaller than {count}"
    );
    let api: Api<IPClaim> = Api::all(writer.clone());
    let status_api: Api<IPClaim> = Api::all(status_writer.clone());
    let released = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    futures::stream::iter(0..count)
        .map(|i| {
            let (api, status_api, released) = (api.clone(), status_api.clone(), released.clone());
            let ip: IpAddr = usable.usable.nth(i as u128).expect("inside the pool");
            let owner = Owner {
                kind: "StatefulSet".into(),
                namespace: FILLER_NS.into(),
                name: FILLER.into(),
                ordinal: Some((first_ordinal + i) as i32),
            };
            let mut labels = pinip_api::set::labels(&owner);
            labels.insert(RETAIN_LABEL.into(), "ordinal".into());
            let name = claim_name("", &ip);
            let claim: IPClaim = serde_json::from_value(json!({
                "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
                "metadata": {"name": name, "labels": labels},
                "spec": {"pool": pool, "address": usable.with_prefix(ip).to_string(),
                         "owner": owner, "interface": "eth0"},
            }))
            .expect("claim");
            async move {
                api.create(&PostParams::default(), &claim).await?;
                // The binder's write (status has no subresource: the main resource).
                status_api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"status": {"phase": "Released", "releasedAt": released}}),
                        ),
                    )
                    .await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

struct Quantiles {
    median: f64,
    p90: f64,
}

fn quantiles(mut v: Vec<Duration>) -> Quantiles {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    Quantiles {
        median: q(0.5),
        p90: q(0.9),
    }
}

/// An AdmissionReview for pod `name` of namespace `ns` asking for `pool`, as kube-apiserver
/// sends it when a ReplicaSet controller creates the pod.
fn review(ns: &str, name: &str, pool: &str, dry_run: bool) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{:012}", name.len()),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns,
                                    "annotations": {"pinip.io/pool": pool}},
                       "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}},
            "dryRun": dry_run,
        }
    }))
    .expect("review")
}

/// Sends one review to the webhook; the time to its answer. Fails unless it was allowed with
/// a patch (an address decided).
async fn send(hook: &Client, body: Vec<u8>) -> Result<Duration> {
    let req = http::Request::post("/mutate")
        .header("content-type", "application/json")
        .body(body)?;
    let t = Instant::now();
    let reply: Value = hook.request(req).await?;
    let took = t.elapsed();
    let resp = &reply["response"];
    ensure!(
        resp["allowed"] == json!(true) && resp["patch"].is_string(),
        "webhook did not decide an address: {resp}"
    );
    Ok(took)
}

/// Serial decisions for pods of `pool`; latencies.
async fn decisions(
    hook: &Client,
    ns: &str,
    pool: &str,
    n: usize,
    dry_run: bool,
    tag: &str,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            send(
                hook,
                review(ns, &format!("{tag}-{pool}-{i}"), pool, dry_run),
            )
            .await?,
        );
    }
    Ok(out)
}

/// `(sum, count)` of the binder's reconcile-time histogram for `scope` (`changed`: the
/// claims watch events touched; `all`: every claim).
async fn reconcile_time(
    b: &pinip_integration::binders::Binders,
    scope: &str,
) -> Result<(f64, f64)> {
    Ok((
        b.metric(
            0,
            &format!("pinip_binder_reconcile_seconds_sum{{scope=\"{scope}\"}}"),
        )
        .await?,
        b.metric(
            0,
            &format!("pinip_binder_reconcile_seconds_count{{scope=\"{scope}\"}}"),
        )
        .await?,
    ))
}

/// Mean milliseconds per reconcile between two `(sum, count)` readings, and their number.
fn mean_ms(before: (f64, f64), after: (f64, f64)) -> (f64, f64) {
    let n = after.1 - before.1;
    let mean = if n > 0.0 {
        (after.0 - before.0) / n * 1e3
    } else {
        f64::NAN
    };
    (mean, n)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("PINIP_SCALE_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let bed = Bed::start(BedOptions {
        nodes: 1,
        ..Default::default()
    })
    .await?;
    let client = bed.client();
    pinip::install(&bed)?;
    for (name, spec) in pools() {
        pinip::apply_pool(&client, name, spec).await?;
    }
    let filler_ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FILLER_NS}});
    pinip::apply(&client, &filler_ns).await?;
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": FILLER},
        "spec": {"replicas": 0, "serviceName": FILLER,
                 "selector": {"matchLabels": {"app": FILLER}},
                 "template": {"metadata": {"labels": {"app": FILLER}},
                              "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}}},
    }))?;
    Api::<StatefulSet>::namespaced(client.clone(), FILLER_NS)
        .create(&PostParams::default(), &sts)
        .await?;

    // The claims, written with the identities that write them in a cluster (the
    // pinip-claim-writers policy admits no one else).
    let dir = bed.dir.join("scale-bench");
    std::fs::create_dir_all(&dir)?;
    let webhook_id = client_for(&bed.identity_kubeconfig(
        &dir.join("webhook.kubeconfig"),
        WEBHOOK_USER,
        Some("system:serviceaccounts"),
    )?)
    .await?;
    let binder_id = client_for(&bed.identity_kubeconfig(
        &dir.join("binder.kubeconfig"),
        BINDER_USER,
        Some("system:serviceaccounts"),
    )?)
    .await?;
    let [(scale, scale_spec), (full, full_spec), _] = pools();
    let full_size = serde_json::from_value::<IPPoolSpec>(full_spec.clone())?
        .usable()?
        .size() as usize;
    let full_count = full_size * 99 / 100;
    let t = Instant::now();
    fill(&webhook_id, &binder_id, scale, &scale_spec, n, 0).await?;
    fill(&webhook_id, &binder_id, full, &full_spec, full_count, n).await?;
    let fill_s = t.elapsed().as_secs_f64();
    let total = n + full_count;
    println!(
        "scale benchmark: {total} claims written in {fill_s:.1} s ({:.0}/s, {FILL_CONCURRENCY} in parallel): {n} in pool {scale} (10.50.0.0/16), {full_count} of {full_size} in pool {full} (99 %), none in pool empty",
        total as f64 / fill_s
    );

    let t = Instant::now();
    let hooks =
        pinip::start_webhooks(&bed, 1, &["--max-reservations-per-namespace=1000000"]).await?;
    let webhook_ready = t.elapsed();
    let webhook_pid = hooks.procs[0].pid().context("webhook pid")?;
    let t = Instant::now();
    let binders = start_binders(&bed, 1, &["--leader-elect=false"]).await?;
    let binder_ready = t.elapsed();
    let binder_pid = binders.pid(0).context("binder pid")?;
    // Let the binder finish its first pass and both settle after the initial list.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (w_rss, w_hwm) = memory(webhook_pid)?;
    let (b_rss, b_hwm) = memory(binder_pid)?;
    println!(
        "  webhook: ready in {:.2} s, RSS {w_rss:.0} MiB (peak {w_hwm:.0} MiB)",
        webhook_ready.as_secs_f64()
    );
    println!(
        "  binder:  ready in {:.2} s, RSS {b_rss:.0} MiB (peak {b_hwm:.0} MiB)",
        binder_ready.as_secs_f64()
    );

    pinip::register(&client, &hooks, "pinip").await?;
    let ns = bed
        .temp_namespace("scale", json!({"pinip.io/enabled": "true"}))
        .await?;
    let cp = bed.cp.as_ref().context("a bed this bench started")?;
    let hook_kc = dir.join("admission-client.kubeconfig");
    write_kubeconfig(
        &hook_kc,
        &format!("https://localhost:{}", hooks.ports[0]),
        &cp.pki.ca_pem,
        &cp.admission_client,
    )?;
    let hook = client_for(Path::new(&hook_kc)).await?;
    // Warm-up: the connection, and every code path once.
    for pool in ["empty", scale, full] {
        decisions(&hook, &ns, pool, 20, true, "warm").await?;
    }
    let mut dry: Vec<(&str, Vec<Duration>)> = vec![
        ("empty", Vec::new()),
        (scale, Vec::new()),
        (full, Vec::new()),
    ];
    // Interleaved in rounds, so drift (a compaction, a GC) hits all pools alike.
    for round in 0..DRY_SAMPLES / 50 {
        for (pool, samples) in dry.iter_mut() {
            samples.extend(decisions(&hook, &ns, pool, 50, true, &format!("dry{round}")).await?);
        }
    }
    let base = quantiles(dry[0].1.clone()).median;
    for (pool, d) in &dry {
        let q = quantiles(d.clone());
        println!(
            "  /mutate dry run, pod of pool {pool:5}: median {:.3} ms, p90 {:.3} ms (×{:.2} the empty pool's median), {} samples",
            q.median,
            q.p90,
            q.median / base,
            d.len()
        );
    }
    // Real decisions write the claim: the 99 % full pool has only a few addresses to give.
    let full_free = full_size - full_count;
    let mut base = f64::NAN;
    for (pool, samples) in [
        ("empty", REAL_SAMPLES),
        (scale, REAL_SAMPLES),
        (full, full_free),
    ] {
        let q = quantiles(decisions(&hook, &ns, pool, samples, false, "real").await?);
        if pool == "empty" {
            base = q.median;
        }
        println!(
            "  /mutate real (claim written), pod of pool {pool:5}: median {:.3} ms, p90 {:.3} ms (×{:.2}), {samples} samples",
            q.median,
            q.p90,
            q.median / base
        );
    }

    // The binder after one pod event: a pod created through kube-apiserver (the webhook
    // reserves its address), until the binder has recorded the pod's uid on its claim.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let before = reconcile_time(&binders, "changed").await?;
    let before_all = reconcile_time(&binders, "all").await?;
    let mut settle = Vec::new();
    for i in 0..SETTLE_SAMPLES {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("settle-{i}"), "annotations": {"pinip.io/pool": scale}},
            "spec": {"nodeSelector": {"pinip.test/nowhere": "yes"},
                     "containers": [{"name": "app", "image": "registry.invalid/none:1"}]},
        }))?;
        let created = pods.create(&PostParams::default(), &p).await?;
        let t = Instant::now();
        let uid = created.uid().context("pod uid")?;
        let alloc: Allocation = created
            .annotations()
            .get(ALLOCATION)
            .context("no allocation")?
            .parse()?;
        let claim = alloc
            .interfaces
            .first()
            .and_then(|i| i.ips.first())
            .context("allocation without an address")?
            .claim
            .clone();
        loop {
            let c = claims.get(&claim).await?;
            if c.spec.pod.as_ref().is_some_and(|p| p.uid == uid) {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("binder did not bind {claim} to settle-{i} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        settle.push(t.elapsed());
    }
    let (changed_ms, changed_n) = mean_ms(before, reconcile_time(&binders, "changed").await?);
    let (all_ms, all_n) = mean_ms(before_all, reconcile_time(&binders, "all").await?);
    let s = quantiles(settle);
    let full = if all_n > 0.0 {
        format!("{all_n:.0} of every claim, {all_ms:.1} ms each")
    } else {
        "no reconcile of every claim".to_string()
    };
    println!(
        "  binder: claim bound {:.1} ms (median, p90 {:.1} ms) after its pod's creation, over {SETTLE_SAMPLES} pods; meanwhile {changed_n:.0} reconciles of what changed, {changed_ms:.2} ms each, and {full}",
        s.median, s.p90
    );
    // A full reconcile (every claim) as the binder runs it at start and every resync.
    let (full_ms, full_n) = mean_ms((0.0, 0.0), reconcile_time(&binders, "all").await?);
    println!(
        "  binder: full reconcile of all {total} claims: {full_ms:.1} ms on average over {full_n:.0}"
    );
    let (w_rss, w_hwm) = memory(webhook_pid)?;
    let (b_rss, b_hwm) = memory(binder_pid)?;
    println!(
        "  at the end: webhook RSS {w_rss:.0} MiB (peak {w_hwm:.0}), binder RSS {b_rss:.0} MiB (peak {b_hwm:.0})"
    );
    let left = pods.list(&Default::default()).await?.items.len();
    ensure!(left == SETTLE_SAMPLES, "pods vanished: {left}");
    Ok(())
}
