//! pinip's binder on the test bed: replicas run as the real `pinip-binder` binary with the
//! binder's identity from the manifests (a client certificate for
//! `system:serviceaccount:pinip-system:pinip-binder`), each serving plain-HTTP /metrics on its
//! own loopback port. A replica can be SIGKILLed, stopped gracefully and restarted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bed::Bed;
use crate::controlplane::free_port;
use crate::pinip::{BINDER_USER, bin_dir};
use crate::process::Proc;

/// The namespace and name of the binders' Lease on the bed.
pub const LEASE_NAMESPACE: &str = "pinip-system";
pub const LEASE_NAME: &str = "pinip-binder";

/// Binder replicas; replica `i` has identity `binder-<i>` in the Lease.
pub struct Binders {
    procs: Vec<Option<Proc>>,
    pub ports: Vec<u16>,
    bin: PathBuf,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    args: Vec<String>,
    starts: usize,
}

/// Starts `replicas` binder processes (extra flags `args`) and waits until each is ready.
pub async fn start_binders(bed: &Bed, replicas: usize, args: &[&str]) -> Result<Binders> {
    let bin = bin_dir()?.join("pinip-binder");
    if !bin.exists() {
        bail!(
            "{} not built: run `cargo build --workspace --bins` first (./test.sh does)",
            bin.display()
        );
    }
    let dir = bed.dir.join(format!("binder-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = bed.identity_kubeconfig(
        &dir.join("binder.kubeconfig"),
        BINDER_USER,
        Some("system:serviceaccounts"),
    )?;
    let mut b = Binders {
        procs: Vec::new(),
        ports: Vec::new(),
        bin,
        kubeconfig,
        log_dir: bed.dir.join("logs"),
        args: args.iter().map(|s| s.to_string()).collect(),
        starts: 0,
    };
    for _ in 0..replicas {
        b.ports.push(free_port()?);
        b.procs.push(None);
    }
    for i in 0..replicas {
        b.spawn(i)?;
    }
    for i in 0..replicas {
        b.wait_ready(i).await?;
    }
    Ok(b)
}

impl Binders {
    pub fn identity(i: usize) -> String {
        format!("binder-{i}")
    }

    /// Process ids of the replicas running now.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().flatten().filter_map(Proc::pid).collect()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let mut a = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--metrics-listen=127.0.0.1:{}", self.ports[i]),
            format!("--identity={}", Binders::identity(i)),
            format!("--lease-namespace={LEASE_NAMESPACE}"),
            format!("--lease-name={LEASE_NAME}"),
        ];
        a.extend(self.args.iter().cloned());
        self.starts += 1;
        let log = self
            .log_dir
            .join(format!("pinip-binder-{i}-{}.log", self.starts));
        self.procs[i] = Some(Proc::spawn(
            &format!("pinip-binder-{i}"),
            &self.bin,
            &a,
            &log,
        )?);
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let start = Instant::now();
        loop {
            if matches!(self.get(i, "/readyz").await, Ok(b) if b == "ok") {
                return Ok(());
            }
            if let Some(p) = self.procs[i].as_mut() {
                p.check_running()?;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("pinip-binder-{i} not ready after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no lease release, no clean-up, as a node crash or OOM kill would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            if let Some(pid) = p.pid() {
                // SAFETY: signalling our own child's process group.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            p.stop(Duration::from_secs(1));
        }
    }

    /// SIGTERM and wait: the binder releases its lease on the way out.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Starts replica `i` again (same identity and port) and waits until it is ready.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Replica `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().and_then(Proc::pid)
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// Plain-HTTP GET of `path` from replica `i`; the body.
    pub async fn get(&self, i: usize, path: &str) -> Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.ports[i])).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await??;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_string())
    }

    /// The value of the sample `name` (with labels, e.g. `pinip_binder_claims{phase="Bound"}`)
    /// on replica `i`; 0 when absent.
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64> {
        let text = self.get(i, "/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0))
    }

    /// Which replica holds the Lease, if any.
    pub async fn leader(&self, client: &Client) -> Result<Option<usize>> {
        let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let holder = api
            .get_opt(LEASE_NAME)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        Ok(holder.and_then(|h| (0..self.ports.len()).find(|i| Binders::identity(*i) == h)))
    }
}
