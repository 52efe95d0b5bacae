//! The node agent: the kubelet's networking job for the pods bound to one node. For each pod
//! it creates a network namespace, runs the node's CNI chain (ADD), and reports the pod
//! Running and Ready with the addresses from the CNI result. When the pod is being deleted it
//! runs DEL twice as containerd does, removes the namespace, and completes the deletion with
//! grace period 0. One worker per pod, like the kubelet's pod workers, so a slow pod does not
//! hold up the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::cni::{CniRuntime, Sandbox, result_ips};
use crate::netns;
use crate::node::{NodeSpec, time_now};

pub struct Agent {
    pub client: Client,
    pub node: NodeSpec,
    pub cni: Arc<CniRuntime>,
    /// Prefix of the pod namespaces this agent creates.
    pub netns_prefix: String,
    /// Bounds concurrent CNI calls, as a runtime's worker pool does.
    pub cni_slots: Arc<Semaphore>,
}

/// What a pod worker knows of its pod: the newest object, or that it is gone from the API.
type PodState = Option<Pod>;

impl Agent {
    /// Watches the node's pods and runs a worker per pod, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node.name));
        let mut workers: HashMap<String, watch::Sender<PodState>> = HashMap::new();
        let mut stream = watcher(pods, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let pods = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![(p, true)],
                Ok(watcher::Event::Delete(p)) => vec![(p, false)],
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(node = %self.node.name, error = %e, "pod watch error");
                    continue;
                }
            };
            for (pod, present) in pods {
                let Some(uid) = pod.uid() else { continue };
                let state = present.then_some(pod);
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(state);
                    }
                    _ if state.is_some() => {
                        let (tx, rx) = watch::channel(state);
                        workers.insert(uid.clone(), tx);
                        tokio::spawn(self.clone().pod_worker(uid, rx));
                    }
                    _ => {}
                }
            }
            workers.retain(|_, tx| !tx.is_closed());
        }
    }

    async fn pod_worker(self: Arc<Self>, uid: String, mut rx: watch::Receiver<PodState>) {
        let mut sandbox: Option<(Sandbox, Value)> = None;
        let mut failures = 0u32;
        loop {
            let state = rx.borrow_and_update().clone();
            let outcome = match &state {
                None => {
                    // Gone from the API (e.g. force-deleted): only the sandbox is left to clean.
                    self.teardown(&mut sandbox).await;
                    return;
                }
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    self.teardown(&mut sandbox).await;
                    if let Err(e) = self.finish_deletion(pod, &uid).await {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "completing deletion failed");
                    }
                    return;
                }
                Some(pod) if sandbox.is_none() && !is_finished(pod) => {
                    match self.setup(pod, &uid).await {
                        Ok(done) => {
                            sandbox = Some(done);
                            failures = 0;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Some(_) => Ok(()),
            };
            if let Err(e) = outcome {
                failures += 1;
                let pod = state.as_ref().map(|p| p.name_any()).unwrap_or_default();
                tracing::warn!(node = %self.node.name, %pod, error = format!("{e:#}"), "pod sandbox setup failed; retrying");
                let backoff = Duration::from_millis(500 * u64::from(failures.min(10)));
                // Retry after the backoff unless the pod changes first.
                let _ = tokio::time::timeout(backoff, rx.changed()).await;
                continue;
            }
            if rx.changed().await.is_err() {
                self.teardown(&mut sandbox).await;
                return;
            }
        }
    }

    async fn setup(&self, pod: &Pod, uid: &str) -> Result<(Sandbox, Value)> {
        let sb = Sandbox {
            id: sandbox_id(uid),
            netns: netns::path(&self.pod_netns(uid)),
            ifname: "eth0".into(),
            pod_name: pod.name_any(),
            pod_namespace: pod.namespace().unwrap_or_default(),
            pod_uid: uid.to_string(),
            annotations: pod
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        };
        let ns = self.pod_netns(uid);
        let result = {
            let _slot = self.cni_slots.acquire().await?;
            let cni = self.cni.clone();
            let sb2 = sb.clone();
            let ns2 = ns.clone();
            tokio::task::spawn_blocking(move || -> Result<Value> {
                netns::del(&ns2)?;
                netns::add(&ns2)?;
                match cni.add(&sb2) {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        // containerd cleans a failed ADD with DEL (netns set), then drops it.
                        let _ = cni.del(&sb2, None, true);
                        let _ = netns::del(&ns2);
                        Err(e)
                    }
                }
            })
            .await??
        };
        self.report_running(pod, &result).await?;
        Ok((sb, result))
    }

    async fn report_running(&self, pod: &Pod, result: &Value) -> Result<()> {
        let ips = result_ips(result);
        let now = time_now();
        let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
        let containers: Vec<Value> = pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<String>>()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|name| {
                json!({
                    "name": name, "ready": true, "started": true, "restartCount": 0,
                    "image": "pinip-testbed/none", "imageID": "",
                    "containerID": format!("pinip-testbed://{}", sandbox_id(&name)),
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": self.node.internal_ip,
            "hostIPs": [{"ip": self.node.internal_ip}],
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "startTime": now,
            "conditions": [
                cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                cond("ContainersReady"), cond("PodScheduled"),
            ],
            "containerStatuses": containers,
        }});
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .with_context(|| format!("reporting pod {} Running", pod.name_any()))?;
        Ok(())
    }

    /// DEL with netns and prevResult (StopPodSandbox), remove the namespace, then DEL without
    /// netns (RemovePodSandbox). Errors are logged: a kubelet retries, the test checks.
    async fn teardown(&self, sandbox: &mut Option<(Sandbox, Value)>) {
        let Some((sb, result)) = sandbox.take() else {
            return;
        };
        let ns = sb
            .netns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Ok(_slot) = self.cni_slots.acquire().await else {
            return;
        };
        let cni = self.cni.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<()> {
            cni.del(&sb, Some(&result), true)?;
            if let Some(ns) = &ns {
                netns::del(ns)?;
            }
            cni.del(&sb, None, false)
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(node = %self.node.name, error = format!("{e:#}"), "sandbox teardown failed")
            }
            Err(e) => tracing::warn!(error = %e, "teardown task failed"),
        }
    }

    async fn finish_deletion(&self, pod: &Pod, uid: &str) -> Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn pod_netns(&self, uid: &str) -> String {
        format!("{}pod-{uid}", self.netns_prefix)
    }
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A 64-hex-digit id derived from `seed`, shaped like a containerd sandbox id.
fn sandbox_id(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u64)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}
