//! pinip's promise — one address, one live pod — attacked the way a tenant with ordinary
//! rights (ClusterRole `edit` in one namespace) and everyday operations would, on one bed with
//! macvlan nodes, two webhook replicas and two binders. Each case failed on the code before
//! ownership was proven by writes (see the ownership issue): generateName pods lost their
//! claim, a Deployment of 2 with one `pinip.io/ip` ran both pods on it, a forged ownerReference
//! or a `db-00` pod took another pod's address, and a StatefulSet re-created at once ran on a
//! claim the binder had deleted.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pinip_api::IPClaim;
use pinip_api::annotations::{ALLOCATION, Allocation};
use pinip_integration::controlplane::upstream_bin_dir;
use pinip_integration::invariants::Snapshot;
use pinip_integration::stack::{Stack, StackOptions};
use pinip_integration::suite::Suite;
use pinip_integration::wait::{
    event_message, pod_running, pods_running, reason_and_message, wait_for,
};
use pinip_integration::{BedOptions, MainPlugin};
use serde_json::{Value, json};

const IMAGE: &str = "registry.invalid/none:1";

fn pod(meta: Value, spec_extra: Value) -> Result<Pod> {
    let mut spec = json!({"containers": [{"name": "app", "image": IMAGE}],
        "terminationGracePeriodSeconds": 0});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": meta, "spec": spec}),
    )?)
}

fn allocated(p: &Pod) -> Result<(String, String)> {
    let a: Allocation = p
        .annotations()
        .get(ALLOCATION)
        .with_context(|| format!("pod {} has no allocation", p.name_any()))?
        .parse()?;
    let ip = &a.interfaces[0].ips[0];
    Ok((ip.claim.clone(), ip.address.addr().to_string()))
}

