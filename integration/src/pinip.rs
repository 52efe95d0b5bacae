//! pinip's own parts on the test bed: CRDs and RBAC from `manifests/`, webhook replicas run
//! as the real binary with the manifests' identity, and the webhook configurations that make
//! kube-apiserver call them by URL.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use crate::bed::Bed;
use crate::controlplane::{ADMISSION_CLIENT, free_port, upstream_bin_dir};
use crate::lb::LoadBalancer;
use crate::pki::CertFiles;
use crate::process::Proc;

pub const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");
/// The identities the manifests give pinip's components.
pub const WEBHOOK_USER: &str = "system:serviceaccount:pinip-system:pinip-webhook";
pub const BINDER_USER: &str = "system:serviceaccount:pinip-system:pinip-binder";
pub const CERTS_USER: &str = "system:serviceaccount:pinip-system:pinip-certs";

/// Where pinip's binaries are: `$PINIP_BIN_DIR`, else the cargo target directory this test
/// binary was built into (`./test.sh` and `./demo.sh` build every binary first).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PINIP_BIN_DIR") {
        return Ok(d.into());
    }
    // Tests run from target/<profile>/deps, binaries such as the demo from target/<profile>.
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("locating the target directory")?;
    let dir = if here.ends_with("deps") {
        here.parent().context("locating the target directory")?
    } else {
        here
    }
    .to_path_buf();
    for b in ["pinip-webhook", "pinip", "pinip-kube"] {
        if !dir.join(b).exists() {
            bail!(
                "{}/{b} not built: run `cargo build --workspace --bins` first (./test.sh does)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// `kubectl` from the upstream build, against the bed.
pub fn kubectl(bed: &Bed, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(upstream_bin_dir()?.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies the CRDs, RBAC, admission policies and FlowSchema from `manifests/` (server-side) and waits
/// for the CRDs.
pub fn install(bed: &Bed) -> Result<()> {
    kubectl(
        bed,
        &["apply", "--server-side", "-f", &format!("{MANIFESTS}/crds")],
    )?;
    kubectl(
        bed,
        &[
            "apply",
            "--server-side",
            "-f",
            &format!("{MANIFESTS}/base/rbac.yaml"),
        ],
    )?;
    // pinip's ValidatingAdmissionPolicies (enforced inside kube-apiserver, no webhook) and
    // its FlowSchema (pinip's API calls at the controllers' priority).
    for file in ["policies.yaml", "flowschema.yaml"] {
        kubectl(
            bed,
            &[
                "apply",
                "--server-side",
                "-f",
                &format!("{MANIFESTS}/base/{file}"),
            ],
        )?;
    }
    kubectl(
        bed,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/ippools.pinip.io",
            "crd/ipclaims.pinip.io",
        ],
    )?;
    Ok(())
}

/// Webhook replicas behind one load balancer, with their certificates.
pub struct Webhooks {
    pub procs: Vec<Proc>,
    /// Each replica's admission port (HTTPS; only kube-apiserver's client certificate).
    pub ports: Vec<u16>,
    /// Each replica's metrics port (plain HTTP: /metrics, /healthz, /readyz).
    pub metrics_ports: Vec<u16>,
    pub lb: LoadBalancer,
    pub tls_dir: PathBuf,
    pub ca_pem: String,
    /// How each replica was started (binary, flags, log), to start it again.
    launch: Vec<(PathBuf, Vec<String>, PathBuf)>,
}

impl Webhooks {
    /// SIGKILLs replica `i` (mid-request, as a node crash would) and starts it again on the
    /// same port; returns once it is ready.
    pub async fn kill_and_restart(&mut self, i: usize) -> Result<()> {
        if let Some(pid) = self.procs[i].pid() {
            // SAFETY: signalling our own child's process group.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        self.procs[i].stop(Duration::from_secs(1));
        let (bin, args, log) = &self.launch[i];
        self.procs[i] = Proc::spawn(&format!("pinip-webhook-{i}"), bin, args, log)?;
        wait_ready(&mut self.procs[i], self.metrics_ports[i]).await
    }

    /// By name, so that a certificate for `localhost` (as pinip-certs issues) verifies.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.lb.port)
    }

    /// Replica `i` itself, not through the load balancer.
    pub fn replica_url(&self, i: usize) -> String {
        format!("https://localhost:{}", self.ports[i])
    }
}

/// Starts `replicas` webhook processes (extra flags `args`) serving a certificate from the
/// bed's CA, and waits until each is ready.
pub async fn start_webhooks(bed: &Bed, replicas: usize, args: &[&str]) -> Result<Webhooks> {
    let cp = bed
        .cp
        .as_ref()
        .context("webhook tests need a bed they started (not PINIP_BED_DIR)")?;
    let dir = bed.dir.join(format!("webhook-{}", free_port()?));
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let serving = cp.pki.serving(
        "webhook-serving",
        &["localhost", "pinip-webhook.pinip-system.svc"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )?;
    std::fs::copy(&serving.cert, tls_dir.join("tls.crt"))?;
    std::fs::copy(&serving.key, tls_dir.join("tls.key"))?;
    let mut hooks = start_webhooks_with_tls(bed, replicas, args, &tls_dir).await?;
    hooks.ca_pem = cp.pki.ca_pem.clone();
    Ok(hooks)
}

/// Starts webhook replicas serving whatever certificate `tls_dir` holds (e.g. one that
/// pinip-certs issued); `ca_pem` is then left empty for the caller to fill if it needs it.
pub async fn start_webhooks_with_tls(
    bed: &Bed,
    replicas: usize,
    args: &[&str],
    tls_dir: &Path,
) -> Result<Webhooks> {
    let dir = bed.dir.join(format!("webhook-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let tls_dir = tls_dir.to_path_buf();
    let kubeconfig = bed.identity_kubeconfig(
        &dir.join("webhook.kubeconfig"),
        WEBHOOK_USER,
        Some("system:serviceaccounts"),
    )?;
    let bin = bin_dir()?.join("pinip-webhook");
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    let mut metrics_ports = Vec::new();
    let mut launch = Vec::new();
    for i in 0..replicas {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let mut a: Vec<String> = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--tls-dir={}", tls_dir.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--tls-reload-interval=1s".into(),
        ];
        // As the README asks of operators: only kube-apiserver's admission client certificate
        // may call /mutate and /validate.
        if let Some(cp) = &bed.cp {
            a.push(format!("--client-ca={}", cp.pki.ca_cert.display()));
            a.push(format!("--client-name={ADMISSION_CLIENT}"));
        }
        a.extend(args.iter().map(|s| s.to_string()));
        let log = bed
            .dir
            .join("logs")
            .join(format!("pinip-webhook-{port}.log"));
        procs.push(Proc::spawn(&format!("pinip-webhook-{i}"), &bin, &a, &log)?);
        launch.push((bin.clone(), a, log));
        ports.push(port);
        metrics_ports.push(metrics_port);
    }
    for (p, port) in procs.iter_mut().zip(&metrics_ports) {
        wait_ready(p, *port).await?;
    }
    let lb = LoadBalancer::start(ports.clone()).await?;
    Ok(Webhooks {
        procs,
        ports,
        metrics_ports,
        lb,
        tls_dir,
        ca_pem: String::new(),
        launch,
    })
}

/// GET `path` from a webhook replica's metrics port (plain HTTP).
pub async fn webhook_get(metrics_port: u16, path: &str) -> Result<String> {
    let config = kube::Config::new(format!("http://127.0.0.1:{metrics_port}").parse()?);
    let client = Client::try_from(config)?;
    let req = http::Request::get(path).body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

async fn wait_ready(p: &mut Proc, metrics_port: u16) -> Result<()> {
    let start = Instant::now();
    loop {
        if matches!(webhook_get(metrics_port, "/readyz").await, Ok(b) if b == "ok") {
            return Ok(());
        }
        p.check_running()?;
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{} not ready after 30s", p.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS client configuration trusting `roots_pem`, presenting `identity` if given (as
/// kube-apiserver presents its admission client certificate).
pub fn tls_client_config(
    roots_pem: &str,
    identity: Option<&CertFiles>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(Arc::new(match identity {
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(&id.cert)?.collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(&id.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    }))
}

/// What a TLS server answered to one HTTP/1.1 request.
#[derive(Debug)]
pub struct TlsReply {
    /// The server's leaf certificate (DER).
    pub peer_cert: Vec<u8>,
    /// The response: status line, headers and body, as text.
    pub response: String,
}

/// Sends one HTTP/1.1 request (`Connection: close`) over TLS to 127.0.0.1:`port` as
/// `localhost`; errors if the handshake or the exchange fails.
pub fn tls_request(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<TlsReply> {
    use std::io::{Read, Write};
    let mut conn = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost")?)?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(body)?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out)?;
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no peer certificate")?
        .to_vec();
    Ok(TlsReply {
        peer_cert,
        response: String::from_utf8_lossy(&out).into_owned(),
    })
}

/// The YAML documents of a manifest file, as JSON values.
pub fn manifest_docs(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in text.split("\n---") {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        docs.push(
            serde_saphyr::from_str::<Value>(doc)
                .with_context(|| format!("parsing {}", path.display()))?,
        );
    }
    Ok(docs)
}

/// The webhook configurations exactly as `manifests/base/webhooks.yaml` defines them, renamed
/// to `name` and reaching the webhook by `url` instead of through the Service. An empty
/// `ca_pem` leaves `caBundle` out, for pinip-certs to inject.
pub fn webhook_configurations(url: &str, ca_pem: &str, name: &str) -> Result<Vec<Value>> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut docs = manifest_docs(&Path::new(MANIFESTS).join("base/webhooks.yaml"))?;
    for doc in &mut docs {
        doc["metadata"]["name"] = json!(name);
        for hook in doc["webhooks"].as_array_mut().into_iter().flatten() {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap_or("/")
                .to_string();
            let mut cc = json!({"url": format!("{url}{path}")});
            if !ca.is_empty() {
                cc["caBundle"] = json!(ca);
            }
            hook["clientConfig"] = cc;
        }
    }
    Ok(docs)
}

/// Server-side applies a JSON object of any kind.
pub async fn apply(client: &Client, obj: &Value) -> Result<()> {
    let (group, version) = match obj["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let kind = obj["kind"].as_str().unwrap_or_default();
    let gvk = GroupVersionKind::gvk(&group, &version, kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let o: DynamicObject = serde_json::from_value(obj.clone())?;
    api.patch(
        name,
        &PatchParams::apply("pinip-tests").force(),
        &Patch::Apply(&o),
    )
    .await
    .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

/// Server-side applies IPPool `name` with `spec`.
pub async fn apply_pool(client: &Client, name: &str, spec: Value) -> Result<()> {
    apply(
        client,
        &json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

/// Registers `hooks` with kube-apiserver under the configuration name `name`.
pub async fn register(client: &Client, hooks: &Webhooks, name: &str) -> Result<()> {
    register_at(client, &hooks.url(), &hooks.ca_pem, name).await
}

/// Registers the webhooks at `url` (serving a certificate of `ca_pem`) under `name`, or
/// points an existing registration there.
pub async fn register_at(client: &Client, url: &str, ca_pem: &str, name: &str) -> Result<()> {
    for doc in webhook_configurations(url, ca_pem, name)? {
        apply(client, &doc).await?;
    }
    Ok(())
}
