//! The reconcile loop: while this replica leads, take a snapshot of the watch index, let
//! `bind::plan` decide, carry the decisions out (bounded parallel writes, each guarded by the
//! claim's resourceVersion so a stale view can never overwrite a newer decision), record
//! events and metrics, and write pool status. Runs again on every watch event (debounced),
//! when a grace period ends, and at least every resync interval.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use pinip_api::annotations::Retain;
use pinip_api::{ClaimInfo, ClaimPhase, IPClaim, IPPool, IPPoolStatus};
use pinip_index::confirm_free;
use serde_json::json;
use tokio::sync::watch;

use crate::bind::{self, Action, Bind, Conflict, PodInfo, PodKey, Policy, Reason, Why, World};
use crate::error::Error;
use crate::events::Events;
use crate::index::Index;
use crate::metrics::{Metrics, ReasonLabels, ResultLabels, ScopeLabels, WriteLabels};
use crate::pool_status;
use crate::workload::{Lookups, WORKLOAD_ANNOTATION};

/// How long a claim this binder wrote is left alone while the watch still shows the version
/// the write was based on.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(10);

/// When a release the API server refused (the claim still held) is first decided again; each
/// refusal in a row doubles it, up to the resync interval.
const HELD_RETRY: Duration = Duration::from_secs(5);

/// What the reconcile loop shares.
pub struct Context {
    pub client: Client,
    pub index: Index,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub lookups: Lookups,
    pub policy: Policy,
    pub concurrency: usize,
    pub resync: Duration,
    pub debounce: Duration,
}

/// Reconciles while `leading` is true, until `stop` changes.
pub async fn run(
    ctx: Arc<Context>,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.changed() => return,
            _ = discard_changes(&ctx.index) => {}
        }
        tokio::select! {
            _ = ctx.index.wait_ready() => {}
            _ = stop.changed() => return,
        }
        ctx.metrics.leader.set(1);
        tracing::info!("leading: reconciling claims and pools");
        let mut r = Reconciler::new(ctx.clone());
        tokio::select! {
            _ = r.lead() => {}
            _ = leading.wait_for(|l| !*l) => {
                tracing::info!("no longer leading: stopped reconciling");
            }
            _ = stop.changed() => {
                ctx.metrics.leader.set(0);
                return;
            }
        }
        ctx.metrics.leader.set(0);
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A standby keeps its watches warm but decides nothing: what they report is dropped (a term
/// starts with a full pass). Never returns.
async fn discard_changes(index: &Index) {
    loop {
        index.changed.notified().await;
        index.changes.take();
    }
}

/// One leadership term's memory: writes not yet seen by the watch, conflicts already
/// reported, unreadable objects already logged, pool statuses just written.
pub struct Reconciler {
    ctx: Arc<Context>,
    in_flight: InFlight,
    reported: HashSet<Conflict>,
    logged: HashSet<(String, String)>,
    pools_written: HashMap<String, (String, IPPoolStatus)>,
    failures: u32,
    held: HeldClaims,
}

/// Claims whose release the API server refused, and when each is decided again.
#[derive(Default)]
struct HeldClaims(HashMap<String, (u32, Option<Instant>)>);

impl HeldClaims {
    /// One more refusal in a row: the next retry is twice as far (logged the first time).
    fn refused(&mut self, claim: String, by: &str, why: &str, cap: Duration) {
        let (n, due) = self.0.entry(claim.clone()).or_insert((0, None));
        *n += 1;
        let wait = HELD_RETRY.saturating_mul(1 << (*n - 1).min(10)).min(cap);
        *due = Some(Instant::now() + wait);
        if *n == 1 {
            tracing::info!(claim = %claim, held_by = %by, reason = why, retry_in = ?wait, "claim still held; not releasing");
        } else {
            tracing::debug!(claim = %claim, held_by = %by, reason = why, refusals = *n, retry_in = ?wait, "claim still held; not releasing");
        }
    }

    fn remove(&mut self, claim: &str) {
        self.0.remove(claim);
    }

    /// The claims due by `now` (each handed out once per refusal).
    fn due(&mut self, now: Instant) -> Vec<String> {
        let mut v = Vec::new();
        for (name, (_, due)) in &mut self.0 {
            if due.is_some_and(|d| d <= now) {
                *due = None;
                v.push(name.clone());
            }
        }
        v
    }

    /// Forgets claims that were decided again and not refused (released, or no longer to
    /// be released).
    fn settle(&mut self) {
        self.0.retain(|_, (_, due)| due.is_some());
    }

    fn next(&self) -> Option<Instant> {
        self.0.values().filter_map(|(_, d)| *d).min()
    }
}

/// Claims this binder wrote whose watch has not caught up yet. A claim stays here while the
/// watch still shows one of its `stale` versions (the one the decision read, and any this
/// binder wrote on the way to its last write), at most [`IN_FLIGHT_TTL`].
#[derive(Default)]
struct InFlight(HashMap<String, (Vec<String>, Instant)>);

impl InFlight {
    fn record(&mut self, claim: String, stale: Vec<String>, now: Instant) {
        self.0.insert(claim, (stale, now));
    }

    /// Forgets claims the watch has caught up on (or that expired) and returns the rest.
    /// `current`: a claim's resourceVersion in the watch cache.
    fn still_pending(
        &mut self,
        current: impl Fn(&str) -> Option<String>,
        now: Instant,
    ) -> HashSet<String> {
        self.0.retain(|name, (stale, at)| {
            now.duration_since(*at) < IN_FLIGHT_TTL
                && current(name).is_some_and(|rv| stale.contains(&rv))
        });
        self.0.keys().cloned().collect()
    }

    /// When the oldest entry expires.
    fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.0
            .values()
            .map(|(_, at)| IN_FLIGHT_TTL.saturating_sub(now.duration_since(*at)))
            .min()
    }
}

