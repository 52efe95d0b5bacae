//! pinip-binder: flags, logging, watches, leader election, reconcile loop, HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use kube::Client;
use pinip_binder::args::{Args, LogFormat};
use pinip_binder::bind::Policy;
use pinip_binder::events::Events;
use pinip_binder::index::Index;
use pinip_binder::leader::Elector;
use pinip_binder::metrics::Metrics;
use pinip_binder::reconcile::{self, Context};
use pinip_binder::server::{App, router};
use pinip_binder::workload::Lookups;
use tokio::sync::watch;

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
    args.leader
        .validate()
        .map_err(anyhow::Error::msg)
        .context("lease flags")?;
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = Client::try_from(config)?;
    let identity = args.leader.identity();
    let index = Index::start(&client);
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        index: index.clone(),
        metrics: metrics.clone(),
        events: Events::new(client.clone(), identity.clone()),
        lookups: Lookups::new(client.clone(), args.resync_interval),
        policy: Policy {
            reclaim_grace: args.reclaim_grace,
            set_shrink_grace: args.set_shrink_grace,
            release_on_scale_down: args.release_on_scale_down,
            conflict_settle: args.conflict_settle,
        },
        concurrency: args.concurrency,
        resync: args.resync_interval,
        debounce: args.debounce,
    });

    {
        let index = index.clone();
        tokio::spawn(async move {
            index.wait_ready().await;
            tracing::info!("watches synced; ready");
        });
    }
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    let (server_stop_tx, mut server_stop) = watch::channel(false);
    let server = tokio::spawn(
        axum::serve(
            listener,
            router(App {
                metrics: metrics.clone(),
                index,
            }),
        )
        .with_graceful_shutdown(async move {
            let _ = server_stop.changed().await;
        })
        .into_future(),
    );
    tracing::info!(listen = %args.metrics_listen, identity = %identity, "serving /metrics, /healthz, /readyz");

    let (leading_tx, leading) = watch::channel(false);
    let (release_tx, release) = watch::channel(false);
    let elector = if args.leader.leader_elect {
        let elector = Elector::new(
            client.clone(),
            &args.leader.lease_namespace,
            &args.leader.lease_name,
            &identity,
            args.leader.lease_duration,
            args.leader.lease_renew_period,
        );
        Some(tokio::spawn(elector.run(leading_tx, release)))
    } else {
        tracing::info!("leader election off: this replica reconciles alone");
        let _ = leading_tx.send(true);
        // Keep the sender alive so the loop does not see a closed channel.
        Some(tokio::spawn(async move {
            let mut release = release;
            let _ = release.changed().await;
            drop(leading_tx);
        }))
    };
    let (stop_tx, stop) = watch::channel(false);
    let reconciler = tokio::spawn(reconcile::run(ctx, leading, stop));

    shutdown_signal().await;
    tracing::info!("shutting down: stop reconciling, release the lease");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), reconciler).await;
    let _ = release_tx.send(true);
    if let Some(e) = elector {
        let _ = tokio::time::timeout(Duration::from_secs(6), e).await;
    }
    let _ = server_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    tracing::info!("bye");
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
