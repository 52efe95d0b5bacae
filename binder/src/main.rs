//! pinip-binder: flags, logging, watches, leader election, reconcile loop, HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use pinip_binder::args::Args;
use pinip_binder::bind::Policy;
use pinip_binder::events::Events;
use pinip_binder::index::Index;
use pinip_binder::leader::Elector;
use pinip_binder::metrics::Metrics;
use pinip_binder::reconcile::StatusWrites;
use pinip_binder::reconcile::{self, Context};
use pinip_binder::server::App;
use pinip_binder::workload::Lookups;
use pinip_runtime::{AdminServer, shutdown};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init()?;
    args.leader
        .validate()
        .map_err(anyhow::Error::msg)
        .context("lease flags")?;
    let stop_signal = shutdown::signal()?;
    let client = args.client.client().await?;
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
            unscheduled_bind_delay: args.unscheduled_bind_delay,
        },
        concurrency: args.concurrency,
        resync: args.resync_interval,
        debounce: args.debounce,
        status_writes: StatusWrites::new(metrics.claim_status_split.clone()),
    });

    {
        let index = index.clone();
        tokio::spawn(async move {
            index.wait_ready().await;
            tracing::info!("watches synced; ready");
        });
    }
    let admin = AdminServer::start(
        args.admin.metrics_listen,
        App {
            metrics: metrics.clone(),
            index,
        },
    )
    .await?;
    tracing::info!(listen = %args.admin.metrics_listen, identity = %identity, "serving /metrics, /healthz, /readyz");

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

    stop_signal.await;
    tracing::info!("shutting down: stop reconciling, release the lease");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), reconciler).await;
    let _ = release_tx.send(true);
    if let Some(e) = elector {
        let _ = tokio::time::timeout(Duration::from_secs(6), e).await;
    }
    admin.stop(Duration::from_secs(2)).await?;
    tracing::info!("bye");
    Ok(())
}
