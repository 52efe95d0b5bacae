//! Carrying out one decision: the release check (or, for a first bind, the pod check) against
//! the API server, then the write, guarded by the resourceVersion the decision read; metrics
//! and pod events on the way.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use pinip_api::{ClaimPhase, IPClaim, IPClaimStatus};
use pinip_index::{confirm_free, confirm_holder};
use serde_json::json;

use crate::bind::{Action, Bind, PodKey, Reason, Why};
use crate::error::Error;
use crate::metrics::WriteLabels;
use crate::workload::WORKLOAD_ANNOTATION;

use super::Context;
use super::claim_write::{self, Change};

/// What happened to one action.
pub(super) enum Done {
    /// Written; until the claim's watch shows a version other than `stale` (the one the
    /// decision read and any this binder wrote on the way), the claim is not decided again.
    Written { claim: String, stale: Vec<String> },
    /// Nothing written (e.g. the claim is gone).
    Skipped,
    /// Not released: the API server shows the claim still held (our watch lags, or a pod is
    /// being admitted on it). Decided again after a backoff even if no event comes.
    Held {
        claim: String,
        by: String,
        why: &'static str,
    },
}

/// Carries out one decision.
pub(super) async fn execute(ctx: &Context, action: Action) -> Result<Done, Error> {
    let api: Api<IPClaim> = Api::all(ctx.client.clone());
    if action.why().is_some() {
        // Whatever the reason, no claim a live pod uses is released: ask the API server (our
        // watches may lag, e.g. a standby that just took over), right before the write. The
        // write itself is guarded by the version decided on, so a handover in between fails
        // it.
        let Some(claim) = ctx.index.ledger.claim(action.claim()) else {
            return Ok(Done::Skipped);
        };
        let free = confirm_free(
            &ctx.client,
            claim.as_ref(),
            Timestamp::now(),
            ctx.policy.reclaim_grace,
            None,
        )
        .await
        .map_err(|source| Error::Pod {
            pod: format!("holder of IPClaim {}", action.claim()),
            source,
        })?;
        if let Err(held) = free {
            ctx.metrics.kept_held.inc();
            return Ok(Done::Held {
                claim: action.claim().to_string(),
                by: held.to_string(),
                why: action.why().map_or("", Why::metric_label),
            });
        }
    }
    if let Action::Bind(b) = &action
        && b.first
        && !pod_confirmed(ctx, b).await?
    {
        ctx.metrics.binds_unconfirmed.inc();
        tracing::debug!(claim = %b.claim, pod = %b.pod, "first bind skipped: the API server does not show that pod with the claim");
        return Ok(Done::Skipped);
    }
    let label = |action: &'static str, reason: &'static str| WriteLabels { action, reason };
    match &action {
        Action::Bind(b) => {
            let stale = bind_claim(ctx, &api, b).await?;
            ctx.metrics
                .writes
                .get_or_create(&label("bind", "pod"))
                .inc();
            tracing::info!(claim = %b.claim, address = %b.address, pod = %b.pod, uid = %b.pod.uid, node = ?b.node, phase = ?b.phase, "bound");
            if let Some(reason) = b.event {
                let note = match &b.node {
                    Some(node) => format!(
                        "{} (IPClaim {}) bound to this pod on node {node}",
                        b.address, b.claim
                    ),
                    None => format!(
                        "{} (IPClaim {}) reserved for this pod; it is not scheduled yet",
                        b.address, b.claim
                    ),
                };
                event(ctx, &b.pod, reason, note).await;
            }
            Ok(Done::Written {
                claim: b.claim.clone(),
                stale,
            })
        }
        Action::Release {
            claim,
            resource_version,
            address,
            clear_spec,
            why,
        } => {
            let changes = if *clear_spec {
                json!({"spec": {"pod": null, "node": null}})
            } else {
                json!({})
            };
            let status = IPClaimStatus {
                phase: Some(ClaimPhase::Released),
                // Whole seconds, as the API server writes a time back.
                released_at: Some(Time(
                    Timestamp::from_second(Timestamp::now().as_second())
                        .unwrap_or_else(|_| Timestamp::now()),
                )),
                ..Default::default()
            };
            let change = Change {
                changes,
                status: Some(status),
            };
            let stale =
                claim_write::write(&api, &ctx.status_writes, claim, resource_version, change)
                    .await?;
            ctx.metrics
                .writes
                .get_or_create(&label("release", why.metric_label()))
                .inc();
            if *why == Why::NeverAppeared {
                ctx.metrics.reclaimed.inc();
            }
            tracing::info!(claim = %claim, address = %address, reason = %why, "released; kept for its owner");
            if let Why::PodGone(pod) = why {
                let note = format!(
                    "{address} (IPClaim {claim}) released: the pod is gone; the address stays reserved for its owner"
                );
                event(ctx, pod, Reason::IPReleased, note).await;
            }
            Ok(Done::Written {
                claim: claim.clone(),
                stale,
            })
        }
        Action::Delete {
            claim,
            uid,
            resource_version,
            address,
            why,
        } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()).filter(|u| !u.is_empty()),
                    resource_version: Some(resource_version.clone()),
                }),
                ..Default::default()
            };
            match api.delete(claim, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Done::Skipped),
                Err(e) => return Err(Error::claim(claim)(e)),
            }
            ctx.metrics
                .writes
                .get_or_create(&label("delete", why.metric_label()))
                .inc();
            if *why == Why::NeverAppeared {
                ctx.metrics.reclaimed.inc();
            }
            tracing::info!(claim = %claim, address = %address, reason = %why, "released; claim deleted");
            if let Why::PodGone(pod) = why {
                let note = format!("{address} (IPClaim {claim}) released: the pod is gone");
                event(ctx, pod, Reason::IPReleased, note).await;
            }
            Ok(Done::Written {
                claim: claim.clone(),
                stale: vec![resource_version.clone()],
            })
        }
    }
}

/// Whether the API server has `b`'s pod right now (see [`confirm_holder`]).
async fn pod_confirmed(ctx: &Context, b: &Bind) -> Result<bool, Error> {
    let p = &b.pod;
    confirm_holder(&ctx.client, &p.namespace, &p.name, &p.uid, &b.claim)
        .await
        .map_err(|source| Error::Pod {
            pod: p.to_string(),
            source,
        })
}

/// Spec (pod, node, workload) and status in one write where the CRD allows it (see
/// `claim_write`): a claim is never Bound without its pod.
/// Returns the versions of the claim that are now out of date.
async fn bind_claim(ctx: &Context, api: &Api<IPClaim>, b: &Bind) -> Result<Vec<String>, Error> {
    let mut changes = json!({});
    if b.write_spec {
        changes = json!({"spec": {"pod": {"name": b.pod.name, "uid": b.pod.uid}, "node": b.node}});
        if let Some(w) = &b.workload {
            changes["metadata"] = json!({"annotations": {WORKLOAD_ANNOTATION: w.render()}});
        }
    }
    let status = b.write_status.then(|| IPClaimStatus {
        phase: Some(b.phase),
        ..Default::default()
    });
    let change = Change { changes, status };
    claim_write::write(
        api,
        &ctx.status_writes,
        &b.claim,
        &b.resource_version,
        change,
    )
    .await
}

async fn event(ctx: &Context, pod: &PodKey, reason: Reason, note: String) {
    if let Err(e) = ctx.events.publish(pod, reason, note).await {
        ctx.metrics.error(e.metric_label());
        tracing::warn!(error = %e, "recording event failed");
    }
}
