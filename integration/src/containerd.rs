//! A real containerd for one test-bed node, as the CNI caller: started inside the node's
//! network namespace with its own root, state, socket and CNI directories under the bed's
//! directory, driven through CRI (`k8s-cri`'s generated tonic client). Every CNI ADD and DEL
//! of a pod on such a node comes from containerd itself. Stopping it stops and removes every
//! sandbox first, then containerd, then whatever a crash could have left: shims, mounts,
//! sandbox namespaces and cgroups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest, VersionRequest,
};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::process::Proc;

/// The CRI configuration template (`@DIR@` is the node's directory).
const CONFIG: &str = include_str!("../containerd/config.toml");

/// Labels the kubelet puts on every sandbox; the bed finds a pod's sandbox by its uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The containerd of one node.
pub struct Containerd {
    pub node: String,
    pub dir: PathBuf,
    socket: PathBuf,
    cgroup_parent: String,
    proc: std::sync::Mutex<Option<Proc>>,
    rt: RuntimeServiceClient<Channel>,
    /// False for a handle on another process's containerd: stopping it does nothing.
    owned: bool,
}

/// A running sandbox as CRI reports it.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    /// The pod's addresses: `status.network.ip` then `additional_ips`.
    pub ips: Vec<String>,
    /// The sandbox's network namespace (`/var/run/netns/cni-…`).
    pub netns: Option<PathBuf>,
}

/// What a node's containerd needs.
pub struct NodeRuntime<'a> {
    pub node: &'a str,
    /// Path of the node's network namespace.
    pub node_netns: PathBuf,
    /// The node's directory (created); containerd keeps everything under it.
    pub dir: PathBuf,
    pub conflist: &'a Value,
    /// Plugin directories, first match wins (containerd 1.6 takes one `bin_dir`).
    pub cni_path: &'a [PathBuf],
    /// The OCI archive of the sandbox image (`containerd/pause-build.sh`).
    pub pause_image: &'a Path,
    /// Parent cgroup of every sandbox, removed at stop.
    pub cgroup_parent: String,
}

/// Where the sandbox image is: `$PINIP_PAUSE_IMAGE`, else what `pause-build.sh` builds or finds
/// in its cache.
pub fn pause_image() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PINIP_PAUSE_IMAGE") {
        return Ok(p.into());
    }
    crate::process::cached_build(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("containerd/pause-build.sh"),
    )
}

/// containerd, runc and ctr are Debian's (`apt-get install containerd runc`).
pub fn check_tools() -> Result<()> {
    for t in ["containerd", "ctr", "runc", "nsenter"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(t).exists());
        if !found {
            bail!(
                "{t} missing: containerd nodes need Debian's containerd and runc (apt-get install containerd runc)"
            );
        }
    }
    Ok(())
}

fn channel(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    // The URI is ignored: every connection goes to the unix socket.
    Ok(Endpoint::try_from("http://[::1]:50051")?
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        })))
}

