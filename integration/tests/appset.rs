//! A workload's address set (`pinip.io/retain: app`) on the bed: it never holds more than its
//! bound (replicas + maxSurge, or `pinip.io/set-size`), replacements reuse its members, it
//! shrinks back after a scale-down, a pod that would grow it past the bound waits with a
//! message naming the set, the set is listed by its labels, and two workloads never share a
//! member. On the code before the bound, deleting a Deployment's 3 pods gave the replacements 3
//! new addresses and a rolling update left 6 claims for 3 replicas.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::IPClaim;
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_integration::pinip::kubectl;
use pinip_integration::stack::{Stack, StackOptions};
use pinip_integration::wait::{event_message, pods_running, reason_and_message, wait_for};
use serde_json::{Value, json};

const IMAGE: &str = "registry.invalid/none:1";

fn deployment(name: &str, replicas: i32, annotations: Value) -> Result<Deployment> {
    let mut a = json!({"pinip.io/retain": "app"});
    if let (Some(a), Some(extra)) = (a.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": a},
                "spec": {"containers": [{"name": "app", "image": IMAGE}],
                         "terminationGracePeriodSeconds": 0},
            },
        },
    }))?)
}

/// The addresses of Deployment `name`'s set, listed by its labels; checked against every
/// claim of that owner, so a member without labels would fail here.
async fn set(client: &Client, ns: &str, name: &str) -> Result<BTreeSet<String>> {
    let claims: Api<IPClaim> = Api::all(client.clone());
    let addr = |c: &IPClaim| c.ip().map(|ip| ip.to_string()).unwrap_or_default();
    // One LIST, so that both views come from the same moment.
    let all = claims.list(&ListParams::default()).await?.items;
    let labelled: BTreeSet<String> = all
        .iter()
        .filter(|c| {
            let l = c.labels();
            l.get("pinip.io/workload-kind").map(String::as_str) == Some("Deployment")
                && l.get("pinip.io/workload-namespace") == Some(&ns.to_string())
                && l.get("pinip.io/workload-name") == Some(&name.to_string())
        })
        .map(addr)
        .collect();
    let owned: BTreeSet<String> = all
        .iter()
        .filter(|c| {
            c.spec.owner.kind == "Deployment"
                && c.spec.owner.namespace == ns
                && c.spec.owner.name == name
        })
        .map(addr)
        .collect();
    ensure!(
        labelled == owned,
        "labels list {labelled:?}, the owner has {owned:?}"
    );
    Ok(owned)
}

/// The addresses of the live pods `selector` selects.
async fn pod_addresses(pods: &Api<Pod>, selector: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for p in pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
    {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(raw) = p.annotations().get(ALLOCATION) {
            let a: Allocation = raw.parse()?;
            out.insert(a.interfaces[0].ips[0].address.addr().to_string());
        }
    }
    Ok(out)
}

