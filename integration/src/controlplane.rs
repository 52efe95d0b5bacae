//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the upstream
//! binaries, on loopback, with the bed's certificates; started in order and awaited healthy.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{CertFiles, Pki};
use crate::process::Proc;

/// Where the upstream binaries are: `$PINIP_K8S_BIN`, else what `k8s-build.sh` builds or finds
/// in its cache.
pub fn upstream_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PINIP_K8S_BIN") {
        return Ok(dir.into());
    }
    crate::process::cached_build(&Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s-build.sh"))
}

/// A free loopback port. The kernel hands out ephemeral ports round-robin, so two processes
/// asking at once get different ones.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The name on the client certificate kube-apiserver presents to admission webhooks (its
/// AdmissionConfiguration gives it one for every webhook host); pinip's webhook admits only it.
pub const ADMISSION_CLIENT: &str = "kube-apiserver-webhook-client";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub api_port: u16,
    pub admin_kubeconfig: PathBuf,
    pub pki: Pki,
    /// The client certificate kube-apiserver presents to admission webhooks.
    pub admission_client: CertFiles,
    // Dropped in reverse order of start: scheduler and controllers first, etcd last.
    procs: Vec<Proc>,
}

impl ControlPlane {
    /// `profiling`: serve kube-apiserver's `/debug/pprof`.
    pub async fn start(dir: &Path, bins: &Path, profiling: bool) -> Result<ControlPlane> {
        let pki = Pki::create(&dir.join("pki"))?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let kcm_port = free_port()?;
        let sched_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let p = |x: &Path| x.display().to_string();

        let admin = pki.client("admin", "pinip-testbed-admin", Some("system:masters"))?;
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &server, &pki.ca_pem, &admin)?;
        let kcm = pki.client("kcm", "system:kube-controller-manager", None)?;
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        write_kubeconfig(&kcm_kubeconfig, &server, &pki.ca_pem, &kcm)?;
        let sched = pki.client("scheduler", "system:kube-scheduler", None)?;
        let sched_kubeconfig = dir.join("scheduler.kubeconfig");
        write_kubeconfig(&sched_kubeconfig, &server, &pki.ca_pem, &sched)?;
        let (admission_config, admission_client) = write_admission_config(dir, &pki)?;

        let mut cp = ControlPlane {
            dir: dir.to_path_buf(),
            api_port,
            admin_kubeconfig: admin_kubeconfig.clone(),
            pki,
            admission_client,
            procs: Vec::new(),
        };
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.procs.push(Proc::spawn(
            "etcd",
            &bins.join("etcd"),
            &args(&[
                "--name=default",
                &format!("--data-dir={}", p(&dir.join("etcd"))),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]),
            &logs.join("etcd.log"),
        )?);
        wait_until("etcd", Duration::from_secs(30), &mut cp.procs, || async {
            http_get_ok(etcd_port, "/health").await
        })
        .await?;

        let cert_dir = dir.join("certs");
        cp.procs.push(Proc::spawn(
            "kube-apiserver",
            &bins.join("kube-apiserver"),
            &args(&[
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--cert-dir={}", p(&cert_dir)),
                &format!("--tls-cert-file={}", p(&cp.pki.apiserver.cert)),
                &format!("--tls-private-key-file={}", p(&cp.pki.apiserver.key)),
                &format!("--client-ca-file={}", p(&cp.pki.ca_cert)),
                &format!("--admission-control-config-file={}", p(&admission_config)),
                &format!("--service-account-key-file={}", p(&cp.pki.sa_pub)),
                &format!("--service-account-signing-key-file={}", p(&cp.pki.sa_key)),
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                &format!("--profiling={profiling}"),
                "--v=1",
            ]),
            &logs.join("kube-apiserver.log"),
        )?);
        let client = cp.client().await?;
        let c = client.clone();
        wait_until(
            "kube-apiserver",
            Duration::from_secs(60),
            &mut cp.procs,
            || {
                let c = c.clone();
                async move { api_get_ok(&c, "/readyz").await }
            },
        )
        .await?;

