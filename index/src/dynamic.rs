//! Reading an object of a kind known only at run time (a pod's controller, a third-party
//! workload): its API found through discovery.

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;

/// The namespaced API of `kind` in `api_version` (`apps/v1`, `v1`), as discovery finds it.
pub async fn namespaced_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: &str,
) -> Result<Api<DynamicObject>, kube::Error> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    Ok(Api::namespaced_with(client.clone(), namespace, &ar))
}
