//! The stop signal: SIGTERM (kubelet) or SIGINT (a terminal).

use tokio::signal::unix::{SignalKind, signal as unix_signal};

use crate::Error;

/// A future that completes on the first SIGTERM or SIGINT. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives between the two is
/// not lost.
pub fn signal() -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let mut term = unix_signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = unix_signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
