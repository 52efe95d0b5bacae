//! The whole test bed: control plane, nodes with their network namespaces, node agents (each
//! with a real containerd or the bed's own CNI runtime) and heartbeats. Dropping a `Bed` tears
//! everything down: sandboxes, processes, mounts, namespaces, files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::agent::{Agent, Runtime};
use crate::cni::{CniRuntime, POD_ANNOTATIONS_CAP};
use crate::containerd::{self, Containerd};
use crate::controlplane::{ControlPlane, upstream_bin_dir, write_kubeconfig};
use crate::node::{self, NodeSpec};
use crate::{netns, nodenet};

/// Debian's containernetworking-plugins install here.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// The main CNI plugin of every node's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MainPlugin {
    Bridge,
    Macvlan,
}

/// The IPAM plugin the main plugin delegates to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipam {
    /// Debian's host-local, one /24 per node (the baseline).
    HostLocal,
    /// pinip's plugin; the binary lives in this directory.
    Pinip { bin_dir: PathBuf },
    /// whereabouts (cluster-wide, its IPPool CRD on the bed's kube-apiserver): its plugin in
    /// `bin_dir`, its flat configuration at `config` (see `whereabouts::install`, which may
    /// write it after the bed has started), addresses from `range`.
    Whereabouts {
        bin_dir: PathBuf,
        config: PathBuf,
        range: String,
    },
}