/// Samples the size of a set every 100 ms in the background; the largest size seen.
struct Sampler {
    max: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Sampler {
    fn start(client: &Client, ns: &str, name: &str) -> Sampler {
        let (max, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let samples = Arc::new(AtomicUsize::new(0));
        let (m, s, n) = (max.clone(), stop.clone(), samples.clone());
        let (client, ns, name) = (client.clone(), ns.to_string(), name.to_string());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let size = set(&client, &ns, &name).await?.len();
                m.fetch_max(size, Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        });
        Sampler {
            max,
            samples,
            stop,
            task,
        }
    }

    /// The largest size seen since the last call; an error if sampling stopped (a sampler
    /// that died would report 0 and prove nothing).
    fn take_max(&self) -> Result<usize> {
        ensure!(!self.task.is_finished(), "the set sampler stopped");
        ensure!(
            self.samples.swap(0, Ordering::Relaxed) > 0,
            "no sample since the last reading"
        );
        Ok(self.max.swap(0, Ordering::Relaxed))
    }

    async fn finish(self) -> Result<usize> {
        let max = self.take_max()?;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await??;
        Ok(max)
    }
}

/// Waits until Deployment `name` has rolled out completely.
async fn rolled_out(client: &Client, ns: &str, name: &str, replicas: i32) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Deployment {name} rolled out"),
        Duration::from_secs(120),
        || async {
            let d = api.get(name).await?;
            let s = d.status.clone().unwrap_or_default();
            Ok((s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.replicas == Some(replicas)
                && s.available_replicas == Some(replicas))
            .then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_sets_stay_within_their_bound() -> Result<()> {
    let stack = Stack::start(StackOptions {
        webhook_args: vec!["--cooldown=0s".into()],
        binder_args: vec!["--reclaim-grace=5s".into(), "--set-shrink-grace=5s".into()],
        ..Default::default()
    })
    .await?;
    stack
        .pool(
            "apps",
            json!({"cidr": "10.70.0.0/24", "gateway": "10.70.0.1", "default": true}),
        )
        .await?;
    let ns = stack
        .bed
        .temp_namespace("apps", json!({"pinip.io/enabled": "true"}))
        .await?;
    let client = &stack.client;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // A Deployment of 3: bound 3 + maxSurge 25 % (rounded up: 1) = 4.
    deploys
        .create(&PostParams::default(), &deployment("web", 3, json!({}))?)
        .await?;
    pods_running(&pods, "app=web", 3).await?;
    let first = set(client, &ns, "web").await?;
    ensure!(first.len() == 3, "first set {first:?}");
    ensure!(pod_addresses(&pods, "app=web").await? == first);
    let listed = kubectl(
        &stack.bed,
        &[
            "get",
            "ipc",
            "-l",
            &format!("pinip.io/workload-name=web,pinip.io/workload-namespace={ns}"),
            "-o",
            "name",
        ],
    )?;
    ensure!(listed.lines().count() == 3, "kubectl lists {listed}");
    eprintln!("set of web: {first:?}");

    // Deleting every pod: the replacements take members; the set never passes 4.
    let sampler = Sampler::start(client, &ns, "web");
    let old: BTreeSet<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=web"),
    )
    .await?;
    let replaced = wait_for(
        "3 replacement pods Running",
        Duration::from_secs(90),
        || async {
            let up = pods_running(&pods, "app=web", 3).await?;
            Ok(up
                .iter()
                .all(|p| !old.contains(&p.uid().unwrap_or_default()))
                .then_some(up))
        },
    )
    .await?;
    ensure!(replaced.len() == 3);
    let after_delete = set(client, &ns, "web").await?;
    let on_pods = pod_addresses(&pods, "app=web").await?;
    ensure!(
        on_pods.is_subset(&after_delete) && first.is_subset(&after_delete),
        "replacements on {on_pods:?}, set {after_delete:?}, first set {first:?}"
    );
    let max = sampler.take_max()?;
    eprintln!("after deleting every pod: pods on {on_pods:?}, set {after_delete:?}, largest {max}");
    ensure!(max <= 4, "the set held {max} addresses (bound 4)");

    // A rolling update keeps within the bound at every sample.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await?;
    rolled_out(client, &ns, "web", 3).await?;
    pods_running(&pods, "app=web", 3).await?;
    let after_roll = set(client, &ns, "web").await?;
    let on_pods = pod_addresses(&pods, "app=web").await?;
    let max = sampler.take_max()?;
    eprintln!("after a rolling update: pods on {on_pods:?}, set {after_roll:?}, largest {max}");
    ensure!(
        max <= 4,
        "the set held {max} addresses during the rollout (bound 4)"
    );
    ensure!(on_pods.is_subset(&after_roll));

    // Scale 3 → 5 (bound 5 + 2 = 7) → 3: the set shrinks back to ≤ 4 after the grace.
    let scale = |n: i32| {
        let deploys = deploys.clone();
        async move {
            deploys
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
        }
    };
    scale(5).await?;
    pods_running(&pods, "app=web", 5).await?;
    let at5 = set(client, &ns, "web").await?;
    ensure!(at5.len() <= 7, "at 5 replicas the set is {at5:?}");
    scale(3).await?;
    pods_running(&pods, "app=web", 3).await?;
    let shrunk = wait_for(
        "the set back within 4 addresses",
        Duration::from_secs(60),
        || async {
            let s = set(client, &ns, "web").await?;
            Ok((s.len() <= 4).then_some(s))
        },
    )
    .await?;
    let max = sampler.finish().await?;
    eprintln!(
        "scaled 3 → 5 → 3: set {} at 5, then {shrunk:?}; largest {max}",
        at5.len()
    );
    ensure!(
        max <= 7,
        "the set held {max} addresses (bound 7 at 5 replicas)"
    );
    ensure!(pod_addresses(&pods, "app=web").await?.is_subset(&shrunk));

    // An explicit size: 3 replicas, 2 addresses. The third pod waits with a message naming
    // the set and its bound, and is admitted as soon as a member is released.
    deploys
        .create(
            &PostParams::default(),
            &deployment("fixed", 3, json!({"pinip.io/set-size": "2"}))?,
        )
        .await?;
    pods_running(&pods, "app=fixed", 2).await?;
    let msg = event_message(
        client,
        &ns,
        "the ReplicaSet's FailedCreate event",
        Duration::from_secs(60),
        |e| reason_and_message(e, "FailedCreate", "address set of Deployment"),
    )
    .await?;
    eprintln!("the waiting pod: {msg}");
    ensure!(
        msg.contains(&format!("Deployment {ns}/fixed"))
            && msg.contains("its bound is 2 (pinip.io/set-size 2)"),
        "{msg}"
    );
    let fixed = set(client, &ns, "fixed").await?;
    ensure!(fixed.len() == 2, "set of fixed: {fixed:?}");
    let one = pods
        .list(&ListParams::default().labels("app=fixed"))
        .await?
        .items
        .into_iter()
        .next()
        .context("a pod of fixed")?;
    pods.delete(&one.name_any(), &DeleteParams::default())
        .await?;
    pods_running(&pods, "app=fixed", 2).await?;
    ensure!(set(client, &ns, "fixed").await? == fixed);
    ensure!(pod_addresses(&pods, "app=fixed").await?.is_subset(&fixed));

    // Two workloads never share a member, forged ownerReferences included.
    deploys
        .create(&PostParams::default(), &deployment("other", 1, json!({}))?)
        .await?;
    pods_running(&pods, "app=other", 1).await?;
    let other = set(client, &ns, "other").await?;
    let web = set(client, &ns, "web").await?;
    ensure!(other.is_disjoint(&web) && other.is_disjoint(&fixed));
    let tenant = stack.tenant(&ns).await?;
    let tenant_pods: Api<Pod> = Api::namespaced(tenant, &ns);
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let other_rs = rs
        .list(&ListParams::default().labels("app=other"))
        .await?
        .items
        .into_iter()
        .next()
        .context("other's ReplicaSet")?;
    let web_member = web.iter().next().context("a member of web")?.clone();
    let thief = |name: &str, rs_name: &str, uid: &str| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "other"},
                "annotations": {"pinip.io/retain": "app", "pinip.io/ip": web_member},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": rs_name, "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": IMAGE}]},
        }))?)
    };
    let denial = |r: kube::Result<Pod>| -> Result<String> {
        match r {
            Ok(p) => anyhow::bail!(
                "pod {} admitted on {:?}",
                p.name_any(),
                p.annotations().get(ALLOCATION)
            ),
            Err(kube::Error::Api(s)) => Ok(s.message),
            Err(e) => Err(e.into()),
        }
    };
    let msg = denial(
        tenant_pods
            .create(
                &PostParams::default(),
                &thief(
                    "thief",
                    &other_rs.name_any(),
                    &other_rs.uid().unwrap_or_default(),
                )?,
            )
            .await,
    )?;
    ensure!(
        msg.contains(&format!("belongs to Deployment {ns}/web")),
        "{msg}"
    );
    let msg = denial(
        tenant_pods
            .create(
                &PostParams::default(),
                &thief(
                    "forger",
                    &other_rs.name_any(),
                    "00000000-0000-0000-0000-000000000000",
                )?,
            )
            .await,
    )?;
    ensure!(msg.contains("needs a verified owner"), "{msg}");
    // A pod cannot widen a set: the bound is read from the workload, not from the pod. A
    // tenant pod joining `fixed` (its ReplicaSet as controller) with its own set-size waits.
    let fixed_rs = rs
        .list(&ListParams::default().labels("app=fixed"))
        .await?
        .items
        .into_iter()
        .next()
        .context("fixed's ReplicaSet")?;
    let widen: Pod = serde_json::from_value(json!({
        "metadata": {"name": "widen", "labels": {"app": "fixed"},
            "annotations": {"pinip.io/retain": "app", "pinip.io/set-size": "10"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": fixed_rs.name_any(), "uid": fixed_rs.uid(), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": IMAGE}]},
    }))?;
    let msg = denial(tenant_pods.create(&PostParams::default(), &widen).await)?;
    ensure!(
        msg.contains("its bound is 2 (pinip.io/set-size 2)"),
        "{msg}"
    );
    ensure!(set(client, &ns, "fixed").await? == fixed);
    eprintln!("two workloads: other {other:?}, web {web:?}; forged pods denied");
    ensure!(set(client, &ns, "web").await? == web);
    Ok(())
}