/// What happened to one action.
enum Done {
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

impl Reconciler {
    pub fn new(ctx: Arc<Context>) -> Reconciler {
        Reconciler {
            ctx,
            in_flight: InFlight::default(),
            reported: HashSet::new(),
            logged: HashSet::new(),
            pools_written: HashMap::new(),
            failures: 0,
            held: HeldClaims::default(),
        }
    }

    /// Reconciles what the watches report changed, and everything when a workload changed,
    /// a watch relisted, a grace period or backoff ends (the earliest time any decision falls
    /// due), and at least every resync interval.
    async fn lead(&mut self) {
        // Events from before this term are covered by the first, full pass.
        self.ctx.index.changes.take();
        let mut next_full = Instant::now();
        loop {
            let now = Instant::now();
            let due = self.held.due(now);
            self.ctx
                .index
                .changes
                .claims(due.iter().map(String::as_str));
            let changed = self.ctx.index.changes.take();
            let full = changed.everything || Instant::now() >= next_full;
            let scope = (!full).then_some(changed.claims);
            let wake = self.pass(scope).await.min(self.ctx.resync);
            let due = Instant::now() + wake;
            next_full = if full { due } else { next_full.min(due) };
            tokio::select! {
                _ = self.ctx.index.changed.notified() => {
                    tokio::time::sleep(self.ctx.debounce).await;
                }
                _ = tokio::time::sleep_until(next_full.into()) => {}
                // A held claim's retry: a pass over that claim only.
                _ = sleep_until_some(self.held.next()) => {}
            }
        }
    }