async fn denied(api: &Api<Pod>, p: &Pod) -> Result<String> {
    match api.create(&PostParams::default(), p).await {
        Ok(created) => bail!("pod {} was admitted", created.name_any()),
        Err(kube::Error::Api(s)) => Ok(s.message),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the claim records exactly this pod (name and uid).
async fn bound(client: &Client, p: &Pod) -> Result<IPClaim> {
    let (claim, _) = allocated(p)?;
    let claims: Api<IPClaim> = Api::all(client.clone());
    let (name, uid) = (p.name_any(), p.uid().unwrap_or_default());
    wait_for(
        &format!("claim {claim} bound to {name}"),
        Duration::from_secs(20),
        || async {
            Ok(claims.get_opt(&claim).await?.filter(|c| {
                c.spec
                    .pod
                    .as_ref()
                    .is_some_and(|r| r.name == name && r.uid == uid)
            }))
        },
    )
    .await
}

/// No address on two live pods of namespace `ns` right now (each case checks its own, so
/// that one case's failure does not fail the next).
async fn no_duplicates(client: &Client, ns: &str) -> Result<()> {
    let dups = Snapshot::take_in(client, Some(ns)).await?.duplicates();
    ensure!(dups.is_empty(), "an address is on two live pods: {dups:?}");
    Ok(())
}

/// Polls `no_duplicates` for `d`.
async fn never_duplicated_for(client: &Client, ns: &str, d: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < d {
        no_duplicates(client, ns).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Every live pod's allocation (in `ns`, or everywhere) is backed by a claim that records it,
/// once the binder settled.
async fn settled(client: &Client, ns: Option<&str>) -> Result<()> {
    let mut last = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let s = Snapshot::take_in(client, ns).await?;
        let dups = s.duplicates();
        ensure!(dups.is_empty(), "an address is on two live pods: {dups:?}");
        last = s.unbacked();
        if last.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("live pods not backed by a claim that records them after 30s: {last:?}")
}

/// `kubectl apply -f -` of `obj` as the admin; its stderr (where kubectl prints warnings).
fn kubectl_apply(stack: &Stack, obj: &Value) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(upstream_bin_dir()?.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&stack.bed.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(obj.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn main() {
    pinip_integration::cases!(
        Suite::new(start),
        generate_name_pod_keeps_its_claim,
        one_fixed_address_serves_one_pod,
        forged_owners_take_nothing,
        statefulset_replaced_at_once,
        subresources_cannot_rewrite,
        other_network_refused,
        refused_pods_leave_nothing,
        forged_reviews_refused,
        unreadable_claim_keeps_its_address,
        recreated_while_the_bind_waits,
        zz_settled_after_all_cases,
    )
    .run()
}

/// The stack every case runs on: macvlan pods, short holds and grace periods, two pools.
/// Last (cases run in the order of `main`, one at a time unless --test-threads says
/// otherwise): whatever the cases left, every claim settles with its pod.
async fn zz_settled_after_all_cases(stack: &Stack) -> Result<()> {
    settled(&stack.client, None).await
}

async fn start() -> Result<Stack> {
    let stack = Stack::start(StackOptions {
        bed: BedOptions {
            main_plugin: MainPlugin::Macvlan,
            ..Default::default()
        },
        webhook_args: vec![
            "--cooldown=0s".into(),
            "--reservation-hold=10s".into(),
            "--max-reservations-per-namespace=3".into(),
        ],
        binder_args: vec!["--reclaim-grace=5s".into()],
        ..Default::default()
    })
    .await?;
    stack
        .pool(
            "own",
            json!({"cidr": "10.40.0.0/24", "gateway": "10.40.0.1", "default": true}),
        )
        .await?;
    // Explicit addresses come from their own pool, so no default decision takes them first.
    stack
        .pool(
            "fixed",
            json!({"cidr": "10.45.0.0/24", "gateway": "10.45.0.1"}),
        )
        .await?;
    Ok(stack)
}

/// Case 1: a bare pod created with only generateName runs past the binder's reclaim grace
/// with its claim bound; a second pod of the same prefix (the same owner identity) asking for
/// that address is denied while the first lives.
async fn generate_name_pod_keeps_its_claim(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("gen", json!({"pinip.io/enabled": "true"}))
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &ns);
    let created = pods
        .create(
            &PostParams::default(),
            &pod(json!({"generateName": "gen-"}), json!({}))?,
        )
        .await?;
    let p = pod_running(&pods, &created.name_any()).await?;
    let (claim, ip) = allocated(&p)?;
    bound(&stack.client, &p).await?;
    // Past the reclaim grace (5 s) several times over: the claim stays with its pod.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let c = bound(&stack.client, &p).await?;
    eprintln!(
        "case 1: {} keeps {ip} (IPClaim {claim}) past the reclaim grace, recorded as {:?}",
        p.name_any(),
        c.spec.pod
    );
    let same_prefix = pod(
        json!({"generateName": "gen-", "annotations": {"pinip.io/ip": ip}}),
        json!({}),
    )?;
    let msg = denied(&pods, &same_prefix).await?;
    ensure!(
        msg.contains(&format!("is held by live pod {ns}/{}", p.name_any())),
        "{msg}"
    );
    eprintln!("case 1: same owner identity denied: {msg}");
    no_duplicates(&stack.client, &ns).await
}

/// Case 2: a Deployment of 2 whose template fixes one address runs one pod; the second is
/// denied (the ReplicaSet records why), kubectl warns at creation, and a rolling update of a
/// 1-replica Deployment with the default surge never has both pods on the address.
async fn one_fixed_address_serves_one_pod(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("fixed", json!({"pinip.io/enabled": "true"}))
        .await?;
    let deploy = |replicas: i32, version: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fixed", "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "fixed"}},
                "template": {"metadata": {"labels": {"app": "fixed", "version": version},
                    "annotations": {"pinip.io/ip": "10.45.0.50"}},
                    "spec": {"containers": [{"name": "app", "image": IMAGE}],
                        "terminationGracePeriodSeconds": 0}}}})
    };
    let warnings = kubectl_apply(stack, &deploy(2, "1"))?;
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
    pods_running(&pods, "app=fixed", 1).await?;
    never_duplicated_for(&stack.client, &ns, Duration::from_secs(8)).await?;
    ensure!(
        warnings.contains("pinip: Deployment") && warnings.contains("3 pods at once"),
        "no admission warning from kubectl: {warnings:?}"
    );
    eprintln!("case 2: kubectl warned: {}", warnings.trim());
    let live = pods
        .list(&ListParams::default().labels("app=fixed"))
        .await?
        .items;
    ensure!(live.len() == 1, "{} pods exist for one address", live.len());
    let failed = event_message(
        &stack.client,
        &ns,
        "the ReplicaSet's FailedCreate naming the holder",
        Duration::from_secs(20),
        |e| reason_and_message(e, "FailedCreate", "is held by live pod"),
    )
    .await?;
    eprintln!("case 2: second replica denied: {failed}");

    // One replica, then a rolling update with the default maxSurge: the new pod waits.
    kubectl_apply(stack, &deploy(1, "1"))?;
    pods_running(&pods, "app=fixed", 1).await?;
    kubectl_apply(stack, &deploy(1, "2"))?;
    never_duplicated_for(&stack.client, &ns, Duration::from_secs(10)).await?;
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), &ns);
    deployments
        .delete("fixed", &DeleteParams::default())
        .await?;
    Ok(())
}

