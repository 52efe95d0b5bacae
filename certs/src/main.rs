//! pinip-certs: flags, logging, and `ensure` once or on an interval.

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use pinip_api::duration::parse_duration;
use pinip_certs::{Settings, ensure, service_dns_names};
use pinip_runtime::{ClientArgs, LogArgs, shutdown};

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
    /// Lifetime of a new CA (5 years).
    #[arg(long, global = true, default_value = "43800h", value_parser = parse_duration)]
    ca_validity: Duration,
    /// Lifetime of a new serving certificate (1 year).
    #[arg(long, global = true, default_value = "8760h", value_parser = parse_duration)]
    cert_validity: Duration,
    /// Replace a certificate once this fraction of its lifetime has passed.
    #[arg(long, global = true, default_value_t = 2.0 / 3.0)]
    renew_at: f64,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring the Secret and caBundles up to date once, then exit (init container, Job).
    Ensure,
    /// Check every --interval and rotate when due, until SIGTERM (sidecar).
    Run {
        /// How often to check.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        interval: Duration,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let client = args.client.client().await?;
    let mut dns_names = service_dns_names(&args.service, &args.namespace);
    dns_names.extend(args.extra_dns.iter().cloned());
    let settings = Settings {
        namespace: args.namespace.clone(),
        secret: args.secret.clone(),
        dns_names,
        mutating: args.mutating.clone(),
        validating: args.validating.clone(),
        ca_validity: args.ca_validity,
        cert_validity: args.cert_validity,
        renew_at: args.renew_at,
    };
    match args.cmd {
        Cmd::Ensure => {
            let action = ensure(&client, &settings).await?;
            tracing::info!(?action, secret = %settings.secret, "certificates up to date");
        }
        Cmd::Run { interval } => {
            let stop = shutdown::signal()?;
            tokio::pin!(stop);
            loop {
                match ensure(&client, &settings).await {
                    Ok(action) => tracing::info!(?action, "certificates checked"),
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate check failed; retrying next interval")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = &mut stop => break,
                }
            }
        }
    }
    Ok(())
}