impl Containerd {
    /// Starts containerd for a node, imports the sandbox image and waits until CRI reports
    /// the network ready (the conflist loaded).
    pub async fn start(n: NodeRuntime<'_>) -> Result<Containerd> {
        let dir = n.dir.clone();
        for sub in ["cni-bin", "cni-conf", "pods", "netns"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for d in n.cni_path {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            for e in entries.flatten() {
                let link = dir.join("cni-bin").join(e.file_name());
                if !link.exists() {
                    std::os::unix::fs::symlink(e.path(), &link)?;
                }
            }
        }
        // Written before containerd starts: 1.6 does not notice a conflist moved in later.
        std::fs::write(
            dir.join("cni-conf/10-pinip.conflist"),
            serde_json::to_vec_pretty(n.conflist)?,
        )?;
        // For the sweep after a crash: which cgroup parent this node's sandboxes live under.
        std::fs::write(dir.join("cgroup-parent"), &n.cgroup_parent)?;
        let config = dir.join("config.toml");
        std::fs::write(&config, CONFIG.replace("@DIR@", &dir.display().to_string()))?;
        let socket = dir.join("containerd.sock");
        // nsenter switches only the network namespace: containerd's netns mounts stay visible.
        let proc = Proc::spawn(
            &format!("containerd ({})", n.node),
            Path::new("nsenter"),
            &[
                format!("--net={}", n.node_netns.display()),
                "containerd".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            &dir.join("containerd.log"),
        )?;
        let mut c = Containerd {
            node: n.node.to_string(),
            dir,
            socket: socket.clone(),
            cgroup_parent: n.cgroup_parent,
            proc: std::sync::Mutex::new(Some(proc)),
            rt: RuntimeServiceClient::new(channel(&socket)?),
            owned: true,
        };
        let t0 = Instant::now();
        loop {
            if socket.exists() && c.rt.version(VersionRequest::default()).await.is_ok() {
                break;
            }
            c.check()?;
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{}: containerd not answering after 30s; see {}/containerd.log",
                    c.node,
                    c.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(n.pause_image)
            .output()
            .await
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "{}: importing {}: {}",
                c.node,
                n.pause_image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        loop {
            let st =
                c.rt.status(StatusRequest { verbose: false })
                    .await?
                    .into_inner();
            let ready = st
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|cd| cd.r#type == "NetworkReady" && cd.status);
            if ready {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{}: CRI network not ready after 30s: {st:?}", c.node);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(c)
    }

    /// A handle on the containerd another bed process runs for `node` in `dir`.
    pub fn attach(node: &str, dir: &Path) -> Result<Containerd> {
        let socket = dir.join("containerd.sock");
        Ok(Containerd {
            node: node.to_string(),
            dir: dir.to_path_buf(),
            rt: RuntimeServiceClient::new(channel(&socket)?),
            socket,
            cgroup_parent: String::new(),
            proc: std::sync::Mutex::new(None),
            owned: false,
        })
    }

    /// Fails when containerd has exited.
    pub fn check(&mut self) -> Result<()> {
        match self.proc.get_mut().expect("lock").as_mut() {
            Some(p) => p.check_running(),
            None => Ok(()),
        }
    }

    /// `RunPodSandbox` for `pod` as the kubelet asks for it (metadata, the kubelet's labels
    /// and the pod's labels, the pod's annotations, pod network and IPC namespaces), then its
    /// status. A CNI failure is containerd's error, as the kubelet sees it.
    pub async fn run(&self, pod: &Pod, attempt: u32) -> Result<Sandbox> {
        let name = pod.name_any();
        let ns = pod.namespace().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        let mut labels: HashMap<String, String> = pod.labels().clone().into_iter().collect();
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_NAMESPACE_LABEL.into(), ns.clone());
        labels.insert(POD_UID_LABEL.into(), uid.clone());
        let annotations: HashMap<String, String> = pod.annotations().clone().into_iter().collect();
        let log_dir = self.dir.join("pods").join(format!("{ns}_{name}_{uid}"));
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid,
                namespace: ns,
                attempt,
            }),
            hostname: name.chars().take(63).collect(),
            log_directory: log_dir.display().to_string(),
            labels,
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .clone()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let sb = self.status(&id).await?;
        self.record_netns(&sb);
        Ok(sb)
    }

    /// A sandbox's addresses and network namespace.
    pub async fn status(&self, id: &str) -> Result<Sandbox> {
        let r = self
            .rt
            .clone()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await?
            .into_inner();
        let net = r.status.and_then(|s| s.network).unwrap_or_default();
        let ips = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|p| p.ip))
            .filter(|ip| !ip.is_empty())
            .collect();
        // The verbose info is containerd's JSON: the OCI spec names the network namespace.
        let netns = r
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
            .and_then(|info| {
                info["runtimeSpec"]["linux"]["namespaces"]
                    .as_array()?
                    .iter()
                    .find(|n| n["type"] == "network")?["path"]
                    .as_str()
                    .map(PathBuf::from)
            });
        Ok(Sandbox {
            id: id.to_string(),
            ips,
            netns,
        })
    }

