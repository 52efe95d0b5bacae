//! Running a watch into a reflector store.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Drives a watch stream until the process exits, logging errors (the stream retries with
/// backoff) and poking `changed` on every event.
pub async fn drain<S, T>(what: &'static str, changed: Option<Arc<Notify>>, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => {
                if let Some(c) = &changed {
                    c.notify_one();
                }
            }
            Err(e) => tracing::warn!(watch = what, error = %e, "watch error; retrying"),
        }
    }
}