impl Ipam {
    /// The directory this IPAM's plugin lives in, when it is not one of Debian's.
    fn bin_dir(&self) -> Option<&Path> {
        match self {
            Ipam::HostLocal => None,
            Ipam::Pinip { bin_dir } | Ipam::Whereabouts { bin_dir, .. } => Some(bin_dir),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BedOptions {
    pub nodes: usize,
    pub main_plugin: MainPlugin,
    pub ipam: Ipam,
    /// Nodes whose IPAM is another than `ipam` (node name, its IPAM): one bed can then run
    /// several IPAMs side by side, each on its own nodes.
    pub node_ipam: Vec<(String, Ipam)>,
    /// Declare the pod-annotations capability (containerd then passes annotations to CNI).
    pub pod_annotations_capability: bool,
    /// Nodes whose network config omits that capability anyway, so that an IPAM plugin there
    /// must read the pod from the API server.
    pub no_capability_nodes: Vec<String>,
    /// Nodes whose sandboxes a real containerd makes (through CRI, so that every CNI call on
    /// them is containerd's); the others use the bed's own CNI runtime, which is faster.
    pub containerd_nodes: Vec<String>,
    /// Where the bed keeps its files; a fresh directory under the system temp dir if unset.
    pub dir: Option<PathBuf>,
    /// Serve kube-apiserver's `/debug/pprof` (`--profiling`), for a benchmark's CPU profile.
    pub apiserver_profiling: bool,
}

impl BedOptions {
    /// The IPAM of node `node`.
    pub fn ipam_of(&self, node: &str) -> &Ipam {
        self.node_ipam
            .iter()
            .find(|(n, _)| n == node)
            .map_or(&self.ipam, |(_, i)| i)
    }
}

impl Default for BedOptions {
    fn default() -> Self {
        BedOptions {
            nodes: 3,
            main_plugin: MainPlugin::Bridge,
            ipam: Ipam::HostLocal,
            node_ipam: Vec::new(),
            pod_annotations_capability: true,
            no_capability_nodes: Vec::new(),
            containerd_nodes: vec!["node-1".into()],
            dir: None,
            apiserver_profiling: false,
        }
    }
}

pub struct Bed {
    /// The control plane this bed started; `None` when attached to a running bed.
    pub cp: Option<ControlPlane>,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    pub nodes: Vec<NodeSpec>,
    pub netns_prefix: String,
    pub dir: PathBuf,
    /// Time from start to every component healthy and every node schedulable.
    pub startup: Duration,
    /// The real containerds, one per containerd node.
    pub containerds: Vec<Arc<Containerd>>,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
    owns_dir: bool,
}

static BEDS: AtomicUsize = AtomicUsize::new(0);

/// What a running bed records in its directory so that tests can attach to it.
#[derive(serde::Serialize, serde::Deserialize)]
struct BedState {
    netns_prefix: String,
    api_port: u16,
    nodes: Vec<(String, String, String)>,
    #[serde(default)]
    containerd_nodes: Vec<String>,
}

const STATE_FILE: &str = "bed.json";

impl Bed {
    /// Attaches to the bed running in `$PINIP_BED_DIR` (started with `testbed up`) when that
    /// is set, to iterate on one test quickly; otherwise starts a fresh bed with `opts`.
    pub async fn start_or_attach(opts: BedOptions) -> Result<Bed> {
        match std::env::var_os("PINIP_BED_DIR") {
            Some(dir) => Bed::attach(Path::new(&dir)).await,
            None => Bed::start(opts).await,
        }
    }

    /// A handle on a bed another process runs; dropping it leaves that bed alone.
    pub async fn attach(dir: &Path) -> Result<Bed> {
        let state: BedState = serde_json::from_slice(
            &std::fs::read(dir.join(STATE_FILE))
                .with_context(|| format!("no running bed in {}", dir.display()))?,
        )?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let client = crate::controlplane::client_for(&kubeconfig).await?;
        let containerds = state
            .containerd_nodes
            .iter()
            .map(|n| Containerd::attach(n, &dir.join("containerd").join(n)).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bed {
            containerds,
            cp: None,
            kubeconfig,
            api_port: state.api_port,
            nodes: state
                .nodes
                .into_iter()
                .map(|(name, zone, internal_ip)| NodeSpec {
                    name,
                    zone,
                    internal_ip,
                })
                .collect(),
            netns_prefix: state.netns_prefix,
            dir: dir.to_path_buf(),
            startup: Duration::ZERO,
            client,
            tasks: Vec::new(),
            owns_dir: false,
        })
    }

    pub async fn start(opts: BedOptions) -> Result<Bed> {
        let t0 = Instant::now();
        check_root_and_tools(&opts)?;
        let swept = containerd::sweep_stale();
        if !swept.is_empty() {
            tracing::info!(
                ?swept,
                "cleaned containerd nodes of dead test-bed processes"
            );
        }
        let removed = netns::sweep_stale()?;
        if !removed.is_empty() {
            tracing::info!(
                ?removed,
                "removed namespaces left by dead test-bed processes"
            );
        }
        let n = BEDS.fetch_add(1, Ordering::Relaxed);
        let netns_prefix = format!("{}{}-{n}-", netns::PREFIX, std::process::id());
        let (dir, owns_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("pinip-testbed-{}-{n}", std::process::id())),
                true,
            ),
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let bins = upstream_bin_dir()?;
        let cp = ControlPlane::start(&dir, &bins, opts.apiserver_profiling).await?;
        let client = cp.client().await?;
        let mut bed = Bed {
            kubeconfig: cp.admin_kubeconfig.clone(),
            api_port: cp.api_port,
            cp: Some(cp),
            nodes: node::node_specs(opts.nodes),
            netns_prefix,
            dir,
            startup: Duration::ZERO,
            containerds: Vec::new(),
            client: client.clone(),
            tasks: Vec::new(),
            owns_dir,
        };
        let pause_image = if bed
            .nodes
            .iter()
            .any(|n| opts.containerd_nodes.contains(&n.name))
        {
            containerd::check_tools()?;
            Some(containerd::pause_image()?)
        } else {
            None
        };
        let cni_kubeconfig = bed.cni_credentials().await?;
        let slots = Arc::new(Semaphore::new(8));
        for (i, spec) in bed.nodes.clone().into_iter().enumerate() {
            let ns = bed.node_netns(&spec.name);
            nodenet::create(&ns)?;
            bed.tasks
                .push(nodenet::forward_loopback(&ns, bed.api_port)?);
            let capability =
                opts.pod_annotations_capability && !opts.no_capability_nodes.contains(&spec.name);
            let ipam = opts.ipam_of(&spec.name);
            let conflist = conflist(&opts, ipam, i, capability, &bed.dir, &cni_kubeconfig);
            std::fs::write(
                bed.dir.join(format!("{}.conflist", spec.name)),
                serde_json::to_vec_pretty(&conflist)?,
            )?;
            let mut cni_path = Vec::new();
            if let Some(bin_dir) = ipam.bin_dir() {
                cni_path.push(bin_dir.to_path_buf());
            }
            cni_path.push(PathBuf::from(DEBIAN_CNI_DIR));
            let runtime = match &pause_image {
                Some(image) if opts.containerd_nodes.contains(&spec.name) => {
                    let dir = bed.dir.join("containerd").join(&spec.name);
                    let bed_name = bed.dir.file_name().unwrap_or_default().to_string_lossy();
                    let c = Arc::new(
                        Containerd::start(containerd::NodeRuntime {
                            node: &spec.name,
                            node_netns: netns::path(&ns),
                            dir,
                            conflist: &conflist,
                            cni_path: &cni_path,
                            pause_image: image,
                            cgroup_parent: format!("/{bed_name}-{}", spec.name),
                        })
                        .await?,
                    );
                    bed.containerds.push(c.clone());
                    Runtime::Containerd(c)
                }
                _ => Runtime::Simulated(Arc::new(CniRuntime::new(ns, conflist, cni_path))),
            };
            node::register(&client, &spec).await?;
            bed.tasks
                .push(tokio::spawn(node::heartbeat(client.clone(), spec.clone())));
            let agent = Arc::new(Agent {
                client: client.clone(),
                node: spec.clone(),
                runtime,
                netns_prefix: bed.netns_prefix.clone(),
                cni_slots: slots.clone(),
            });
            bed.tasks.push(tokio::spawn(agent.run()));
        }
        bed.wait_nodes_schedulable(Duration::from_secs(60)).await?;
        let state = BedState {
            netns_prefix: bed.netns_prefix.clone(),
            api_port: bed.api_port,
            nodes: bed
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.zone.clone(), n.internal_ip.clone()))
                .collect(),
            containerd_nodes: bed.containerds.iter().map(|c| c.node.clone()).collect(),
        };
        std::fs::write(bed.dir.join(STATE_FILE), serde_json::to_vec_pretty(&state)?)?;
        bed.startup = t0.elapsed();
        tracing::info!(
            startup_ms = bed.startup.as_millis() as u64,
            "test bed ready"
        );
        Ok(bed)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Process ids of the control-plane components this bed started.
    pub fn component_pids(&self) -> Vec<u32> {
        self.cp.as_ref().map(ControlPlane::pids).unwrap_or_default()
    }

    /// Fails when a component this bed started has exited.
    pub fn check(&mut self) -> Result<()> {
        match self.cp.as_mut() {
            Some(cp) => cp.check(),
            None => Ok(()),
        }
    }

    /// Creates a namespace named `base` plus a unique suffix, so tests can share a bed.
    pub async fn temp_namespace(&self, base: &str, labels: Value) -> Result<String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{base}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.namespace(&name, labels).await?;
        Ok(name)
    }

