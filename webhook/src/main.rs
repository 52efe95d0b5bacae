//! pinip-webhook: flags, logging, state, server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use kube::Client;
use pinip_api::duration::parse_duration;
use pinip_index::Resolver;
use pinip_webhook::allocate::Allocator;
use pinip_webhook::index::Index;
use pinip_webhook::metrics::Metrics;
use pinip_webhook::server::{App, router};
use pinip_webhook::state::{PatchEncoding, State};
use pinip_webhook::tls::ReloadingCert;

/// pinip admission webhook: decides each pod's fixed address at creation (/mutate) and
/// enforces policy on pods, IPPools and IPClaims (/validate). Also serves /healthz, /readyz
/// and /metrics (Prometheus) on the same HTTPS port.
#[derive(Parser, Debug)]
#[command(name = "pinip-webhook", version)]
struct Args {
    /// Address and port to serve HTTPS on.
    #[arg(long, env = "PINIP_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Directory with tls.crt and tls.key (a mounted Secret); re-read when its contents change.
    #[arg(long, env = "PINIP_TLS_DIR", default_value = "/etc/pinip/tls")]
    tls_dir: PathBuf,
    /// How often to look for a rotated certificate.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// kubeconfig to reach the API server; default: in-cluster config or $KUBECONFIG.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// An address released less than this long ago is not handed out again.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    cooldown: Duration,
    /// How long a claim reserved for a pod that does not exist yet stays reserved for it:
    /// the longest a pod's admission can take (kube-apiserver gives up on a request after
    /// 60s), plus a margin for clocks and whole-second timestamps.
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    reservation_hold: Duration,
    /// Most reservations a namespace may hold for pods that do not exist (yet): each pod that a
    /// later admission step refuses (quota, another webhook) leaves one until the binder
    /// reclaims it, so this bounds what a namespace can take from a pool without running pods.
    /// It counts claims the binder has not bound yet: with no binder running, a namespace
    /// admits at most this many new pods.
    #[arg(long, default_value_t = 256)]
    max_reservations_per_namespace: usize,
    /// Pod interface the allocation is written for.
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// Users allowed to create, change and delete IPClaims (repeat the flag).
    #[arg(long = "claim-writer", default_values_t = [
        "system:serviceaccount:pinip-system:pinip-webhook".to_string(),
        "system:serviceaccount:pinip-system:pinip-binder".to_string(),
    ])]
    claim_writers: Vec<String>,
    /// Users additionally allowed to delete IPClaims (the garbage collector releases claims
    /// whose owner is gone).
    #[arg(long = "claim-deleter", default_values_t = [
        "system:serviceaccount:kube-system:generic-garbage-collector".to_string(),
    ])]
    claim_deleters: Vec<String>,
    /// Offer HTTP/2. Off by default: kube-apiserver sends every admission over a single
    /// HTTP/2 connection, so behind a Service one replica would take all the load.
    #[arg(long)]
    http2: bool,
    /// How AdmissionResponse.patch is encoded (base64 is what kube-apiserver expects).
    #[arg(long, value_enum, default_value_t = PatchEncoding::Base64, hide = true)]
    patch_encoding: PatchEncoding,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `pinip_webhook=debug,info`.
    #[arg(long, env = "PINIP_LOG", default_value = "info")]
    log: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Plain => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    let _ = rustls::crypto::ring::default_provider().install_default();

    // In a pod the Secret may not exist yet (pinip-certs creates it); wait rather than
    // crash-loop, and stay unready meanwhile.
    let cert = loop {
        match ReloadingCert::load(&args.tls_dir) {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the serving certificate");
                tokio::time::sleep(args.tls_reload_interval).await;
            }
        }
    };
    tokio::spawn(cert.clone().watch(args.tls_reload_interval));

    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = Client::try_from(config)?;
    let index = Index::start(&client);
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(State {
        client: client.clone(),
        index: index.clone(),
        resolver: Resolver {
            client: client.clone(),
            workloads: index.workloads.clone(),
        },
        allocator: Allocator {
            api: kube::Api::all(client.clone()),
            client: client.clone(),
            hold: args.reservation_hold,
            index: index.clone(),
            cooldown: args.cooldown,
            interface: args.interface.clone(),
            metrics: metrics.clone(),
        },
        metrics,
        max_reservations: args.max_reservations_per_namespace,
        claim_writers: args.claim_writers.clone(),
        claim_deleters: args.claim_deleters.clone(),
        patch_encoding: args.patch_encoding,
    });
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            index.wait_ready().await;
            ready.store(true, Ordering::Relaxed);
            tracing::info!("watches synced; ready");
        });
    }
    let app = router(App { state, ready });
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
        cert.server_config(args.http2),
    ));
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down; finishing open requests");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
    }
    tracing::info!(listen = %args.listen, "serving");
    axum_server::bind_rustls(args.listen, tls)
        .handle(handle)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
