//! `testbed`: run pinip's test bed by hand.
//!
//!   cargo run -p pinip-integration -- up      # start, print how to reach it, run until Ctrl-C
//!   cargo run -p pinip-integration -- up --with-pinip [--cni macvlan]   # … with pinip running
//!   cargo run -p pinip-integration -- env     # print `export KUBECONFIG=…` for a running bed
//!   cargo run -p pinip-integration -- down    # stop a running bed

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use pinip_integration::pinip;
use pinip_integration::stack::{Stack, StackOptions};
use pinip_integration::{Bed, BedOptions, Ipam, MainPlugin};

#[derive(Parser, Debug)]
#[command(name = "testbed", version, about = "pinip's real-cluster test bed")]
struct Cli {
    /// Directory holding a running bed's state (kubeconfig, logs, pid).
    #[arg(
        long,
        global = true,
        env = "PINIP_BED_DIR",
        default_value = "/tmp/pinip-bed"
    )]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the control plane and nodes, then run until interrupted (Ctrl-C or `down`).
    Up {
        /// Number of nodes (zones a and b alternate).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Main CNI plugin of each node.
        #[arg(long, value_enum, default_value_t = MainPlugin::Bridge)]
        cni: MainPlugin,
        /// Delegate IPAM to the pinip plugin found in this directory instead of host-local.
        #[arg(long)]
        pinip_bin_dir: Option<PathBuf>,
        /// Run pinip on the bed as the manifests configure it: CRDs and RBAC, two webhook
        /// replicas, two binders, the example pools (`manifests/examples/ippools.yaml`), and
        /// namespace `demo` labelled `pinip.io/enabled=true`. Needs `cargo build --workspace
        /// --bins` first.
        #[arg(long, conflicts_with = "pinip_bin_dir")]
        with_pinip: bool,
    },
    /// Print the environment for kubectl and tests against the running bed.
    Env,
    /// Stop the running bed and wait until it has cleaned up.
    Down,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pidfile = cli.dir.join("testbed.pid");
    match cli.cmd {
        Cmd::Up {
            nodes,
            cni,
            pinip_bin_dir,
            with_pinip,
        } => {
            if let Ok(pid) = std::fs::read_to_string(&pidfile)
                && alive(pid.trim().parse().unwrap_or(0))
            {
                bail!(
                    "a bed is already running (pid {}); run `down` first",
                    pid.trim()
                );
            }
            let ipam = match pinip_bin_dir {
                Some(bin_dir) => Ipam::Pinip { bin_dir },
                None => Ipam::HostLocal,
            };
            let opts = BedOptions {
                nodes,
                main_plugin: cni,
                ipam,
                dir: Some(cli.dir.clone()),
                ..Default::default()
            };
            let (mut stack, mut plain) = (None, None);
            if with_pinip {
                let s = Stack::start(StackOptions {
                    bed: opts,
                    ..Default::default()
                })
                .await?;
                pinip::kubectl(
                    &s.bed,
                    &[
                        "apply",
                        "-f",
                        &format!("{}/examples/ippools.yaml", pinip::MANIFESTS),
                    ],
                )?;
                s.bed
                    .namespace("demo", serde_json::json!({"pinip.io/enabled": "true"}))
                    .await?;
                eprintln!(
                    "pinip: webhooks {} (replicas on {:?}, metrics on {:?}), binders on {:?}; pools from manifests/examples/ippools.yaml; namespace demo is enabled\n  try: kubectl -n demo run web --image=x --restart=Never && kubectl get ipp,ipc",
                    s.hooks.url(),
                    s.hooks.ports,
                    s.hooks.metrics_ports,
                    s.binders.ports
                );
                stack = Some(s);
            } else {
                plain = Some(Bed::start(opts).await?);
            }
            let bed: &mut Bed = match (&mut stack, &mut plain) {
                (Some(s), _) => &mut s.bed,
                (None, Some(b)) => b,
                (None, None) => unreachable!("one of them was started"),
            };
            std::fs::write(&pidfile, std::process::id().to_string())?;
            eprintln!(
                "test bed ready in {:.1}s: {} nodes; logs in {}\n  export KUBECONFIG={}",
                bed.startup.as_secs_f64(),
                bed.nodes.len(),
                bed.dir.join("logs").display(),
                bed.kubeconfig.display()
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut check = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = check.tick() => {
                        if let Err(e) = bed.check() {
                            eprintln!("control plane failed: {e:#}");
                            break;
                        }
                    }
                }
            }
            eprintln!("tearing down");
            bed.teardown();
            drop(stack);
            let _ = std::fs::remove_file(&pidfile);
            Ok(())
        }
        Cmd::Env => {
            let kc = cli.dir.join("admin.kubeconfig");
            if !kc.exists() {
                bail!("no bed in {} (start one with `up`)", cli.dir.display());
            }
            println!("export KUBECONFIG={}", kc.display());
            Ok(())
        }
        Cmd::Down => {
            let pid: i32 = std::fs::read_to_string(&pidfile)
                .with_context(|| format!("no running bed in {}", cli.dir.display()))?
                .trim()
                .parse()?;
            // SAFETY: signalling the bed's own process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..300 {
                if !alive(pid) {
                    eprintln!("bed stopped");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bail!("bed (pid {pid}) still running after 30s")
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}
