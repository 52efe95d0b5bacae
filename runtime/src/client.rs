//! `--kubeconfig`: how every binary reaches the API server, and the one TLS provider (ring).

use std::path::PathBuf;

use clap::Args;
use kube::Client;

use crate::Error;

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// kubeconfig to reach the API server; default: in-cluster config or $KUBECONFIG.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
}

impl ClientArgs {
    /// A client for the API server. Installs ring as rustls' process-wide provider first (the
    /// workspace's only one), so every TLS stack of the process agrees.
    pub async fn client(&self) -> Result<Client, Error> {
        install_crypto();
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    Error::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            None => kube::Config::infer().await?,
        };
        Ok(Client::try_from(config)?)
    }
}

/// Makes ring rustls' default provider; harmless when it already is.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
