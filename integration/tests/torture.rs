//! The torture run: seeded random operations against pinip on the real bed — StatefulSets
//! created, scaled, deleted and re-created at once; Deployments plain, `retain: app` and with a
//! fixed address; bare pods by name and by generateName, with and without explicit addresses;
//! pods with forged ownerReferences; pods deleted; webhook and binder replicas SIGKILLed and
//! restarted — done as a tenant with ordinary rights. After every step no address may be on
//! two live pods; every few steps (and at the end) every live pod's allocation must be backed
//! by a claim that records it once the binder settled; at the end no claim may be left without
//! a live holder except retained claims of existing workloads, and pool status must equal the
//! claims. A failure prints the seed and the step.
//!
//! `PINIP_TORTURE_SEED` (default: from the clock, printed) and `PINIP_TORTURE_OPS` (default
//! 300) choose the run; at least three kills happen whatever the seed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_integration::invariants::Snapshot;
use pinip_integration::stack::{Stack, StackOptions};
use serde_json::{Value, json};

const IMAGE: &str = "registry.invalid/none:1";
/// Addresses pods may ask for by `pinip.io/ip` (inside pool `ta`'s range).
const FIXED: [&str; 6] = [
    "10.41.0.10",
    "10.41.0.11",
    "10.41.0.12",
    "10.41.0.13",
    "10.41.0.14",
    "10.41.0.15",
];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

struct Run {
    stack: Stack,
    ns: String,
    tenant: Client,
    rng: Rng,
    kills: usize,
}

fn template(name: &str, annotations: Value) -> Value {
    json!({"metadata": {"labels": {"app": name}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}})
}

fn statefulset(name: &str, replicas: i32) -> Result<StatefulSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}}, "template": template(name, json!({}))}}))?)
}

