//! pinip-cni-install: what the node DaemonSet runs. Copies the `pinip` plugin and its API
//! reader `pinip-kube` (which `pinip` execs when the runtime passed no pod annotations) into
//! the node's CNI bin directory and keeps a kubeconfig for it (from the pod's ServiceAccount token, which
//! may only get pods) current as the kubelet rotates the token. Every write is atomic
//! (temporary file, then rename), so a runtime never executes or reads a half-written file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Parser;

/// Installs the pinip CNI plugin and its kubeconfig on a node, then keeps the kubeconfig's
/// token current.
#[derive(Parser, Debug)]
#[command(name = "pinip-cni-install", version)]
struct Args {
    /// The plugin binary to install.
    #[arg(long, default_value = "/pinip")]
    plugin: PathBuf,
    /// The plugin's API reader, installed next to it as `pinip-kube`.
    #[arg(long, default_value = "/pinip-kube")]
    api_reader: PathBuf,
    /// The node's CNI bin directory (mounted from the host).
    #[arg(long, default_value = "/host/opt/cni/bin")]
    bin_dir: PathBuf,
    /// Where to write the plugin's kubeconfig (name it in the IPAM config's "kubeconfig").
    #[arg(long, default_value = "/host/etc/cni/net.d/pinip.kubeconfig")]
    kubeconfig: PathBuf,
    /// The ServiceAccount token the kubelet keeps current.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_file: PathBuf,
    /// The cluster CA.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    ca_file: PathBuf,
    /// API server URL; default from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
    #[arg(long)]
    server: Option<String>,
    /// How often to look for a rotated token.
    #[arg(long, default_value_t = 30)]
    refresh_seconds: u64,
    /// Install once and exit.
    #[arg(long)]
    once: bool,
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("target has no directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pinip")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    Ok(())
}

fn server(args: &Args) -> Result<String> {
    if let Some(s) = &args.server {
        return Ok(s.clone());
    }
    let host =
        std::env::var("KUBERNETES_SERVICE_HOST").context("--server or KUBERNETES_SERVICE_HOST")?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

fn kubeconfig(server: &str, ca: &[u8], token: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64}}],
        "users": [{"name": "pinip-cni", "user": {"token": token.trim()}}],
        "contexts": [{"name": "pinip-cni", "context": {"cluster": "local", "user": "pinip-cni"}}],
        "current-context": "pinip-cni",
    });
    serde_json::to_vec_pretty(&kc).expect("kubeconfig serialises")
}

/// The API reader first: a `pinip` that finds no `pinip-kube` next to it fails every ADD that
/// needs the API server.
fn install_binaries(args: &Args) -> Result<()> {
    for (from, name) in [
        (&args.api_reader, pinip_cni::handoff::API_READER),
        (&args.plugin, "pinip"),
    ] {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        let to = args.bin_dir.join(name);
        write_atomic(&to, &bytes, 0o755)?;
        eprintln!("installed {}", to.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    install_binaries(&args)?;
    let server = server(&args)?;
    let mut last = Vec::new();
    loop {
        let token = std::fs::read_to_string(&args.token_file)
            .with_context(|| format!("reading {}", args.token_file.display()))?;
        let ca = std::fs::read(&args.ca_file)
            .with_context(|| format!("reading {}", args.ca_file.display()))?;
        let kc = kubeconfig(&server, &ca, &token);
        if kc != last {
            // Readable by root only: it holds a credential.
            write_atomic(&args.kubeconfig, &kc, 0o600)?;
            eprintln!("wrote {}", args.kubeconfig.display());
            last = kc;
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.refresh_seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_plugin_and_kubeconfig_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("src"), b"binary").unwrap();
        std::fs::write(p.join("reader"), b"reader").unwrap();
        std::fs::write(p.join("token"), "tok\n").unwrap();
        std::fs::write(p.join("ca"), b"CA").unwrap();
        let args = Args::parse_from([
            "x",
            "--once",
            "--server=https://10.0.0.1:443",
            &format!("--plugin={}", p.join("src").display()),
            &format!("--api-reader={}", p.join("reader").display()),
            &format!("--bin-dir={}", p.join("bin").display()),
            &format!(
                "--kubeconfig={}",
                p.join("net.d/pinip.kubeconfig").display()
            ),
            &format!("--token-file={}", p.join("token").display()),
            &format!("--ca-file={}", p.join("ca").display()),
        ]);
        assert_eq!(server(&args).unwrap(), "https://10.0.0.1:443");
        let kc = kubeconfig("https://s", b"CA", "tok\n");
        let v: serde_json::Value = serde_json::from_slice(&kc).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        install_binaries(&args).unwrap();
        assert_eq!(std::fs::read(p.join("bin/pinip")).unwrap(), b"binary");
        assert_eq!(std::fs::read(p.join("bin/pinip-kube")).unwrap(), b"reader");
        assert!(!p.join("bin/.pinip.tmp").exists());
        assert!(!p.join("bin/.pinip-kube.tmp").exists());
    }

    #[test]
    fn the_reader_goes_in_first() {
        // A reader that cannot be installed leaves no `pinip` behind that would fail every ADD
        // needing the API server; a `pinip` already there is not replaced by a newer one.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("src"), b"new plugin").unwrap();
        let args = |bin: &str| {
            Args::parse_from([
                "x",
                &format!("--plugin={}", p.join("src").display()),
                &format!("--api-reader={}", p.join("missing").display()),
                &format!("--bin-dir={}", p.join(bin).display()),
            ])
        };
        let err = install_binaries(&args("fresh")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
        assert!(!p.join("fresh/pinip").exists());
        std::fs::create_dir(p.join("old")).unwrap();
        std::fs::write(p.join("old/pinip"), b"old plugin").unwrap();
        install_binaries(&args("old")).unwrap_err();
        assert_eq!(std::fs::read(p.join("old/pinip")).unwrap(), b"old plugin");
    }
}
