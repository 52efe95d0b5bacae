//! What the kubelet does for a Secret volume, so the webhook's certificate reload is tested
//! the way it happens in a pod: the Secret's keys are written into a new timestamped
//! directory, the `..data` symlink is swapped to it atomically, and each key is a symlink
//! through `..data`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// Projects `keys` of Secret `ns/name` into `dir` now and every `every` when it changes.
pub fn project(
    client: Client,
    ns: &str,
    name: &str,
    keys: &'static [&'static str],
    dir: PathBuf,
    every: Duration,
) -> JoinHandle<()> {
    let api: Api<Secret> = Api::namespaced(client, ns);
    let name = name.to_string();
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            if let Ok(Some(s)) = api.get_opt(&name).await
                && s.metadata.resource_version != last
            {
                match write(&dir, &s, keys) {
                    Ok(()) => last = s.metadata.resource_version.clone(),
                    Err(e) => tracing::warn!(error = %e, "projecting secret"),
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn write(dir: &Path, s: &Secret, keys: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let data_dir = dir.join(&stamp);
    std::fs::create_dir(&data_dir)?;
    let data = s.data.clone().unwrap_or_default();
    for k in keys {
        if let Some(v) = data.get(*k) {
            std::fs::write(data_dir.join(k), &v.0)?;
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data"))?;
    for k in keys {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(k), &link)?;
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}
