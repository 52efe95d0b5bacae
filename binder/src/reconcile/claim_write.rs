//! One write per claim change: the IPClaim CRD has no status subresource, so a bind (spec.pod,
//! spec.node, the workload annotation and status.phase) or a release (spec cleared, phase
//! Released) is one merge patch, guarded by the resourceVersion the decision read, and a claim
//! is never Bound without its pod even for an instant.
//!
//! A cluster may still serve the CRD of an older release, with the status subresource: there
//! kube-apiserver drops `status` from a write of the main resource without an error. The
//! returned object shows it (a status field is not the one written); the binder then writes
//! the status through `/status` and keeps doing so (two writes: spec first, then status). When
//! `/status` answers 404 for a claim that exists, the CRD has been upgraded since, and the
//! binder goes back to one write.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::gauge::Gauge;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use pinip_api::{IPClaim, IPClaimStatus};
use serde_json::{Value, json};

use crate::error::Error;

/// How claims' status is written; shared by the binder's workers.
#[derive(Debug)]
pub struct StatusWrites {
    /// The CRD has the status subresource (an older release's): status through `/status`.
    split: AtomicBool,
    /// Exported as `pinip_binder_claim_status_split` (1 while in two writes).
    gauge: Gauge,
}

impl StatusWrites {
    /// One write per change until an older CRD shows; `gauge` follows the mode.
    pub fn new(gauge: Gauge) -> Self {
        gauge.set(0);
        StatusWrites {
            split: AtomicBool::new(false),
            gauge,
        }
    }

    fn split(&self) -> bool {
        self.split.load(Ordering::Relaxed)
    }

    fn gauge_split(&self, on: bool) {
        self.gauge.set(i64::from(on));
    }
}

/// A change to one claim: `changes` is a merge patch of its metadata and spec (an empty
/// object when only the status changes), `status` its new status fields.
pub struct Change {
    pub changes: Value,
    pub status: Option<IPClaimStatus>,
}

/// Whether `claim` shows every status field `want` sets (a dropped status write leaves the
/// old ones: with a release of a Released claim only `releasedAt` tells).
fn shows(claim: &IPClaim, want: &IPClaimStatus) -> bool {
    let have = claim.status.clone().unwrap_or_default();
    (want.phase.is_none() || have.phase == want.phase)
        && (want.released_at.is_none() || have.released_at == want.released_at)
        && (want.reserved_at.is_none() || have.reserved_at == want.reserved_at)
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
        if let Some(s) = &status {
            patch["status"] = json!(s);
        }
        let updated = patch_main(api, claim, &patch).await?;
        let Some(s) = status else {
            return Ok(stale);
        };
        if shows(&updated, &s) {
            return Ok(stale);
        }
        // The status was dropped: this CRD has the status subresource.
        if !mode.split.swap(true, Ordering::Relaxed) {
            mode.gauge_split(true);
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
    let Some(s) = status else {
        return Ok(stale);
    };
    match patch_status(api, claim, &rv, &s).await {
        Ok(()) => Ok(stale),
        // kube-apiserver answers a /status it does not serve with the same 404 as a claim
        // that is gone: the claim exists, so the subresource is gone (the CRD was upgraded)
        // and the status goes with the main resource from now on.
        Err(Error::Claim {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 404 && claim_exists(api, claim).await? => {
            mode.split.store(false, Ordering::Relaxed);
            mode.gauge_split(false);
            tracing::info!(
                claim,
                "the IPClaim CRD has no status subresource any more: one write per bind from now on"
            );
            let patch = json!({"metadata": {"resourceVersion": rv}, "status": s});
            let updated = patch_main(api, claim, &patch).await?;
            if !shows(&updated, &s) {
                return Err(Error::StatusDropped {
                    claim: claim.to_string(),
                });
            }
            Ok(stale)
        }
        Err(e) => Err(e),
    }
}

async fn claim_exists(api: &Api<IPClaim>, claim: &str) -> Result<bool, Error> {
    Ok(api
        .get_opt(claim)
        .await
        .map_err(Error::claim(claim))?
        .is_some())
}

async fn patch_main(api: &Api<IPClaim>, claim: &str, patch: &Value) -> Result<IPClaim, Error> {
    api.patch(claim, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::claim(claim))
}

async fn patch_status(
    api: &Api<IPClaim>,
    claim: &str,
    rv: &str,
    s: &IPClaimStatus,
) -> Result<(), Error> {
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": s});
    api.patch_status(claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::claim(claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use pinip_api::ClaimPhase;

    fn claim(status: serde_json::Value) -> IPClaim {
        serde_json::from_value(json!({
            "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": "10-0-0-5"},
            "spec": {"pool": "p", "address": "10.0.0.5/24",
                     "owner": {"kind": "Pod", "namespace": "n", "name": "a"}},
            "status": status,
        }))
        .unwrap()
    }

    fn at(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    #[test]
    fn a_dropped_release_of_a_released_claim_is_noticed_by_its_time() {
        let old = claim(json!({"phase": "Released", "releasedAt": "2026-12-07T10:00:00Z"}));
        let want = IPClaimStatus {
            phase: Some(ClaimPhase::Released),
            released_at: at("2026-12-07T11:00:00Z"),
            ..Default::default()
        };
        assert!(!shows(&old, &want), "same phase, older releasedAt: dropped");
        let new = claim(json!({"phase": "Released", "releasedAt": "2026-12-07T11:00:00Z"}));
        assert!(shows(&new, &want));
    }

    #[test]
    fn a_bind_is_shown_by_its_phase() {
        let want = IPClaimStatus {
            phase: Some(ClaimPhase::Bound),
            ..Default::default()
        };
        assert!(!shows(&claim(json!({})), &want));
        assert!(shows(&claim(json!({"phase": "Bound"})), &want));
    }
}
