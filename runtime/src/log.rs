//! `--log-format` and `--log`: structured logs on stderr, the same two flags in every binary.

use clap::{Args, ValueEnum};

use crate::Error;

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: plain text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `pinip_binder=debug,info` (tracing's EnvFilter syntax).
    #[arg(long, env = "PINIP_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogArgs {
    /// Installs the process's logger; call once, first thing.
    pub fn init(&self) -> Result<(), Error> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|source| {
            Error::LogFilter {
                filter: self.log.clone(),
                source,
            }
        })?;
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Plain => fmt.try_init(),
            LogFormat::Json => fmt.json().try_init(),
        }
        .map_err(|_| Error::LogInstalled)
    }
}