    /// The sandboxes of the pod with `uid`, as containerd lists them.
    pub async fn sandboxes_of(&self, uid: &str) -> Result<Vec<Sandbox>> {
        let filter = PodSandboxFilter {
            label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for id in self.list(Some(filter)).await? {
            out.push(self.status(&id).await?);
        }
        Ok(out)
    }

    /// The ids of every sandbox containerd knows, in any state.
    pub async fn all_sandboxes(&self) -> Result<Vec<String>> {
        self.list(None).await
    }

    async fn list(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<String>> {
        let items = self
            .rt
            .clone()
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await?
            .into_inner()
            .items;
        Ok(items.into_iter().map(|s| s.id).collect())
    }

    /// `StopPodSandbox` (CNI DEL with the namespace) then `RemovePodSandbox`, as the kubelet
    /// does when a pod goes away.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let mut rt = self.rt.clone();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?;
        let _ = std::fs::remove_file(self.dir.join("netns").join(id));
        Ok(())
    }

    /// Notes the sandbox's namespace, so that a sweep after a crash can remove it.
    fn record_netns(&self, sb: &Sandbox) {
        if let Some(ns) = &sb.netns {
            let _ = std::fs::write(
                self.dir.join("netns").join(&sb.id),
                ns.as_os_str().as_encoded_bytes(),
            );
        }
    }

    /// Removes every sandbox, stops containerd and cleans what is left. Blocking: it runs its
    /// CRI calls on a runtime of its own, so it also works from `Drop` inside a test's runtime.
    pub fn stop(&self) {
        if !self.owned {
            return;
        }
        let socket = self.socket.clone();
        let dir = self.dir.clone();
        let node = self.node.clone();
        let running = self.proc.lock().expect("lock").is_some();
        if running {
            let drained = std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut cri = RuntimeServiceClient::new(channel(&socket)?);
                    let items = tokio::time::timeout(
                        Duration::from_secs(10),
                        cri.list_pod_sandbox(ListPodSandboxRequest::default()),
                    )
                    .await??
                    .into_inner()
                    .items;
                    for it in items {
                        let id = it.id;
                        let stop = cri.stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        });
                        let _ = tokio::time::timeout(Duration::from_secs(10), stop).await;
                        let rm = cri.remove_pod_sandbox(RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        });
                        let _ = tokio::time::timeout(Duration::from_secs(10), rm).await;
                        let _ = std::fs::remove_file(dir.join("netns").join(&id));
                    }
                    Ok(())
                })
            })
            .join()
            .map_err(|_| anyhow!("sandbox drain panicked"))
            .and_then(|r| r);
            if let Err(e) = drained {
                tracing::warn!(%node, error = format!("{e:#}"), "removing sandboxes at stop");
            }
        }
        if let Some(mut p) = self.proc.lock().expect("lock").take() {
            p.stop(Duration::from_secs(10));
        }
        if let Err(e) = clean_leftovers(&self.dir, &self.socket, &self.cgroup_parent) {
            tracing::warn!(node = %self.node, error = format!("{e:#}"), "cleaning after containerd");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a containerd that died (or was killed with the bed) can leave: runc containers and
/// their shims, mounts under its directory, sandbox network namespaces, the cgroup parent.
/// Everything found is removed.
pub fn clean_leftovers(dir: &Path, socket: &Path, cgroup_parent: &str) -> Result<()> {
    // runc's own state names every container still alive; force-delete kills and removes.
    let runc_root = dir.join("runc/k8s.io");
    if let Ok(entries) = std::fs::read_dir(&runc_root) {
        for e in entries.flatten() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
    }
    // Shims outlive containerd by design; each names the socket it serves.
    let needle = socket.display().to_string();
    for pid in processes_mentioning(&needle) {
        // SAFETY: signalling a process this bed's containerd started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("netns")) {
        for e in entries.flatten() {
            if let Ok(path) = std::fs::read_to_string(e.path()) {
                let p = Path::new(path.trim());
                if p.starts_with("/var/run/netns") || p.starts_with("/run/netns") {
                    unmount(p);
                    let _ = std::fs::remove_file(p);
                }
            }
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut mounts = mounts_under(dir)?;
    // Deepest first, so that nested mounts come off before their parents.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        unmount(&m);
    }
    if !cgroup_parent.is_empty() {
        remove_cgroups(cgroup_parent);
    }
    // The shims' socket directory is containerd's fixed one; drop it once empty (rmdir fails
    // on a directory another containerd still uses).
    let _ = std::fs::remove_dir("/run/containerd/s");
    let _ = std::fs::remove_dir("/run/containerd");
    Ok(())
}

fn unmount(p: &Path) {
    if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid C string; a path that is not a mount point only fails.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect())
}

/// Pids whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Removes `parent` (and anything below it) from every cgroup hierarchy.
fn remove_cgroups(parent: &str) {
    let rel = parent.trim_start_matches('/');
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let top = h.path().join(rel);
        if top.is_dir() {
            remove_cgroup_tree(&top);
        }
    }
    let top = Path::new("/sys/fs/cgroup").join(rel);
    if top.is_dir() {
        remove_cgroup_tree(&top);
    }
}

fn remove_cgroup_tree(p: &Path) {
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// Cleans after beds of dead test-bed processes: their directories under the temp dir are
/// named `pinip-testbed-<pid>-<n>`, and each containerd node has a directory there.
pub fn sweep_stale() -> Vec<PathBuf> {
    let mut cleaned = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return cleaned;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pinip-testbed-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let Ok(nodes) = std::fs::read_dir(e.path().join("containerd")) else {
            continue;
        };
        for n in nodes.flatten() {
            let dir = n.path();
            let parent = std::fs::read_to_string(dir.join("cgroup-parent")).unwrap_or_default();
            if clean_leftovers(&dir, &dir.join("containerd.sock"), parent.trim()).is_ok() {
                cleaned.push(dir);
            }
        }
    }
    cleaned
}