        let common = |port: u16, kubeconfig: &Path| -> Vec<String> {
            args(&[
                &format!("--kubeconfig={}", p(kubeconfig)),
                &format!("--authentication-kubeconfig={}", p(kubeconfig)),
                &format!("--authorization-kubeconfig={}", p(kubeconfig)),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={port}"),
                "--leader-elect=false",
                // Client rate limits raised (defaults: 20/30 for the controllers, 50/100 for
                // the scheduler) so that a rollout of 1000 pods measures admission and
                // sandboxes, not the controllers' own throttling.
                "--kube-api-qps=1000",
                "--kube-api-burst=2000",
                "--v=1",
            ])
        };
        let mut kcm_args = common(kcm_port, &kcm_kubeconfig);
        kcm_args.extend(args(&[
            &format!("--cert-dir={}", p(&cert_dir.join("kcm"))),
            &format!("--service-account-private-key-file={}", p(&cp.pki.sa_key)),
            &format!("--root-ca-file={}", p(&cp.pki.ca_cert)),
            "--use-service-account-credentials=true",
            "--controllers=*",
            "--node-monitor-period=2s",
        ]));
        cp.procs.push(Proc::spawn(
            "kube-controller-manager",
            &bins.join("kube-controller-manager"),
            &kcm_args,
            &logs.join("kube-controller-manager.log"),
        )?);
        let mut sched_args = common(sched_port, &sched_kubeconfig);
        sched_args.push(format!("--cert-dir={}", p(&cert_dir.join("scheduler"))));
        cp.procs.push(Proc::spawn(
            "kube-scheduler",
            &bins.join("kube-scheduler"),
            &sched_args,
            &logs.join("kube-scheduler.log"),
        )?);
        for (name, port) in [
            ("kube-controller-manager", kcm_port),
            ("kube-scheduler", sched_port),
        ] {
            let probe = insecure_client(port)?;
            wait_until(name, Duration::from_secs(60), &mut cp.procs, || {
                let c = probe.clone();
                async move { api_get_ok(&c, "/healthz").await }
            })
            .await?;
        }
        Ok(cp)
    }

    pub async fn client(&self) -> Result<Client> {
        client_for(&self.admin_kubeconfig).await
    }

    /// Process ids of the running components.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(Proc::pid).collect()
    }

    /// The running components by name (`etcd`, `kube-apiserver`, …) with their process ids.
    pub fn named_pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.pid()?)))
            .collect()
    }

    /// Fails when a component has exited.
    pub fn check(&mut self) -> Result<()> {
        for p in &mut self.procs {
            p.check_running()?;
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A kubeconfig with the client certificate embedded, so it stays valid when copied.
pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, cert: &CertFiles) -> Result<()> {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pinip-testbed", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem.as_bytes()),
        }}],
        "users": [{"name": "user", "user": {
            "client-certificate-data": b64(&std::fs::read(&cert.cert)?),
            "client-key-data": b64(&std::fs::read(&cert.key)?),
        }}],
        "contexts": [{"name": "pinip-testbed", "context": {"cluster": "pinip-testbed", "user": "user"}}],
        "current-context": "pinip-testbed",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&kc)?)?;
    Ok(())
}

/// The AdmissionConfiguration that makes kube-apiserver present a client certificate
/// (`ADMISSION_CLIENT`) to every admission webhook, as the README tells operators to do for
/// pinip's webhook host.
fn write_admission_config(dir: &Path, pki: &Pki) -> Result<(PathBuf, CertFiles)> {
    let cert = pki.client("apiserver-admission", ADMISSION_CLIENT, None)?;
    let kubeconfig = dir.join("admission.kubeconfig");
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{"name": "*", "user": {
            "client-certificate": &cert.cert,
            "client-key": &cert.key,
        }}],
    });
    std::fs::write(&kubeconfig, serde_json::to_vec_pretty(&kc)?)?;
    let plugin = |name: &str| {
        serde_json::json!({"name": name, "configuration": {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": kubeconfig,
        }})
    };
    let config = serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [plugin("ValidatingAdmissionWebhook"), plugin("MutatingAdmissionWebhook")],
    });
    let path = dir.join("admission-config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok((path, cert))
}

/// A client for a component's self-signed health endpoint.
fn insecure_client(port: u16) -> Result<Client> {
    let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse()?);
    config.accept_invalid_certs = true;
    Ok(Client::try_from(config)?)
}

async fn api_get_ok(client: &Client, path: &str) -> bool {
    let req = http::Request::get(path).body(Vec::new()).expect("request");
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

async fn http_get_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")
}

/// Polls `probe` until it answers true, failing early when any started process has exited.
async fn wait_until<F, Fut>(what: &str, limit: Duration, procs: &mut [Proc], probe: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            tracing::info!(
                component = what,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "healthy"
            );
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_running()
                .with_context(|| format!("waiting for {what}; see its log under logs/"))?;
        }
        if start.elapsed() > limit {
            bail!("{what} not healthy after {limit:?}; see its log under logs/");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