    /// One reconcile: of the claims in `scope` (with the pods that name them and, for a
    /// member of an `app` set, the rest of its set), or of everything (`None`). Returns when
    /// the next decision among them falls due without any change.
    pub async fn pass(&mut self, scope: Option<HashSet<String>>) -> Duration {
        let started = Instant::now();
        let now =
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
        let ctx = self.ctx.clone();
        let ledger = &ctx.index.ledger;
        // The ledger has read every claim already (and logged the unreadable ones).
        let unreadable = ledger.unreadable();
        let (claims, raw_pods) = match &scope {
            None => (ledger.claims(), ctx.index.pods.state()),
            Some(names) => scoped(&ctx.index, names),
        };
        let mut seen = HashSet::new();
        let mut pods = Vec::new();
        for p in &raw_pods {
            match PodInfo::read(p, &ctx.index.workloads) {
                Ok(Some(info)) => pods.push(info),
                Ok(None) => {}
                Err(why) => {
                    let key = (
                        format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                        p.resource_version().unwrap_or_default(),
                    );
                    if !self.logged.contains(&key) {
                        tracing::warn!(pod = %key.0, reason = %why, "skipping pod with unreadable allocation");
                    }
                    seen.insert(key);
                }
            }
        }
        // Forget what was logged only after a pass that looked at every pod.
        if scope.is_none() {
            self.logged = seen;
        } else {
            self.logged.extend(seen);
        }

        let in_flight = self.in_flight.still_pending(
            |name| ledger.claim(name).map(|c| c.resource_version.clone()),
            Instant::now(),
        );
        let workloads = ctx.index.workloads(&ctx.lookups);
        let plan = bind::plan(
            &World {
                claims: &claims,
                unreadable: &unreadable,
                exists: &|name| ledger.claim(name).is_some(),
                pods: &pods,
                workloads: &workloads,
                in_flight: &in_flight,
                now,
            },
            &ctx.policy,
        );

        let mut errors = 0u32;
        // A reconcile of some claims says nothing about the conflicts of the others.
        let in_scope = scope.as_ref().map(|names| {
            names
                .iter()
                .cloned()
                .chain(claims.iter().map(|c| c.name.clone()))
                .collect::<HashSet<String>>()
        });
        self.report_conflicts(&plan.conflicts, in_scope.as_ref())
            .await;

        let looked_up = futures::stream::iter(plan.lookups.clone())
            .map(|r| look_up(ctx.clone(), r))
            .buffer_unordered(ctx.concurrency.max(1))
            .collect::<Vec<bool>>()
            .await;
        ctx.lookups.prune();

        let results: Vec<Result<Done, Error>> = futures::stream::iter(plan.actions)
            .map(|a| execute(&ctx, a))
            .buffer_unordered(ctx.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Done::Written { claim, stale }) => {
                    self.held.remove(&claim);
                    self.in_flight.record(claim, stale, Instant::now());
                }
                Ok(Done::Skipped) => {}
                Ok(Done::Held { claim, by, why }) => self.held.refused(claim, &by, why, ctx.resync),
                Err(e) => {
                    errors += 1;
                    ctx.metrics.error(e.metric_label());
                    if e.is_conflict() {
                        tracing::debug!(error = %e, "write lost a race; deciding again");
                    } else {
                        tracing::warn!(error = %e, "claim write failed; retrying");
                    }
                }
            }
        }
        self.held.settle();
        errors += self.pool_status(now).await;

        let result = if errors == 0 { "ok" } else { "error" };
        ctx.metrics
            .reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        let scope_label = if scope.is_some() { "changed" } else { "all" };
        ctx.metrics
            .reconcile_seconds
            .get_or_create(&ScopeLabels { scope: scope_label })
            .observe(started.elapsed().as_secs_f64());
        let mut wake = plan.wake_in.unwrap_or(ctx.resync);
        if let Some(expiry) = self.in_flight.next_expiry(Instant::now()) {
            wake = wake.min(expiry.max(Duration::from_millis(100)));
        }
        if looked_up.iter().any(|ok| *ok) {
            wake = wake.min(Duration::from_millis(100));
        }
        if errors > 0 {
            self.failures = self.failures.saturating_add(1);
            let backoff = Duration::from_millis(200) * 2u32.saturating_pow(self.failures.min(6));
            wake = wake.min(backoff);
        } else {
            self.failures = 0;
        }
        wake
    }

    /// Reports conflicts not reported yet; forgets reported ones that are gone among the
    /// claims decided (`in_scope`, `None`: all).
    async fn report_conflicts(
        &mut self,
        conflicts: &[Conflict],
        in_scope: Option<&HashSet<String>>,
    ) {
        let current: HashSet<&Conflict> = conflicts.iter().collect();
        self.reported
            .retain(|c| current.contains(c) || in_scope.is_some_and(|s| !s.contains(&c.claim)));
        for c in conflicts {
            if self.reported.contains(c) {
                continue;
            }
            self.ctx
                .metrics
                .conflicts
                .get_or_create(&ReasonLabels {
                    reason: c.reason.metric_label(),
                })
                .inc();
            tracing::warn!(pod = %c.pod, claim = %c.claim, address = %c.address, reason = c.reason.metric_label(), "address conflict: {c}");
            if let Err(e) = self
                .ctx
                .events
                .publish(&c.pod, Reason::IPConflict, c.to_string())
                .await
            {
                self.ctx.metrics.error(e.metric_label());
                tracing::warn!(error = %e, "recording conflict event failed");
            }
            self.reported.insert(c.clone());
        }
    }

    /// Writes every pool's status that differs from what it should be; returns the failures.
    async fn pool_status(&mut self, now: Timestamp) -> u32 {
        let ctx = self.ctx.clone();
        let ledger = &ctx.index.ledger;
        let pools = ledger.pools();
        let api: Api<IPPool> = Api::all(ctx.client.clone());
        let mut failures = 0;
        let by_name: HashMap<&str, &IPPool> = pools
            .iter()
            .map(|p| (p.name.as_str(), &*p.object))
            .collect();
        self.pools_written
            .retain(|name, _| by_name.contains_key(name.as_str()));
        for (name, desired) in pool_status::desired(&pools, |p| ledger.claimed(p), now) {
            let Some(pool) = by_name.get(name.as_str()) else {
                continue;
            };
            if pool_status::up_to_date(pool.status.as_ref(), &desired) {
                continue;
            }
            let rv = pool.resource_version().unwrap_or_default();
            if self
                .pools_written
                .get(&name)
                .is_some_and(|(at, wrote)| *at == rv && *wrote == desired)
            {
                continue;
            }
            let patch = json!({"status": desired});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    ctx.metrics.pool_status_writes.inc();
                    tracing::debug!(pool = %name, allocated = desired.allocated, total = desired.total, "pool status written");
                    self.pools_written.insert(name, (rv, desired));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    failures += 1;
                    let e = Error::PoolStatus { pool: name, source };
                    ctx.metrics.error(e.metric_label());
                    tracing::warn!(error = %e, "pool status write failed; retrying");
                }
            }
        }
        failures
    }
}

