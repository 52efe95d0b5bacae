//! The node agent: the kubelet's pod lifecycle for the pods bound to one node. For each pod it
//! makes a sandbox and reports the pod Running and Ready with the sandbox's addresses; when the
//! pod is being deleted it removes the sandbox and completes the deletion with grace period 0.
//! A sandbox comes from one of two runtimes: a real containerd through CRI (every CNI call is
//! containerd's), or the bed's own CNI runtime, which makes the namespace and calls the chain
//! as containerd does (faster; for the large runs). A failed sandbox is reported on the pod as
//! the kubelet does (a `FailedCreatePodSandBox` warning) and retried with backoff. One worker
//! per pod, like the kubelet's pod workers, so a slow pod does not hold up the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::cni::{self, CniRuntime, result_ips};
use crate::containerd::Containerd;
use crate::netns;
use crate::node::{NodeSpec, time_now};

/// What makes a node's sandboxes.
#[derive(Clone)]
pub enum Runtime {
    /// The bed's CNI runtime, calling the chain as containerd 1.6 does.
    Simulated(Arc<CniRuntime>),
    /// A real containerd, through CRI.
    Containerd(Arc<Containerd>),
}

/// A pod's sandbox while it runs.
enum Running {
    Simulated(cni::Sandbox, Value),
    Containerd(String),
}

pub struct Agent {
    pub client: Client,
    pub node: NodeSpec,
    pub runtime: Runtime,
    /// Prefix of the pod namespaces this agent creates (simulated runtime).
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
        let mut sandbox: Option<Running> = None;
        let mut failures = 0u32;
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(self.node.name.clone()),
            },
        );
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
                    match self.setup(pod, &uid, failures).await {
                        Ok(done) => {
                            sandbox = Some(done);
                            failures = 0;
                            Ok(())
                        }
                        Err(e) => {
                            self.report_failure(&recorder, pod, &e).await;
                            Err(e)
                        }
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

    /// Makes the pod's sandbox; `attempt` counts earlier failures, as CRI's metadata does.
    async fn setup(&self, pod: &Pod, uid: &str, attempt: u32) -> Result<Running> {
        let _slot = self.cni_slots.acquire().await?;
        match &self.runtime {
            Runtime::Containerd(c) => {
                let sb = c.run(pod, attempt).await.map_err(cri_error)?;
                drop(_slot);
                if let Err(e) = self.report_running(pod, &sb.ips).await {
                    // The next attempt starts from scratch, as a kubelet's would.
                    let _ = c.remove(&sb.id).await;
                    return Err(e);
                }
                Ok(Running::Containerd(sb.id))
            }
            Runtime::Simulated(cni) => {
                let (sb, result) = self.simulated_setup(cni, pod, uid).await?;
                drop(_slot);
                self.report_running(pod, &result_ips(&result)).await?;
                Ok(Running::Simulated(sb, result))
            }
        }
    }

    async fn simulated_setup(
        &self,
        cni: &Arc<CniRuntime>,
        pod: &Pod,
        uid: &str,
    ) -> Result<(cni::Sandbox, Value)> {
        let sb = cni::Sandbox {
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
        let cni = cni.clone();
        let sb2 = sb.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Value> {
            netns::del(&ns)?;
            netns::add(&ns)?;
            match cni.add(&sb2) {
                Ok(r) => Ok(r),
                Err(e) => {
                    // containerd cleans a failed ADD with DEL (netns set), then drops it.
                    let _ = cni.del(&sb2, None, true);
                    let _ = netns::del(&ns);
                    Err(e)
                }
            }
        })
        .await??;
        Ok((sb, result))
    }

    /// The kubelet's event for a sandbox that could not be made.
    async fn report_failure(&self, recorder: &Recorder, pod: &Pod, e: &anyhow::Error) {
        let ev = Event {
            type_: EventType::Warning,
            reason: "FailedCreatePodSandBox".into(),
            note: Some(format!("Failed to create pod sandbox: {e:#}")),
            action: "CreatePodSandbox".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::warn!(pod = %pod.name_any(), error = %err, "recording sandbox failure");
        }
    }

    async fn report_running(&self, pod: &Pod, ips: &[String]) -> Result<()> {
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

    /// Removes the sandbox: through CRI (StopPodSandbox + RemovePodSandbox), or as containerd
    /// would (DEL with netns and prevResult, remove the namespace, DEL without netns). Errors
    /// are logged: a kubelet retries, the tests check what is left.
    async fn teardown(&self, sandbox: &mut Option<Running>) {
        let Some(running) = sandbox.take() else {
            return;
        };
        let Ok(_slot) = self.cni_slots.acquire().await else {
            return;
        };
        let outcome = match (running, &self.runtime) {
            (Running::Containerd(id), Runtime::Containerd(c)) => {
                c.remove(&id).await.map_err(cri_error)
            }
            (Running::Simulated(sb, result), Runtime::Simulated(cni)) => {
                let cni = cni.clone();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let ns = sb
                        .netns
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned());
                    cni.del(&sb, Some(&result), true)?;
                    if let Some(ns) = &ns {
                        netns::del(ns)?;
                    }
                    cni.del(&sb, None, false)
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            }
            _ => Err(anyhow::anyhow!("sandbox of another runtime")),
        };
        if let Err(e) = outcome {
            tracing::warn!(node = %self.node.name, error = format!("{e:#}"), "sandbox teardown failed");
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

/// A CRI error as the kubelet prints it (Go's gRPC status text).
fn cri_error(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => anyhow::anyhow!("rpc error: code = {:?} desc = {}", s.code(), s.message()),
        None => e,
    }
}
