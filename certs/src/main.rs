//! pinip-certs: flags, logging, and `ensure` once or on an interval.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pinip_certs::{Settings, ensure, service_dns_names};

/// Bootstraps and rotates the pinip webhook's certificates: one CA and one serving certificate
/// kept in one Secret shared by every webhook replica, with the CA injected into the webhook
/// configurations' caBundle by server-side apply. Idempotent.
#[derive(Parser, Debug)]
#[command(name = "pinip-certs", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Namespace of the Secret and the webhook Service.
    #[arg(
        long,
        global = true,
        env = "POD_NAMESPACE",
        default_value = "pinip-system"
    )]
    namespace: String,
    /// The Secret holding tls.crt, tls.key, ca.crt, ca.key and ca-bundle.crt.
    #[arg(long, global = true, default_value = "pinip-webhook-tls")]
    secret: String,
    /// The webhook Service; the certificate covers its cluster DNS names.
    #[arg(long, global = true, default_value = "pinip-webhook")]
    service: String,
    /// Further DNS names for the serving certificate (repeat the flag).
    #[arg(long = "dns-name", global = true)]
    extra_dns: Vec<String>,
    /// MutatingWebhookConfigurations whose caBundle to set (repeat the flag).
    #[arg(long = "mutating-webhook", global = true, default_values_t = ["pinip".to_string()])]
    mutating: Vec<String>,
    /// ValidatingWebhookConfigurations whose caBundle to set (repeat the flag).
    #[arg(long = "validating-webhook", global = true, default_values_t = ["pinip".to_string()])]
    validating: Vec<String>,
    /// Lifetime of a new CA, in hours.
    #[arg(long, global = true, default_value_t = 5 * 365 * 24)]
    ca_validity_hours: u64,
    /// Lifetime of a new serving certificate, in hours.
    #[arg(long, global = true, default_value_t = 365 * 24)]
    cert_validity_hours: u64,
    /// Replace a certificate once this fraction of its lifetime has passed.
    #[arg(long, global = true, default_value_t = 2.0 / 3.0)]
    renew_at: f64,
    /// kubeconfig; default: in-cluster config or $KUBECONFIG.
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log as JSON.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring the Secret and caBundles up to date once, then exit (init container, Job).
    Ensure,
    /// Check every --interval-seconds and rotate when due, until SIGTERM (sidecar).
    Run {
        #[arg(long, default_value_t = 3600)]
        interval_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let config = match &args.kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let mut dns_names = service_dns_names(&args.service, &args.namespace);
    dns_names.extend(args.extra_dns.iter().cloned());
    let settings = Settings {
        namespace: args.namespace.clone(),
        secret: args.secret.clone(),
        dns_names,
        mutating: args.mutating.clone(),
        validating: args.validating.clone(),
        ca_validity: Duration::from_secs(args.ca_validity_hours * 3600),
        cert_validity: Duration::from_secs(args.cert_validity_hours * 3600),
        renew_at: args.renew_at,
    };
    match args.cmd {
        Cmd::Ensure => {
            let action = ensure(&client, &settings).await?;
            tracing::info!(?action, secret = %settings.secret, "certificates up to date");
        }
        Cmd::Run { interval_seconds } => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                match ensure(&client, &settings).await {
                    Ok(action) => tracing::info!(?action, "certificates checked"),
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate check failed; retrying next interval")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(interval_seconds)) => {}
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
    }
    Ok(())
}
