//! pinip-webhook: flags, logging, state, server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pinip_api::duration::parse_duration;
use pinip_runtime::{AdminArgs, AdminServer, ClientArgs, LogArgs, shutdown};
use pinip_webhook::client_auth::ClientAuth;
use pinip_webhook::index::Index;
use pinip_webhook::metrics::Metrics;
use pinip_webhook::server::{App, admission_router};
use pinip_webhook::state::{Settings, State};
use pinip_webhook::tls::ReloadingCert;

/// pinip admission webhook: decides each pod's fixed address at creation (/mutate) and
/// enforces policy on pods and IPPools (/validate) over HTTPS; serves /healthz,
/// /readyz and /metrics (Prometheus) over plain HTTP on a separate port.
#[derive(Parser, Debug)]
#[command(name = "pinip-webhook", version)]
struct Args {
    /// Address and port to serve /mutate and /validate on (HTTPS).
    #[arg(long, env = "PINIP_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    #[command(flatten)]
    admin: AdminArgs,
    /// PEM bundle of the CA that signs kube-apiserver's admission client certificate. When
    /// set, /mutate and /validate accept only TLS clients presenting a certificate from it
    /// (kube-apiserver presents one when its AdmissionConfiguration names one for this
    /// webhook); re-read as often as the serving certificate.
    #[arg(long, env = "PINIP_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: a subject common name the client certificate must carry (repeat the
    /// flag). Needed when that CA also signs other clients, e.g. users.
    #[arg(long = "client-name", requires = "client_ca", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    client_names: Vec<String>,
    /// Directory with tls.crt and tls.key (a mounted Secret); re-read when its contents change.
    #[arg(long, env = "PINIP_TLS_DIR", default_value = "/etc/pinip/tls")]
    tls_dir: PathBuf,
    /// How often to look for a rotated serving certificate or client CA.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    #[command(flatten)]
    client: ClientArgs,
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
    /// admits at most this many new pods. The default is twice the 500 pods a ReplicaSet or
    /// Job controller creates in one burst (256 refused pods of a 1000-replica rollout,
    /// measured: the binder binds behind such a burst, not inside it).
    #[arg(long, default_value_t = 1024)]
    max_reservations_per_namespace: usize,
    /// Pod interface the allocation is written for.
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// Offer HTTP/2. Off by default: kube-apiserver sends every admission over a single
    /// HTTP/2 connection, so behind a Service one replica would take all the load.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init()?;
    pinip_runtime::client::install_crypto();

    // In a pod the Secret may not exist yet (pinip-certs creates it); wait rather than
    // crash-loop, and stay unready meanwhile.
    // Installed first, so that a pod stopped while it waits for its certificate exits at once.
    let mut stop = Box::pin(shutdown::signal()?);
    let cert = loop {
        match ReloadingCert::load(&args.tls_dir) {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the serving certificate");
                tokio::select! {
                    _ = tokio::time::sleep(args.tls_reload_interval) => {}
                    _ = &mut stop => return Ok(()),
                }
            }
        }
    };
    tokio::spawn(cert.clone().watch(args.tls_reload_interval));

    let client = args.client.client().await?;
    let index = Index::start(&client);
    let metrics = Arc::new(Metrics::default());
    let metrics_refused = metrics.clients_refused.clone();
    let state = Arc::new(State::new(
        client.clone(),
        index.clone(),
        metrics,
        Settings {
            cooldown: args.cooldown,
            reservation_hold: args.reservation_hold,
            max_reservations_per_namespace: args.max_reservations_per_namespace,
            interface: args.interface.clone(),
        },
    ));
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            index.wait_ready().await;
            ready.store(true, Ordering::Relaxed);
            tracing::info!("watches synced; ready");
        });
    }
    let app = App { state, ready };
    let clients = match &args.client_ca {
        Some(path) => {
            let auth = ClientAuth::new(path, args.client_names.clone(), metrics_refused)
                .context("--client-ca")?;
            auth.verifier().context("--client-ca")?;
            if auth.names().is_empty() {
                tracing::warn!(ca = %path.display(), "admission clients: any certificate from --client-ca is accepted; set --client-name unless that CA signs only kube-apiserver");
            }
            tracing::info!(ca = %path.display(), names = ?auth.names(), "admission clients must present a certificate");
            Some(Arc::new(auth))
        }
        None => {
            tracing::warn!(
                "admission clients are not authenticated: anyone who reaches --listen can send AdmissionReviews; set --client-ca (see the README)"
            );
            None
        }
    };
    let server_config = |verifier| Arc::new(cert.server_config(args.http2, verifier));
    let verifier = match &clients {
        Some(c) => Some(c.verifier()?),
        None => None,
    };
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(server_config(verifier));
    if let Some(clients) = clients {
        let tls = tls.clone();
        let cert = cert.clone();
        let (http2, every) = (args.http2, args.tls_reload_interval);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match clients.changed() {
                    Ok(false) => {}
                    Ok(true) => match clients.verifier() {
                        Ok(v) => {
                            tls.reload_from_config(Arc::new(cert.server_config(http2, Some(v))));
                            tracing::info!("client CA reloaded");
                        }
                        // The previous CA stays in force until the file parses again.
                        Err(e) => tracing::warn!(error = %e, "client CA not reloaded"),
                    },
                    Err(e) => tracing::warn!(error = %e, "client CA not reloaded"),
                }
            }
        });
    }

    let handle = axum_server::Handle::new();
    let admin = AdminServer::start(args.admin.metrics_listen, app.clone()).await?;
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down; finishing open requests");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
    }
    tracing::info!(listen = %args.listen, metrics_listen = %args.admin.metrics_listen, "serving");
    // TCP_NODELAY, as Go's and most servers set it: an answer written in more than one
    // segment does not wait for the client's delayed ACK of the first.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::bind(args.listen)
        .acceptor(acceptor)
        .handle(handle)
        .serve(admission_router(app).into_make_service())
        .await?;
    admin.stop(Duration::from_secs(2)).await?;
    Ok(())
}