/// Looks a workload up; `true` when the answer is now known.
async fn look_up(ctx: Arc<Context>, r: crate::workload::WorkloadRef) -> bool {
    match ctx.lookups.look_up(&r).await {
        Ok(p) => {
            tracing::debug!(workload = %r, presence = ?p, "looked up workload");
            true
        }
        Err(source) => {
            let e = Error::Lookup {
                workload: r.to_string(),
                source,
            };
            ctx.metrics.error(e.metric_label());
            tracing::warn!(error = %e, "workload lookup failed; its claims are kept");
            false
        }
    }
}

fn claim_err(claim: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |source| Error::Claim {
        claim: claim.to_string(),
        source,
    }
}

/// The claims named in `names` that exist, with the rest of the set of each `app` member
/// among them, and the pods that name any of them (or a named claim that does not exist).
fn scoped(index: &Index, names: &HashSet<String>) -> (Vec<Arc<ClaimInfo>>, Vec<Arc<Pod>>) {
    let ledger = &index.ledger;
    let mut claims: HashMap<String, Arc<ClaimInfo>> = HashMap::new();
    // Each set once, however many of its members changed.
    let mut sets: HashSet<(&pinip_api::Owner, &str)> = HashSet::new();
    let named: Vec<Arc<ClaimInfo>> = names.iter().filter_map(|n| ledger.claim(n)).collect();
    for c in &named {
        if c.retain == Retain::App && sets.insert((&c.owner, c.pool.as_str())) {
            for m in ledger.members(&c.owner, &c.pool) {
                claims.insert(m.name.clone(), m);
            }
        }
        claims.insert(c.name.clone(), c.clone());
    }
    let mut pods: HashMap<ObjectRef<Pod>, Arc<Pod>> = HashMap::new();
    for n in names.iter().chain(claims.keys()) {
        for r in index.pods_by_claim.naming(n) {
            if let Some(p) = index.pods.get(&r) {
                pods.insert(r, p);
            }
        }
    }
    (claims.into_values().collect(), pods.into_values().collect())
}