/// Case 3: a pod whose controller reference names the victim pod, and a pod `db-00` with a
/// genuine controller reference to StatefulSet `db`, get neither the victim's nor `db-0`'s
/// address.
async fn forged_owners_take_nothing(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("forge", json!({"pinip.io/enabled": "true"}))
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod(
            json!({"name": "victim", "annotations": {"pinip.io/ip": "10.45.0.60"}}),
            json!({}),
        )?,
    )
    .await?;
    let victim = pod_running(&pods, "victim").await?;
    let forged = pod(
        json!({"name": "thief", "annotations": {"pinip.io/ip": "10.45.0.60"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "victim",
                "uid": victim.uid(), "controller": true}]}),
        json!({}),
    )?;
    let msg = denied(&pods, &forged).await?;
    ensure!(msg.contains("10.45.0.60"), "{msg}");
    eprintln!("case 3: controller reference to the victim pod denied: {msg}");

    let sets: Api<StatefulSet> = Api::namespaced(tenant.clone(), &ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}],
                    "terminationGracePeriodSeconds": 0}}}}))?;
    let sts = sets.create(&PostParams::default(), &sts).await?;
    let db0 = pod_running(&pods, "db-0").await?;
    let (_, db0_ip) = allocated(&db0)?;
    let owner = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
        "uid": sts.uid(), "controller": true}]);
    // The same ordinal by a non-canonical name: admitted as its own owner, another address.
    let impostor = pods
        .create(
            &PostParams::default(),
            &pod(
                json!({"name": "db-00", "ownerReferences": owner}),
                json!({"nodeSelector": {"pinip.test/nowhere": "yes"}}),
            )?,
        )
        .await?;
    let (_, got) = allocated(&impostor)?;
    ensure!(got != db0_ip, "db-00 got db-0's address {got}");
    // ... and asking for db-0's address outright is denied.
    let msg = denied(
        &pods,
        &pod(
            json!({"name": "db-000", "ownerReferences": owner,
                "annotations": {"pinip.io/ip": db0_ip}}),
            json!({}),
        )?,
    )
    .await?;
    eprintln!("case 3: db-00 got {got} (db-0 has {db0_ip}); db-000 asking for it: {msg}");
    // A StatefulSet pod whose ordinal is free but whose set's uid is forged retains nothing.
    let msg = denied(
        &pods,
        &pod(
            json!({"name": "db-5", "annotations": {"pinip.io/retain": "ordinal"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                    "uid": "00000000-0000-0000-0000-000000000000", "controller": true}]}),
            json!({}),
        )?,
    )
    .await?;
    ensure!(msg.contains("needs a verified owner"), "{msg}");
    no_duplicates(&stack.client, &ns).await?;
    sets.delete("db", &DeleteParams::default()).await?;
    Ok(())
}

/// Case 4: a StatefulSet deleted and re-created at once (Helm/Argo "replace"), five rounds:
/// after each, no address on two live pods and every pod's claim records it.
async fn statefulset_replaced_at_once(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("replace", json!({"pinip.io/enabled": "true"}))
        .await?;
    let sets: Api<StatefulSet> = Api::namespaced(stack.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "rep"},
        "spec": {"replicas": 2, "serviceName": "rep", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "rep"}},
            "template": {"metadata": {"labels": {"app": "rep"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}],
                    "terminationGracePeriodSeconds": 0}}}}))?;
    sets.create(&PostParams::default(), &sts).await?;
    pods_running(&pods, "app=rep", 2).await?;
    for round in 1..=5 {
        sets.delete("rep", &DeleteParams::background()).await?;
        wait_for(
            "the old StatefulSet gone",
            Duration::from_secs(30),
            || async { Ok(sets.get_opt("rep").await?.is_none().then_some(())) },
        )
        .await?;
        sets.create(&PostParams::default(), &sts).await?;
        let up = pods_running(&pods, "app=rep", 2).await?;
        for p in &up {
            bound(&stack.client, p).await?;
        }
        settled(&stack.client, Some(&ns)).await?;
        let ips: Vec<String> = up
            .iter()
            .map(|p| allocated(p).map(|a| a.1))
            .collect::<Result<_>>()?;
        eprintln!("case 4: round {round}: pods on {ips:?}, every claim records its pod");
    }
    sets.patch(
        "rep",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await?;
    sets.delete("rep", &DeleteParams::default()).await?;
    Ok(())
}

