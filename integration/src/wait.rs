//! Polling until the cluster reaches a state.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Calls `f` every 200 ms until it returns `Some`, failing after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until pod `name` is Running.
pub async fn pod_running(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
) -> Result<k8s_openapi::api::core::v1::Pod> {
    wait_for(
        &format!("pod {name} Running"),
        Duration::from_secs(60),
        || async {
            let p = api.get_opt(name).await?;
            Ok(p.filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        },
    )
    .await
}

/// Waits until exactly `n` pods matching `selector` are Running and not being deleted.
pub async fn pods_running(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    selector: &str,
    n: usize,
) -> Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    wait_for(
        &format!("{n} pods {selector} Running"),
        Duration::from_secs(90),
        || async {
            let up: Vec<_> = api
                .list(&kube::api::ListParams::default().labels(selector))
                .await?
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .collect();
            Ok((up.len() == n).then_some(up))
        },
    )
    .await
}

/// Waits for an event (core/v1) in namespace `ns` that `matches`, returning its message.
pub async fn event_message(
    client: &kube::Client,
    ns: &str,
    what: &str,
    limit: Duration,
    matches: impl Fn(&k8s_openapi::api::core::v1::Event) -> bool,
) -> Result<String> {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(client.clone(), ns);
    wait_for(what, limit, || async {
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| matches(e))
            .and_then(|e| e.message))
    })
    .await
}

/// Whether event `e` has reason `reason` and a message containing `part`.
pub fn reason_and_message(e: &k8s_openapi::api::core::v1::Event, reason: &str, part: &str) -> bool {
    e.reason.as_deref() == Some(reason) && e.message.as_deref().is_some_and(|m| m.contains(part))
}
