//! A CNI runtime that calls a node's network configuration list the way containerd 1.6 does
//! (see `shared/reference/containerd-cni-calls.md`): CNI_ARGS keys in varying order,
//! CNI_CONTAINERID = sandbox id, stdin re-serialised with sorted keys plus `cniVersion` and
//! `name`, `runtimeConfig` only for declared capabilities, prevResult chained, and DEL twice on
//! removal. Plugins run inside the node's network namespace, where its bridge lives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow};
use serde_json::{Map, Value, json};

/// The capability key through which containerd hands pod annotations to plugins.
pub const POD_ANNOTATIONS_CAP: &str = "io.kubernetes.cri.pod-annotations";

/// The pod-side identity of one sandbox.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// CNI_CONTAINERID (a 64-hex-digit sandbox id, as containerd makes).
    pub id: String,
    /// Path of the pod's network namespace.
    pub netns: PathBuf,
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub annotations: BTreeMap<String, String>,
}

pub struct CniRuntime {
    /// Network namespace the plugins execute in (the node's).
    pub node_netns: String,
    /// The network configuration list, as in /etc/cni/net.d/*.conflist.
    pub conflist: Value,
    /// Directories searched for plugin binaries (CNI_PATH).
    pub cni_path: Vec<PathBuf>,
    calls: AtomicUsize,
}

impl CniRuntime {
    pub fn new(node_netns: String, conflist: Value, cni_path: Vec<PathBuf>) -> Self {
        CniRuntime {
            node_netns,
            conflist,
            cni_path,
            calls: AtomicUsize::new(0),
        }
    }

    fn plugins(&self) -> Result<Vec<Map<String, Value>>> {
        self.conflist["plugins"]
            .as_array()
            .ok_or_else(|| anyhow!("conflist has no plugins"))?
            .iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| anyhow!("plugin entry is not an object"))
            })
            .collect()
    }

    /// ADD through the whole chain; returns the last plugin's result.
    pub fn add(&self, sb: &Sandbox) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins()? {
            let res = self.exec("ADD", &plugin, sb, true, prev.as_ref())?;
            prev = Some(res);
        }
        prev.ok_or_else(|| anyhow!("conflist has no plugins"))
    }

    /// DEL through the chain in reverse order. `with_netns` false is containerd's second DEL
    /// (RemovePodSandbox): empty CNI_NETNS and no prevResult.
    pub fn del(&self, sb: &Sandbox, prev: Option<&Value>, with_netns: bool) -> Result<()> {
        for plugin in self.plugins()?.iter().rev() {
            let prev = if with_netns { prev } else { None };
            self.exec("DEL", plugin, sb, with_netns, prev)?;
        }
        Ok(())
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf> {
        self.cni_path
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("CNI plugin {kind:?} not found in {:?}", self.cni_path))
    }

    fn stdin(
        &self,
        plugin: &Map<String, Value>,
        sb: &Sandbox,
        prev: Option<&Value>,
    ) -> Map<String, Value> {
        let mut conf = plugin.clone();
        conf.insert("cniVersion".into(), self.conflist["cniVersion"].clone());
        conf.insert("name".into(), self.conflist["name"].clone());
        let declared = plugin
            .get("capabilities")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut rc = Map::new();
        if declared.get(POD_ANNOTATIONS_CAP) == Some(&Value::Bool(true)) {
            rc.insert(POD_ANNOTATIONS_CAP.into(), json!(sb.annotations));
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        conf
    }

    /// CNI_ARGS with the keys rotated per call, as containerd's map iteration does.
    fn cni_args(&self, sb: &Sandbox) -> String {
        let mut kv = [
            format!("K8S_POD_NAME={}", sb.pod_name),
            format!("K8S_POD_INFRA_CONTAINER_ID={}", sb.id),
            format!("K8S_POD_UID={}", sb.pod_uid),
            "IgnoreUnknown=1".to_string(),
            format!("K8S_POD_NAMESPACE={}", sb.pod_namespace),
        ];
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let len = kv.len();
        kv.rotate_left(n % len);
        if !n.is_multiple_of(2) {
            kv.reverse();
        }
        kv.join(";")
    }

    fn exec(
        &self,
        verb: &str,
        plugin: &Map<String, Value>,
        sb: &Sandbox,
        with_netns: bool,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("plugin without type"))?;
        let bin = self.find_plugin(kind)?;
        // serde_json's Map is ordered by key, which is what containerd's re-serialisation gives.
        let stdin = serde_json::to_vec(&self.stdin(plugin, sb, prev))?;
        let cni_path = std::env::join_paths(&self.cni_path)?;
        let netns = if with_netns {
            sb.netns.display().to_string()
        } else {
            String::new()
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node_netns])
            .arg(&bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &sb.id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &sb.ifname)
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", self.cni_args(sb))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        child.stdin.take().expect("piped stdin").write_all(&stdin)?;
        let out = child.wait_with_output()?;
        let stdout: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "plugin type={kind:?} ({verb}) wrote non-JSON: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?
        };
        if !out.status.success() {
            let lower = verb.to_lowercase();
            return Err(anyhow!(
                "plugin type={kind:?} failed ({lower}): {}; {} (code {}, stderr: {})",
                stdout["msg"].as_str().unwrap_or("no message"),
                stdout["details"].as_str().unwrap_or(""),
                stdout["code"],
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(stdout)
    }
}

/// The addresses (without prefix) of an ADD result's `ips`.
pub fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}