/// Case 5 (side door): the allocation cannot be rewritten after creation through the pod,
/// `pods/status` or a Binding — refused by kube-apiserver itself (the ValidatingAdmissionPolicy
/// in manifests/base/policies.yaml), even for the cluster admin.
async fn subresources_cannot_rewrite(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("sub", json!({"pinip.io/enabled": "true"}))
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &ns);
    let admin: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
    for name in ["victim", "mine"] {
        pods.create(
            &PostParams::default(),
            &pod(json!({"name": name}), json!({}))?,
        )
        .await?;
    }
    let victim = pod_running(&pods, "victim").await?;
    pod_running(&pods, "mine").await?;
    let stolen = victim.annotations()[ALLOCATION].clone();
    let rewrite = Patch::Merge(json!({"metadata": {"annotations": {ALLOCATION: stolen}}}));
    let refused = |r: Result<Pod, kube::Error>, what: &str| -> Result<String> {
        match r {
            Ok(_) => bail!("{what} rewrote the allocation"),
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 || s.code == 400 => {
                ensure!(
                    s.message.contains("pinip-pod-annotations"),
                    "{what} refused, but not by pinip's policy: {}",
                    s.message
                );
                Ok(s.message)
            }
            Err(e) => Err(e.into()),
        }
    };
    // Everything else about a pod stays writable (labels here).
    pods.patch(
        "mine",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .context("a label patch was refused")?;
    admin
        .patch_status(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": "still writable"}})),
        )
        .await
        .context("a status patch without pinip annotations was refused")?;
    let msg = refused(
        pods.patch("mine", &PatchParams::default(), &rewrite).await,
        "a tenant's pod patch",
    )?;
    ensure!(msg.contains("cannot change after creation"), "{msg}");
    eprintln!("case 5: pod patch refused: {msg}");
    let msg = refused(
        admin
            .patch_status("mine", &PatchParams::default(), &rewrite)
            .await,
        "the admin's pods/status patch",
    )?;
    eprintln!("case 5: pods/status patch refused: {msg}");
    // A Binding carrying the allocation for a pod not scheduled yet.
    pods.create(
        &PostParams::default(),
        &pod(
            json!({"name": "pending"}),
            json!({"nodeSelector": {"pinip.test/nowhere": "yes"}}),
        )?,
    )
    .await?;
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "pending", "annotations": {ALLOCATION: victim.annotations()[ALLOCATION]}},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let r = admin
        .create_subresource::<Value, Value>("binding", "pending", &PostParams::default(), &binding)
        .await;
    match r {
        Ok(_) => bail!("a Binding carried pinip annotations into the pod"),
        Err(kube::Error::Api(s)) => {
            ensure!(s.message.contains("pinip-pod-annotations"), "{}", s.message);
            eprintln!(
                "case 5: Binding with pinip annotations refused: {}",
                s.message
            );
        }
        Err(e) => return Err(e.into()),
    }
    no_duplicates(&stack.client, &ns).await
}

