//! One write per claim change: the IPClaim CRD has no status subresource, so a bind (spec.pod,
//! spec.node, the workload annotation and status.phase) or a release (spec cleared, phase
//! Released) is one merge patch, guarded by the resourceVersion the decision read, and a claim
//! is never Bound without its pod even for an instant.
//!
//! A cluster may still serve the CRD of an older release, with the status subresource: there
//! kube-apiserver drops `status` from a write of the main resource without an error. The
//! returned object shows it (its phase is not the one written); the binder then writes the
//! status through `/status` and keeps doing so (two writes: spec first, then status). When
//! `/status` answers 404 for a claim it just wrote, the CRD has been upgraded since, and the
//! binder goes back to one write.

use std::sync::atomic::{AtomicBool, Ordering};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use pinip_api::{ClaimPhase, IPClaim};
use serde_json::{Value, json};

use crate::error::Error;

/// How claims' status is written; shared by the binder's workers.
#[derive(Debug, Default)]
pub struct StatusWrites {
    /// The CRD has the status subresource (an older release's): status through `/status`.
    split: AtomicBool,
}

impl StatusWrites {
    /// Whether status goes through `/status` (a CRD from an older release).
    pub fn split(&self) -> bool {
        self.split.load(Ordering::Relaxed)
    }
}

fn claim_err(claim: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |source| Error::Claim {
        claim: claim.to_string(),
        source,
    }
}

/// A change to one claim: `changes` is a merge patch of its metadata and spec (an empty
/// object when only the status changes), `status` its new status with phase `phase`.
pub struct Change {
    pub changes: Value,
    pub status: Option<(ClaimPhase, Value)>,
}

/// Writes `change` to claim `claim` at version `rv`. Returns the versions of the claim now out
/// of date: `rv`, and any this write went through on the way to the current one.
pub async fn write(
    api: &Api<IPClaim>,
    mode: &StatusWrites,
    claim: &str,
    rv: &str,
    change: Change,
) -> Result<Vec<String>, Error> {
    let Change { changes, status } = change;
    let mut stale = vec![rv.to_string()];
    let has_changes = changes.as_object().is_some_and(|o| !o.is_empty());
    if !mode.split() {
        let mut patch = changes;
        patch["metadata"]["resourceVersion"] = json!(rv);
        if let Some((_, s)) = &status {
            patch["status"] = s.clone();
        }
        let updated = patch_main(api, claim, &patch).await?;
        let Some((phase, s)) = status else {
            return Ok(stale);
        };
        if updated.phase() == phase {
            return Ok(stale);
        }
        // The status was dropped: this CRD has the status subresource.
        if !mode.split.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                claim,
                "the IPClaim CRD still has a status subresource (an older release's): status is written separately, two writes per bind; apply this release's CRD"
            );
        }
        let rv = updated.resource_version().unwrap_or_default();
        stale.push(rv.clone());
        patch_status(api, claim, &rv, &s).await?;
        return Ok(stale);
    }
    // An older CRD: spec first, then status.
    let mut rv = rv.to_string();
    if has_changes {
        let mut patch = changes;
        patch["metadata"]["resourceVersion"] = json!(rv);
        let updated = patch_main(api, claim, &patch).await?;
        rv = updated.resource_version().unwrap_or_default();
        if status.is_some() {
            // Superseded by the status write below; the last write's version is current.
            stale.push(rv.clone());
        }
    }
    let Some((phase, s)) = status else {
        return Ok(stale);
    };
    match patch_status(api, claim, &rv, &s).await {
        Ok(()) => Ok(stale),
        // The claim was just read or written at `rv`: a 404 from /status means the
        // subresource is gone (the CRD was upgraded), not the claim.
        Err(Error::Claim {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 404 => {
            mode.split.store(false, Ordering::Relaxed);
            tracing::info!(
                claim,
                "the IPClaim CRD has no status subresource any more: one write per bind from now on"
            );
            let patch = json!({"metadata": {"resourceVersion": rv}, "status": s});
            let updated = patch_main(api, claim, &patch).await?;
            if updated.phase() != phase {
                return Err(Error::StatusDropped {
                    claim: claim.to_string(),
                });
            }
            Ok(stale)
        }
        Err(e) => Err(e),
    }
}

async fn patch_main(api: &Api<IPClaim>, claim: &str, patch: &Value) -> Result<IPClaim, Error> {
    api.patch(claim, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(claim_err(claim))
}

async fn patch_status(api: &Api<IPClaim>, claim: &str, rv: &str, s: &Value) -> Result<(), Error> {
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": s});
    api.patch_status(claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(claim_err(claim))
}