/// Carries out one decision.
async fn execute(ctx: &Context, action: Action) -> Result<Done, Error> {
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
    let label = |action: &'static str, reason: &'static str| WriteLabels { action, reason };
    match &action {
        Action::Bind(b) => {
            let stale = bind_claim(&api, b).await?;
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
            let mut rv = resource_version.clone();
            let mut stale = vec![rv.clone()];
            if *clear_spec {
                let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"pod": null, "node": null}});
                let updated = api
                    .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(claim_err(claim))?;
                rv = updated.resource_version().unwrap_or_default();
                stale.push(rv.clone());
            }
            let released_at = k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = json!({"metadata": {"resourceVersion": rv},
                "status": {"phase": ClaimPhase::Released, "releasedAt": released_at}});
            api.patch_status(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(claim_err(claim))?;
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
                Err(e) => return Err(claim_err(claim)(e)),
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

/// Spec first (pod, node, workload), then status: a claim is never Bound without its pod.
/// Returns the versions of the claim that are now out of date.
async fn bind_claim(api: &Api<IPClaim>, b: &Bind) -> Result<Vec<String>, Error> {
    let mut rv = b.resource_version.clone();
    let mut stale = vec![rv.clone()];
    if b.write_spec {
        let mut patch = json!({
            "metadata": {"resourceVersion": rv},
            "spec": {"pod": {"name": b.pod.name, "uid": b.pod.uid}, "node": b.node},
        });
        if let Some(w) = &b.workload {
            patch["metadata"]["annotations"] = json!({WORKLOAD_ANNOTATION: w.render()});
        }
        let updated = api
            .patch(&b.claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(claim_err(&b.claim))?;
        rv = updated.resource_version().unwrap_or_default();
        if b.write_status {
            // Superseded by the status write below; the last write's version is current.
            stale.push(rv.clone());
        }
    }
    if b.write_status {
        let patch = json!({"metadata": {"resourceVersion": rv}, "status": {"phase": b.phase}});
        api.patch_status(&b.claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(claim_err(&b.claim))?;
    }
    Ok(stale)
}

async fn event(ctx: &Context, pod: &PodKey, reason: Reason, note: String) {
    if let Err(e) = ctx.events.publish(pod, reason, note).await {
        ctx.metrics.error(e.metric_label());
        tracing::warn!(error = %e, "recording event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_claims_back_off_and_are_forgotten_once_decided() {
        let mut h = HeldClaims::default();
        let cap = Duration::from_secs(30);
        h.refused("c".into(), "pod a/x", "pod_gone", cap);
        let first = h.next().unwrap();
        assert!(h.due(Instant::now()).is_empty(), "not due yet");
        let later = first + Duration::from_millis(1);
        assert_eq!(h.due(later), ["c"]);
        assert!(h.due(later).is_empty(), "handed out once per refusal");
        assert_eq!(h.next(), None);
        // Refused again: twice as far; then 4x, then capped.
        let t = Instant::now();
        h.refused("c".into(), "pod a/x", "pod_gone", cap);
        let d2 = h.next().unwrap() - t;
        assert!(d2 >= HELD_RETRY * 2 && d2 < HELD_RETRY * 2 + Duration::from_secs(1));
        for _ in 0..10 {
            h.refused("c".into(), "pod a/x", "pod_gone", cap);
        }
        assert!(h.next().unwrap() - Instant::now() <= cap);
        h.settle();
        assert!(h.next().is_some(), "a scheduled retry is kept");
        h.due(Instant::now() + cap * 2);
        h.settle();
        assert!(h.0.is_empty(), "decided without a refusal: forgotten");
    }

    #[test]
    fn in_flight_until_the_watch_shows_a_newer_version() {
        let t0 = Instant::now();
        let mut f = InFlight::default();
        // Spec written (rv 2), then status (rv 3): 1 and 2 are stale, 3 is current.
        f.record("c".into(), vec!["1".into(), "2".into()], t0);
        let seen = |rv: &'static str| move |name: &str| (name == "c").then(|| rv.to_string());
        assert!(f.still_pending(seen("1"), t0).contains("c"));
        assert!(f.still_pending(seen("2"), t0).contains("c"));
        assert_eq!(f.next_expiry(t0), Some(IN_FLIGHT_TTL));
        assert!(
            f.still_pending(seen("3"), t0).is_empty(),
            "our last write is current"
        );
        assert_eq!(f.next_expiry(t0), None);
        // Expiry, and a claim that is gone from the watch.
        f.record("c".into(), vec!["1".into()], t0);
        assert!(f.still_pending(seen("1"), t0 + IN_FLIGHT_TTL).is_empty());
        f.record("c".into(), vec!["1".into()], t0);
        assert!(f.still_pending(|_| None, t0).is_empty());
    }
}