/// Case 6 (side door): a pool of another network (same cidr) cannot put an address held on
/// the primary network onto the primary interface.
async fn other_network_refused(stack: &Stack) -> Result<()> {
    let ns = stack
        .bed
        .temp_namespace("net", json!({"pinip.io/enabled": "true"}))
        .await?;
    // The same cidr as the primary network's "fixed", on network net1.
    pinip_integration::pinip::apply_pool(
        &stack.client,
        "fixed-net1",
        json!({"cidr": "10.45.0.0/24", "gateway": "10.45.0.1", "network": "net1"}),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod(
            json!({"name": "holder", "annotations": {"pinip.io/ip": "10.45.0.70"}}),
            json!({}),
        )?,
    )
    .await?;
    pod_running(&pods, "holder").await?;
    let msg = wait_for(
        "the webhooks to know pool fixed-net1",
        Duration::from_secs(20),
        || async {
            let r = pods
                .create(
                    &PostParams::default(),
                    &pod(
                        json!({"name": "other-net", "annotations": {
                            "pinip.io/pool": "fixed-net1", "pinip.io/ip": "10.45.0.70"}}),
                        json!({}),
                    )?,
                )
                .await;
            match r {
                Ok(p) => bail!(
                    "admitted on the primary interface: {:?}",
                    p.annotations().get(ALLOCATION)
                ),
                Err(kube::Error::Api(s)) if s.message.contains("does not exist") => Ok(None),
                Err(kube::Error::Api(s)) => Ok(Some(s.message)),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;
    ensure!(msg.contains("belongs to network \"net1\""), "{msg}");
    eprintln!("case 6: {msg}");
    no_duplicates(&stack.client, &ns).await
}

/// Case 7 (side door): pods that a later admission step refuses (here a ResourceQuota) leave
/// reservations; a namespace cannot pile them up past the cap (3 on this bed), and each is
/// reclaimed soon after the grace period (5 s here; 65 s by default, past the longest
/// admission).
async fn refused_pods_leave_nothing(stack: &Stack) -> Result<()> {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let ns = stack
        .bed
        .temp_namespace("quota", json!({"pinip.io/enabled": "true"}))
        .await?;
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )?;
    Api::<ResourceQuota>::namespaced(stack.client.clone(), &ns)
        .create(&PostParams::default(), &quota)
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let pods: Api<Pod> = Api::namespaced(tenant, &ns);
    let refused_at = Instant::now();
    for i in 0..3 {
        let msg = denied(
            &pods,
            &pod(json!({"name": format!("extra-{i}")}), json!({}))?,
        )
        .await?;
        ensure!(msg.contains("quota"), "extra-{i}: {msg}");
    }
    let claims: Api<IPClaim> = Api::all(stack.client.clone());
    let orphans: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.owner.namespace == ns)
        .map(|c| c.name_any())
        .collect();
    ensure!(
        orphans.len() == 3,
        "reservations of refused pods: {orphans:?}"
    );
    let msg = denied(&pods, &pod(json!({"name": "extra-3"}), json!({}))?).await?;
    ensure!(msg.contains("already holds 3 reservations"), "{msg}");
    eprintln!("case 7: the fourth refused pod hit the cap: {msg}");
    wait_for(
        "the refused pods' reservations reclaimed",
        Duration::from_secs(30),
        || async {
            for c in &orphans {
                if claims.get_opt(c).await?.is_some() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    eprintln!(
        "case 7: 3 reservations of refused pods reclaimed {:.1}s after the refusals (grace 5s)",
        refused_at.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Case 8 (side door): `/mutate` answers only kube-apiserver. An AdmissionReview for a pod in
/// an enabled namespace, sent straight to the webhook (through its Service stand-in), is
/// refused at the TLS handshake without a client certificate, with a certificate of the
/// cluster's own CA that is not kube-apiserver's (the admin's), and with kube-apiserver's name
/// from another CA; the same review as a dry run with kube-apiserver's certificate is answered
/// (so the refusals are about the caller), and no claim is ever written for the forged pod.
async fn forged_reviews_refused(stack: &Stack) -> Result<()> {
    use pinip_integration::controlplane::ADMISSION_CLIENT;
    use pinip_integration::pinip::{tls_client_config, tls_request, webhook_get};
    let ns = stack
        .bed
        .temp_namespace("forged", json!({"pinip.io/enabled": "true"}))
        .await?;
    let cp = stack.bed.cp.as_ref().context("a bed this test started")?;
    let review = |dry_run: bool| -> Result<Vec<u8>> {
        let object = serde_json::to_value(pod(
            json!({"name": "forged", "namespace": ns,
                   "annotations": {"pinip.io/ip": "10.45.0.99"}}),
            json!({}),
        )?)?;
        let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
        let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
        Ok(serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-0000-0000-00000000f0f0",
                "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": "forged", "namespace": ns, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object, "dryRun": dry_run,
            }
        }))?)
    };
    let other_ca = pinip_integration::pki::Pki::create(&stack.bed.dir.join("other-ca"))?;
    let callers = [
        ("no client certificate", None),
        (
            "the cluster admin's certificate",
            Some(cluster_user_cert(cp)?),
        ),
        (
            "kube-apiserver's name from another CA",
            Some(other_ca.client("forger", ADMISSION_CLIENT, None)?),
        ),
    ];
    for (who, id) in &callers {
        let cfg = tls_client_config(&cp.pki.ca_pem, id.as_ref())?;
        match tls_request(stack.hooks.lb.port, cfg, "POST", "/mutate", &review(false)?) {
            Err(e) => eprintln!("case 8: {who}: refused ({e})"),
            Ok(r) if !r.response.starts_with("HTTP/") => {
                eprintln!("case 8: {who}: refused (connection closed)")
            }
            Ok(r) => bail!("{who}: the webhook answered: {}", r.response),
        }
    }
    // The control: kube-apiserver's certificate gets an answer to the same review.
    let cfg = tls_client_config(&cp.pki.ca_pem, Some(&cp.admission_client))?;
    let r = tls_request(stack.hooks.lb.port, cfg, "POST", "/mutate", &review(true)?)?;
    ensure!(
        r.response.starts_with("HTTP/1.1 200") && r.response.contains("\"allowed\":true"),
        "kube-apiserver's certificate was not answered: {}",
        r.response
    );
    let claims: Api<IPClaim> = Api::all(stack.client.clone());
    let minted: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|c| c.spec.owner.namespace == ns)
        .map(|c| c.name_any())
        .collect();
    ensure!(
        minted.is_empty(),
        "claims written for forged reviews: {minted:?}"
    );
    // Each refusal is counted (the load balancer spread them over the replicas).
    let mut refused = 0.0;
    for port in &stack.hooks.metrics_ports {
        let text = webhook_get(*port, "/metrics").await?;
        refused += text
            .lines()
            .filter(|l| l.starts_with("pinip_webhook_clients_refused_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    ensure!(refused >= 2.0, "refusals counted: {refused}");
    Ok(())
}

/// The bed admin's client certificate: signed by the cluster's CA (which also signs
/// kube-apiserver's admission certificate on this bed), but not kube-apiserver's.
fn cluster_user_cert(
    cp: &pinip_integration::controlplane::ControlPlane,
) -> Result<pinip_integration::pki::CertFiles> {
    cp.pki.client(
        "forger-admin",
        "pinip-testbed-admin",
        Some("system:masters"),
    )
}

/// Case 9: an IPClaim the index cannot read (an unknown `pinip.io/retain` value, as after a
/// version skew or a hand edit by pinip's own identity) still owns its address: its
/// StatefulSet ordinal waits with a reason naming the claim instead of taking a fresh address,
/// nobody else is given the address, and its pool cannot be deleted; once the claim is fixed
/// the ordinal comes back on its address.
async fn unreadable_claim_keeps_its_address(stack: &Stack) -> Result<()> {
    use pinip_api::IPPool;
    use pinip_integration::pinip::BINDER_USER;
    let client = &stack.client;
    // Five usable addresses (.2-.6), so that taking all the others is quick.
    stack
        .pool(
            "odd",
            json!({"cidr": "10.46.0.0/29", "gateway": "10.46.0.1"}),
        )
        .await?;
    let ns = stack
        .bed
        .temp_namespace("unread", json!({"pinip.io/enabled": "true"}))
        .await?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "odd"},
        "spec": {"replicas": 1, "serviceName": "odd",
            "selector": {"matchLabels": {"app": "odd"}},
            "template": {"metadata": {"labels": {"app": "odd"},
                    "annotations": {"pinip.io/pool": "odd"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}],
                    "terminationGracePeriodSeconds": 0}}}}))?;
    sets.create(&PostParams::default(), &sts).await?;
    let first = pod_running(&pods, "odd-0").await?;
    bound(client, &first).await?;
    let (claim, addr) = allocated(&first)?;
    // Only pinip's service accounts may write claims; act as the binder.
    let kubeconfig = stack.bed.identity_kubeconfig(
        &stack.bed.dir.join("case9-binder.kubeconfig"),
        BINDER_USER,
        Some("system:serviceaccounts"),
    )?;
    let as_binder = pinip_integration::controlplane::client_for(&kubeconfig).await?;
    let claims: Api<IPClaim> = Api::all(as_binder);
    let label = |v: Value| {
        let claims = claims.clone();
        let claim = claim.clone();
        async move {
            claims
                .patch(
                    &claim,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"pinip.io/retain": v}}})),
                )
                .await
        }
    };
    label(json!("forever")).await?;
    pods.delete("odd-0", &DeleteParams::default()).await?;
    let msg = event_message(
        client,
        &ns,
        "the StatefulSet's FailedCreate event naming the unreadable claim",
        Duration::from_secs(60),
        |e| reason_and_message(e, "FailedCreate", "cannot be read"),
    )
    .await?;
    eprintln!("case 9: {msg}");
    ensure!(
        msg.contains(&format!("IPClaim {claim}"))
            && msg.contains(&format!("StatefulSet {ns}/odd"))
            && msg.contains("pool odd"),
        "{msg}"
    );
    if let Some(p) = pods.get_opt("odd-0").await? {
        bail!(
            "odd-0 was admitted while its claim is unreadable: {:?}",
            p.annotations().get(ALLOCATION)
        );
    }
    // The other four addresses go to bare pods; the fifth pod finds the pool exhausted.
    for i in 0..4 {
        let p = pods
            .create(
                &PostParams::default(),
                &pod(
                    json!({"name": format!("bare-{i}"), "annotations": {"pinip.io/pool": "odd"}}),
                    json!({}),
                )?,
            )
            .await?;
        let (_, got) = allocated(&p)?;
        ensure!(
            got != addr,
            "bare-{i} was given {addr}, the unreadable claim's address"
        );
        bound(client, &pod_running(&pods, &format!("bare-{i}")).await?).await?;
    }
    let msg = denied(
        &pods,
        &pod(
            json!({"name": "bare-4", "annotations": {"pinip.io/pool": "odd"}}),
            json!({}),
        )?,
    )
    .await?;
    ensure!(msg.contains("pool odd is exhausted"), "{msg}");
    let pools: Api<IPPool> = Api::all(client.clone());
    match pools.delete("odd", &DeleteParams::default()).await {
        Ok(_) => bail!("pool odd deleted under its claims"),
        Err(kube::Error::Api(s)) => ensure!(
            s.message.contains("5 addresses are still claimed"),
            "{}",
            s.message
        ),
        Err(e) => return Err(e.into()),
    }
    // Fixed: the ordinal is admitted again, on its address (a touch of the StatefulSet
    // spares waiting for its controller's backoff).
    label(json!("ordinal")).await?;
    let back = wait_for("odd-0 back", Duration::from_secs(60), || async {
        sets.patch(
            "odd",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"touch": format!("{:?}", Instant::now())}}}),
            ),
        )
        .await?;
        Ok(pods.get_opt("odd-0").await?)
    })
    .await?;
    let (_, again) = allocated(&back)?;
    ensure!(again == addr, "odd-0 came back on {again}, not {addr}");
    no_duplicates(client, &ns).await?;
    sets.delete("odd", &DeleteParams::default()).await?;
    for i in 0..4 {
        pods.delete(&format!("bare-{i}"), &DeleteParams::default())
            .await?;
    }
    Ok(())
}