impl Run {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.tenant.clone(), &self.ns)
    }

    async fn live_pods(&self) -> Result<Vec<Pod>> {
        Ok(self.pods().list(&ListParams::default()).await?.items)
    }

    /// One random operation; what it did, for the log. API refusals are outcomes, not errors.
    async fn step(&mut self) -> Result<String> {
        let sets: Api<StatefulSet> = Api::namespaced(self.tenant.clone(), &self.ns);
        let deploys: Api<Deployment> = Api::namespaced(self.tenant.clone(), &self.ns);
        let pp = PostParams::default();
        let outcome = |r: Result<(), kube::Error>| match r {
            Ok(()) => "ok".to_string(),
            Err(kube::Error::Api(s)) => format!("refused ({})", s.reason),
            Err(e) => format!("error ({e})"),
        };
        let op = self.rng.below(100);
        Ok(match op {
            0..=11 => {
                let name = format!("s{}", self.rng.below(2));
                let replicas = 1 + self.rng.below(3) as i32;
                let sts = statefulset(&name, replicas)?;
                let r = match sets.get_opt(&name).await? {
                    Some(_) => sets
                        .patch(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
                        )
                        .await
                        .map(|_| ()),
                    None => sets.create(&pp, &sts).await.map(|_| ()),
                };
                format!("statefulset {name} → {replicas}: {}", outcome(r))
            }
            12..=17 => {
                let name = format!("s{}", self.rng.below(2));
                let r = sets
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ());
                format!("delete statefulset {name}: {}", outcome(r))
            }
            18..=25 => {
                // Helm/Argo "replace": delete and create at once.
                let name = format!("s{}", self.rng.below(2));
                let sts = statefulset(&name, 2)?;
                let _ = sets.delete(&name, &DeleteParams::background()).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                while sets.get_opt(&name).await?.is_some() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let r = sets.create(&pp, &sts).await.map(|_| ());
                format!("replace statefulset {name}: {}", outcome(r))
            }
            26..=39 => {
                let name = format!("d{}", self.rng.below(2));
                let replicas = 1 + self.rng.below(3) as i32;
                let (variant, ann) = match self.rng.below(3) {
                    0 => ("plain", json!({})),
                    1 => ("retain app", json!({"pinip.io/retain": "app"})),
                    _ => {
                        let ip = *self.rng.pick(&FIXED);
                        ("fixed", json!({"pinip.io/ip": ip}))
                    }
                };
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                        "template": template(&name, ann)}}))?;
                let r = match deploys.get_opt(&name).await? {
                    Some(_) => deploys
                        .replace(&name, &pp, &{
                            let mut d = d;
                            d.metadata.resource_version = None;
                            d
                        })
                        .await
                        .map(|_| ()),
                    None => deploys.create(&pp, &d).await.map(|_| ()),
                };
                format!("deployment {name} ({variant}) → {replicas}: {}", outcome(r))
            }
            40..=45 => {
                let name = format!("d{}", self.rng.below(2));
                let r = deploys
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ());
                format!("delete deployment {name}: {}", outcome(r))
            }
            46..=59 => {
                let name = format!("b{}", self.rng.below(6));
                if self.pods().get_opt(&name).await?.is_some() {
                    let r = self
                        .pods()
                        .delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ());
                    format!("delete pod {name}: {}", outcome(r))
                } else {
                    let ann = if self.rng.below(2) == 0 {
                        json!({"pinip.io/ip": *self.rng.pick(&FIXED)})
                    } else {
                        json!({})
                    };
                    let p = pod(json!({"name": name, "annotations": ann}))?;
                    let r = self.pods().create(&pp, &p).await.map(|_| ());
                    format!("pod {name} {ann}: {}", outcome(r))
                }
            }
            60..=69 => {
                let ann = if self.rng.below(2) == 0 {
                    json!({"pinip.io/ip": *self.rng.pick(&FIXED)})
                } else {
                    json!({})
                };
                let p = pod(json!({"generateName": "g-", "annotations": ann}))?;
                let r = self.pods().create(&pp, &p).await.map(|_| ());
                format!("pod g-* {ann}: {}", outcome(r))
            }
            70..=79 => self.forge().await?,
            80..=93 => {
                let live = self.live_pods().await?;
                if live.is_empty() {
                    "no pod to delete".into()
                } else {
                    let name = self.rng.pick(&live).name_any();
                    let r = self
                        .pods()
                        .delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ());
                    format!("delete pod {name}: {}", outcome(r))
                }
            }
            _ => self.kill().await?,
        })
    }

    /// A pod that claims to be someone else: a controller reference to a live pod plus that
    /// pod's address, or a StatefulSet ordinal under a non-canonical name.
    async fn forge(&mut self) -> Result<String> {
        let live: Vec<Pod> = self
            .live_pods()
            .await?
            .into_iter()
            .filter(|p| p.annotations().contains_key(ALLOCATION))
            .collect();
        if live.is_empty() {
            return Ok("no pod to impersonate".into());
        }
        let victim = self.rng.pick(&live).clone();
        let a: Allocation = victim.annotations()[ALLOCATION].parse()?;
        let ip = a.interfaces[0].ips[0].address.addr().to_string();
        let n = self.rng.next() % 100_000;
        let (meta, what) = match victim
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
        {
            Some(c) if c.kind == "StatefulSet" && self.rng.below(2) == 0 => {
                let name = victim.name_any().replace('-', "-0");
                (
                    json!({"name": name, "ownerReferences": [c], "annotations": {"pinip.io/ip": ip}}),
                    format!("{name} with {}'s controller and address", victim.name_any()),
                )
            }
            Some(c) => (
                json!({"name": format!("forged-{n}"), "ownerReferences": [c],
                    "annotations": {"pinip.io/retain": "app"}}),
                format!("forged-{n} with {}'s controller", victim.name_any()),
            ),
            None => (
                json!({"name": format!("forged-{n}"), "annotations": {"pinip.io/ip": ip},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": victim.name_any(),
                        "uid": victim.uid(), "controller": true}]}),
                format!(
                    "forged-{n} owned by pod {} with its address",
                    victim.name_any()
                ),
            ),
        };
        let r = self
            .pods()
            .create(&PostParams::default(), &pod(meta)?)
            .await;
        Ok(match r {
            Ok(p) => format!("{what}: admitted as {:?}", p.annotations().get(ALLOCATION)),
            Err(kube::Error::Api(s)) => format!("{what}: refused ({})", s.reason),
            Err(e) => format!("{what}: error ({e})"),
        })
    }

    /// SIGKILL a webhook or binder replica and start it again.
    async fn kill(&mut self) -> Result<String> {
        self.kills += 1;
        let i = self.rng.below(2);
        if self.rng.below(2) == 0 {
            self.stack.hooks.kill_and_restart(i).await?;
            Ok(format!("SIGKILL webhook {i}, restarted"))
        } else {
            self.stack.binders.restart(i).await?;
            Ok(format!("SIGKILL binder {i}, restarted"))
        }
    }

    /// (b): every live pod's allocation backed by a claim that records it, within `limit`.
    async fn settled(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = Snapshot::take(&self.stack.client).await?;
            let dups = s.duplicates();
            if !dups.is_empty() {
                bail!("(a) an address is on two live pods: {dups:?}");
            }
            let unbacked = s.unbacked();
            if unbacked.is_empty() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("(b) not backed by a claim that records them after {limit:?}: {unbacked:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn pod(meta: Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({"metadata": meta,
        "spec": {"containers": [{"name": "app", "image": IMAGE}], "terminationGracePeriodSeconds": 0}}))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture() -> Result<()> {
    let seed = env_u64("PINIP_TORTURE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1
    });
    let ops = env_u64("PINIP_TORTURE_OPS").unwrap_or(300) as usize;
    eprintln!("torture: seed {seed}, {ops} operations (PINIP_TORTURE_SEED={seed} to repeat)");
    let stack = Stack::start(StackOptions {
        webhook_args: vec!["--cooldown=0s".into(), "--reservation-hold=10s".into()],
        binder_args: vec!["--reclaim-grace=5s".into()],
        ..Default::default()
    })
    .await?;
    // Two pools with different gateways on the bridge nodes; small, so addresses are reused.
    stack
        .pool(
            "ta",
            json!({"cidr": "10.41.0.0/24", "gateway": "10.41.0.1", "default": true,
                "ranges": ["10.41.0.10-10.41.0.49"]}),
        )
        .await?;
    stack
        .pool(
            "tb",
            json!({"cidr": "10.42.0.0/24", "gateway": "10.42.0.1", "default": true,
                "ranges": ["10.42.0.10-10.42.0.49"]}),
        )
        .await?;
    let ns = stack
        .bed
        .temp_namespace("torture", json!({"pinip.io/enabled": "true"}))
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let mut run = Run {
        stack,
        ns,
        tenant,
        rng: Rng(seed),
        kills: 0,
    };
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    for step in 1..=ops {
        // At least three kills, spread over the run.
        let what = if ops >= 4 && step % (ops / 4) == 0 && run.kills < 3 {
            run.kill().await
        } else {
            run.step().await
        }
        .with_context(|| format!("seed {seed}, step {step}"))?;
        eprintln!("torture: step {step}: {what}");
        let dups = Snapshot::take(&run.stack.client).await?.duplicates();
        if !dups.is_empty() {
            bail!(
                "seed {seed}, step {step} ({what}): (a) an address is on two live pods: {dups:?}"
            );
        }
        for p in run.live_pods().await? {
            seen.insert(p.uid().unwrap_or_default());
        }
        if step % 20 == 0 {
            run.settled(Duration::from_secs(45))
                .await
                .with_context(|| format!("seed {seed}, step {step} ({what})"))?;
        }
    }
    run.settled(Duration::from_secs(60))
        .await
        .with_context(|| format!("seed {seed}, at the end"))?;
    // (c) and (d), once the binder has released what it should.
    let client = run.stack.client.clone();
    let start = Instant::now();
    loop {
        let s = Snapshot::take(&client).await?;
        let leaked = s.leaked(&client).await?;
        let wrong = s.pool_status_wrong();
        if leaked.is_empty() && wrong.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!(
                "seed {seed}, at the end: (c) leaked claims {leaked:?}; (d) pool status {wrong:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "torture: seed {seed}: {ops} operations, {} kills, {} pods seen, all invariants held, {:.0}s",
        run.kills,
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    if run.kills < 3 {
        bail!("only {} kills happened", run.kills);
    }
    Ok(())
}