    /// A user that may only get pods, for the pinip CNI plugin (as a node's credential would).
    async fn cni_credentials(&self) -> Result<PathBuf> {
        let user = "pinip-testbed-cni";
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        roles
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": user},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
                }))?,
            )
            .await?;
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        bindings
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": user},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
                }))?,
            )
            .await?;
        self.identity_kubeconfig(&self.dir.join("cni.kubeconfig"), user, None)
    }

    /// Writes to `path` a kubeconfig for user `user` (in `group`), with a client certificate
    /// from the bed's CA: how the bed gives pinip's components their manifests' identities
    /// (a ServiceAccount's user name authenticates the same through a certificate).
    pub fn identity_kubeconfig(
        &self,
        path: &Path,
        user: &str,
        group: Option<&str>,
    ) -> Result<PathBuf> {
        let pki = &self
            .cp
            .as_ref()
            .context("identities need a bed this process started (not PINIP_BED_DIR)")?
            .pki;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("identity");
        let cert = pki.client(stem, user, group)?;
        let server = format!("https://127.0.0.1:{}", self.api_port);
        write_kubeconfig(path, &server, &pki.ca_pem, &cert)?;
        Ok(path.to_path_buf())
    }

    async fn wait_nodes_schedulable(&self, limit: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let start = Instant::now();
        loop {
            let list = nodes.list(&ListParams::default()).await?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    let untainted = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_none_or(|t| t.is_empty());
                    let is_ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    untainted && is_ready
                })
                .count();
            if ready == self.nodes.len() {
                return Ok(());
            }
            if start.elapsed() > limit {
                // What each node looks like, and what kube-controller-manager (which lifts
                // the not-ready taint) last said: a bed that does not come up says why.
                let nodes: Vec<String> = list
                    .items
                    .iter()
                    .map(|n| {
                        let taints = n.spec.as_ref().and_then(|s| s.taints.clone());
                        let ready = n
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|cs| {
                                cs.iter()
                                    .find(|c| c.type_ == "Ready")
                                    .map(|c| c.status.clone())
                            });
                        format!("{}: Ready={ready:?} taints={taints:?}", n.name_any())
                    })
                    .collect();
                let kcm = log_tail(&self.dir.join("logs/kube-controller-manager.log"), 20);
                bail!(
                    "{ready} of {} nodes schedulable after {limit:?}: {}\nkube-controller-manager.log ends:\n{kcm}",
                    self.nodes.len(),
                    nodes.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates namespace `name` with `labels` and waits for its default ServiceAccount, which
    /// pods need before the API server admits them.
    pub async fn namespace(&self, name: &str, labels: Value) -> Result<()> {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?,
        )
        .await?;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        let start = Instant::now();
        while sas.get_opt("default").await?.is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("namespace {name}: default ServiceAccount not created after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The network namespace of node `name` (its bridge, its runtime, its plugins run there).
    pub fn node_netns(&self, name: &str) -> String {
        format!("{}node-{name}", self.netns_prefix)
    }

    /// The sandboxes of this bed's pods that exist right now: the namespaces the bed's own
    /// runtime made, and every sandbox a containerd node lists (in any state).
    pub async fn pod_sandboxes(&self) -> Result<Vec<String>> {
        let mut out = netns::list_with_prefix(&format!("{}pod-", self.netns_prefix))?;
        for c in &self.containerds {
            out.extend(
                c.all_sandboxes()
                    .await?
                    .into_iter()
                    .map(|id| format!("{}/{id}", c.node)),
            );
        }
        Ok(out)
    }

    /// The network namespace (its name under /var/run/netns) of the running pod `pod`,
    /// wherever its node's runtime made it.
    pub async fn pod_netns(&self, pod: &Pod) -> Result<String> {
        let uid = pod.uid().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let Some(c) = self.containerds.iter().find(|c| c.node == node) else {
            return Ok(format!("{}pod-{uid}", self.netns_prefix));
        };
        let sandboxes = c.sandboxes_of(&uid).await?;
        let path = sandboxes
            .iter()
            .find_map(|s| s.netns.clone())
            .with_context(|| format!("pod {} has no sandbox on {node}", pod.name_any()))?;
        Ok(path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned())
    }

    /// Addresses configured on `ifname` inside the pod's network namespace, as `addr/prefix`.
    pub async fn pod_addresses(&self, pod: &Pod, ifname: &str) -> Result<Vec<String>> {
        netns::addresses(&self.pod_netns(pod).await?, ifname)
    }

    /// Stops everything and removes what the bed created. Also run on drop.
    pub fn teardown(&mut self) {
        let Some(mut cp) = self.cp.take() else {
            return;
        };
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // Sandboxes go before the control plane and the node namespaces they live in.
        for c in self.containerds.drain(..) {
            c.stop();
        }
        cp.stop();
        match netns::list_with_prefix(&self.netns_prefix) {
            Ok(list) => {
                for ns in list {
                    if let Err(e) = netns::del(&ns) {
                        tracing::warn!(%ns, error = %e, "removing namespace");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing namespaces"),
        }
        if self.owns_dir && std::env::var_os("PINIP_KEEP_BED").is_none() {
            match containerd::mounts_under(&self.dir) {
                Ok(m) if m.is_empty() => {
                    let _ = std::fs::remove_dir_all(&self.dir);
                }
                // Never recurse into a mount that stayed: keep the directory and say so.
                Ok(m) => {
                    tracing::warn!(?m, dir = %self.dir.display(), "mounts left; directory kept")
                }
                Err(e) => tracing::warn!(error = %e, "reading mounts"),
            }
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn conflist(
    opts: &BedOptions,
    ipam: &Ipam,
    index: usize,
    capability: bool,
    dir: &Path,
    cni_kubeconfig: &Path,
) -> Value {
    let ipam = match ipam {
        Ipam::HostLocal => json!({
            "type": "host-local",
            "ranges": [[{"subnet": format!("10.244.{}.0/24", index + 1)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": dir.join("host-local").join(index.to_string()),
        }),
        Ipam::Pinip { .. } => json!({"type": "pinip", "kubeconfig": cni_kubeconfig}),
        Ipam::Whereabouts { config, range, .. } => json!({
            "type": "whereabouts", "range": range, "configuration_path": config,
            "routes": [{"dst": "0.0.0.0/0"}],
        }),
    };
    let mut plugin = match opts.main_plugin {
        // An L2 bridge (the pools' gateways are routers outside the node, as with macvlan):
        // with isGateway the bridge takes the first pod's gateway address, and a pod of a pool
        // with another gateway then fails ("cni0 already has an IP address different from").
        MainPlugin::Bridge => json!({
            "type": "bridge", "bridge": "cni0", "isGateway": false, "ipMasq": false, "ipam": ipam,
        }),
        MainPlugin::Macvlan => json!({
            "type": "macvlan", "master": nodenet::MACVLAN_MASTER, "mode": "bridge", "ipam": ipam,
        }),
    };
    if capability {
        plugin["capabilities"] = json!({POD_ANNOTATIONS_CAP: true});
    }
    json!({"cniVersion": "1.0.0", "name": "pinip-testbed", "plugins": [plugin]})
}

fn check_root_and_tools(opts: &BedOptions) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the test bed creates network namespaces and must run as root");
    }
    let main = match opts.main_plugin {
        MainPlugin::Bridge => "bridge",
        MainPlugin::Macvlan => "macvlan",
    };
    for p in [main, "host-local"] {
        if !Path::new(DEBIAN_CNI_DIR).join(p).exists() {
            bail!(
                "{DEBIAN_CNI_DIR}/{p} missing: install Debian's containernetworking-plugins (apt-get install containernetworking-plugins)"
            );
        }
    }
    for ipam in std::iter::once(&opts.ipam).chain(opts.node_ipam.iter().map(|(_, i)| i)) {
        match ipam {
            Ipam::Pinip { bin_dir }
                if !(bin_dir.join("pinip").exists() && bin_dir.join("pinip-kube").exists()) =>
            {
                bail!(
                    "{}/pinip or pinip-kube missing: build them with cargo build -p pinip-cni --bins",
                    bin_dir.display()
                )
            }
            Ipam::Whereabouts { bin_dir, .. } if !bin_dir.join("whereabouts").exists() => bail!(
                "{}/whereabouts missing: build it with integration/whereabouts/build.sh",
                bin_dir.display()
            ),
            _ => {}
        }
    }
    netns::ip(&["-V"]).context("iproute2's ip is required")?;
    Ok(())
}

/// The last `lines` lines of a log file (empty when it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