/// Case 10: while the binder waits for the scheduler before a claim's first bind
/// (`--unscheduled-bind-delay`, 3 s, the pods held by a scheduling gate), a pod with a fixed
/// address is deleted and re-created under its name three times within the wait, and another
/// pod asks for the address each time. Each re-creation takes the claim over with a write
/// (resourceVersion and `reservedAt` move: a no-op handover would let a binder write made for
/// the pod before go through), the API server's answer to the binder's check before a first
/// bind names the new pod and not the deleted one, the other pod is always denied, the last
/// pod runs bound on it, and a pod deleted during the wait and never re-created leaves its
/// address to the next pod once the reclaim grace is over (no leak).
async fn recreated_while_the_bind_waits(stack: &Stack) -> Result<()> {
    let client = &stack.client;
    let ns = stack
        .bed
        .temp_namespace("wait", json!({"pinip.io/enabled": "true"}))
        .await?;
    let tenant = stack.tenant(&ns).await?;
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &ns);
    let claims: Api<IPClaim> = Api::all(client.clone());
    let held = |name: &str, ip: &str| {
        pod(
            json!({"name": name, "annotations": {"pinip.io/ip": ip}}),
            json!({"schedulingGates": [{"name": "pinip.test/hold"}]}),
        )
    };
    let version = |c: &IPClaim| {
        let p = c.spec.pod.clone().unwrap_or_default();
        (
            c.resource_version().unwrap_or_default(),
            p.name,
            p.uid,
            p.reserved_at.map(|t| t.0),
        )
    };
    let ip = "10.45.0.80";
    let first = pods.create(&PostParams::default(), &held("w", ip)?).await?;
    let (claim, _) = allocated(&first)?;
    let mut last = version(&claims.get(&claim).await?);
    let mut gone_uid = first.uid().unwrap_or_default();
    let start = Instant::now();
    for round in 0..3 {
        let msg = denied(&pods, &held("x", ip)?).await?;
        ensure!(
            msg.contains(&format!("address {ip} belongs to Pod {ns}/w")),
            "round {round}: {msg}"
        );
        // The binder is waiting for the scheduler: w is not bound yet.
        let before = version(&claims.get(&claim).await?);
        ensure!(
            before.2.is_empty(),
            "round {round}: claim {claim} bound at {:?}, before the wait was over: {before:?}",
            start.elapsed()
        );
        pods.delete("w", &DeleteParams::default().grace_period(0))
            .await?;
        let again = wait_for("w re-created", Duration::from_secs(10), || async {
            match pods.create(&PostParams::default(), &held("w", ip)?).await {
                Ok(p) => Ok(Some(p)),
                // The deletion may not have landed yet.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        ensure!(
            allocated(&again)?.0 == claim,
            "round {round}: w came back on another claim"
        );
        // What the binder asks before a first bind: the deleted pod is not the holder, the
        // new one is (a bind from a watch that still shows the deleted pod is not written).
        let (old_uid, new_uid) = (gone_uid.clone(), again.uid().unwrap_or_default());
        for (uid, want) in [(&old_uid, false), (&new_uid, true)] {
            let got = pinip_index::confirm_holder(client, &ns, "w", uid, &claim).await?;
            ensure!(
                got == want,
                "round {round}: confirm_holder(w, {uid}) = {got}"
            );
        }
        ensure!(
            !pinip_index::confirm_holder(client, &ns, "w", &new_uid, "10-45-0-99").await?,
            "round {round}: w confirmed as the holder of a claim it does not name"
        );
        gone_uid = new_uid;
        let now = version(&claims.get(&claim).await?);
        eprintln!(
            "case 10: round {round} at {:?}: claim {claim} {last:?} -> {now:?}",
            start.elapsed()
        );
        ensure!(
            now.0 != last.0 && now.1 == "w" && now.2.is_empty() && now.3 > last.3,
            "round {round}: re-creating w did not move claim {claim}: {last:?} -> {now:?}"
        );
        last = now;
    }
    // The last w, placed now, runs bound on the claim; the reclaim grace passes without
    // taking it away, and the address stays its own.
    let w = pods.get("w").await?;
    pods.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedulingGates": null}})),
    )
    .await?;
    let w_running = pod_running(&pods, "w").await?;
    ensure!(w_running.uid() == w.uid(), "w was replaced under the test");
    bound(client, &w_running).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let c = bound(client, &w_running).await?;
    ensure!(
        c.spec.node.is_some(),
        "claim {claim} bound without a node: {:?}",
        c.spec
    );
    let msg = denied(&pods, &held("x", ip)?).await?;
    ensure!(msg.contains(&format!("Pod {ns}/w")), "{msg}");
    no_duplicates(client, &ns).await?;

    // A pod deleted while its bind waits, never re-created: its reservation is reclaimed
    // after the grace (5 s here), and the address goes to the next pod that asks.
    let ip2 = "10.45.0.81";
    pods.create(&PostParams::default(), &held("v", ip2)?)
        .await?;
    pods.delete("v", &DeleteParams::default().grace_period(0))
        .await?;
    let gone = Instant::now();
    let y = wait_for(
        &format!("{ip2} free for another pod"),
        Duration::from_secs(40),
        || async {
            match pods.create(&PostParams::default(), &held("y", ip2)?).await {
                Ok(p) => Ok(Some(p)),
                Err(kube::Error::Api(s)) if s.message.contains("belongs to Pod") => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;
    ensure!(allocated(&y)?.1 == ip2, "y was given another address");
    eprintln!(
        "case 10: {ip2} reserved for v (deleted during the wait) went to y {:?} later",
        gone.elapsed()
    );
    no_duplicates(client, &ns).await?;
    for name in ["w", "y"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}
