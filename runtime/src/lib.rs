//! What every pinip binary does the same way, so that a flag, a log line or a probe means the
//! same in each: log flags and set-up (`log`), reaching the API server (`client`), the admin
//! port with `/healthz`, `/readyz` and `/metrics` (`admin`), and waiting for a stop signal
//! (`shutdown`). Durations on command lines use `pinip_api::duration::parse_duration`.

pub mod admin;
pub mod client;
pub mod log;
pub mod shutdown;

pub use admin::{Admin, AdminArgs, AdminServer};
pub use client::ClientArgs;
pub use log::LogArgs;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--log {filter:?}: {source}")]
    LogFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a logger is already installed")]
    LogInstalled,
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no kubeconfig: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("API client: {0}")]
    Client(#[from] kube::Error),
    #[error("binding --metrics-listen {listen}: {source}")]
    Bind {
        listen: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin server: {0}")]
    Serve(std::io::Error),
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
}
