//! whereabouts, the cluster-wide IPAM the benchmarks compare pinip with: built from its Go
//! module (`whereabouts/build.sh`, cached outside the clone), its CRDs applied to the bed, and
//! the flat configuration file its plugin reads (a kubeconfig whose context names the
//! namespace it keeps its pools and Leases in).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::json;

use crate::bed::Bed;
use crate::{controlplane, pinip, process};

/// Namespace whereabouts keeps its IPPools and its Lease in.
pub const NAMESPACE: &str = "whereabouts";

/// A built whereabouts: the directory holding its plugin and its CRDs.
pub struct Build {
    pub dir: PathBuf,
}

impl Build {
    /// Builds whereabouts (or reuses the cached build).
    pub fn get() -> Result<Build> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("whereabouts/build.sh");
        Ok(Build {
            dir: process::cached_build(&script)?,
        })
    }

    /// The directory to put on `CNI_PATH`.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    pub fn plugin(&self) -> PathBuf {
        self.bin_dir().join("whereabouts")
    }
}

/// Applies whereabouts' CRDs, makes its namespace and writes to `config` its flat
/// configuration, with a kubeconfig (the bed's admin identity, a benchmark's shortcut) whose
/// context names that namespace. A network configuration may name `config` as its
/// `configuration_path` before this writes it: the plugin reads it on each call.
pub async fn install(bed: &Bed, build: &Build, config: &Path) -> Result<()> {
    for crd in std::fs::read_dir(build.dir.join("crds"))? {
        pinip::kubectl(
            bed,
            &[
                "apply",
                "--server-side",
                "-f",
                &crd?.path().display().to_string(),
            ],
        )?;
    }
    pinip::kubectl(
        bed,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/ippools.whereabouts.cni.cncf.io",
            "crd/overlappingrangeipreservations.whereabouts.cni.cncf.io",
        ],
    )?;
    bed.namespace(NAMESPACE, json!({})).await?;
    let kubeconfig = bed.dir.join("whereabouts.kubeconfig");
    std::fs::copy(&bed.kubeconfig, &kubeconfig)?;
    let out = Command::new(controlplane::upstream_bin_dir()?.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "config",
            "set-context",
            "--current",
            &format!("--namespace={NAMESPACE}"),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl config set-context: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(
        config,
        json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig}}).to_string(),
    )?;
    Ok(())
}
