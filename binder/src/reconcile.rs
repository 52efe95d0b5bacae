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
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use pinip_api::annotations::Retain;
use pinip_api::{ClaimInfo, IPPool, IPPoolStatus};
use serde_json::json;
use tokio::sync::watch;

use crate::bind::{self, Conflict, PodInfo, Policy, Reason, World};
use crate::error::Error;
use crate::events::Events;
use crate::index::Index;
use crate::metrics::{Metrics, ReasonLabels, ResultLabels, ScopeLabels};
use crate::pool_status;
use crate::workload::Lookups;

mod claim_write;
pub use claim_write::StatusWrites;
mod execute;
mod memory;
mod schedule;

use execute::{Done, execute};
use memory::{HeldClaims, InFlight};
use schedule::{Outcome, Schedule};

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
    /// How claims' status is written (one write, or through `/status` for an older CRD).
    pub status_writes: StatusWrites,
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
    held: HeldClaims,
}

impl Reconciler {
    pub fn new(ctx: Arc<Context>) -> Reconciler {
        Reconciler {
            ctx,
            in_flight: InFlight::default(),
            reported: HashSet::new(),
            logged: HashSet::new(),
            pools_written: HashMap::new(),
            held: HeldClaims::default(),
        }
    }

    /// Reconciles what the watches report changed, and everything when `Schedule` says so
    /// (a workload changed, a watch relisted, a grace period or backoff ended, the resync
    /// interval passed).
    async fn lead(&mut self) {
        // Events from before this term are covered by the first, full pass.
        self.ctx.index.changes.take();
        let mut schedule = Schedule::new(self.ctx.resync, Instant::now());
        loop {
            let now = Instant::now();
            let due = self.held.due(now);
            self.ctx
                .index
                .changes
                .claims(due.iter().map(String::as_str));
            let scope = schedule.scope(self.ctx.index.changes.take(), Instant::now());
            let full = scope.is_none();
            let outcome = self.pass(scope).await;
            schedule.after(full, &outcome, Instant::now());
            tokio::select! {
                _ = self.ctx.index.changed.notified() => {
                    tokio::time::sleep(self.ctx.debounce).await;
                }
                _ = tokio::time::sleep_until(schedule.next_full().into()) => {}
                // A held claim's retry: a pass over that claim only.
                _ = sleep_until_some(self.held.next()) => {}
            }
        }
    }

    /// One reconcile: of the claims in `scope` (with the pods that name them and, for a
    /// member of an `app` set, the rest of its set), or of everything (`None`). Returns what
    /// the scheduler needs to know of it.
    pub async fn pass(&mut self, scope: Option<HashSet<String>>) -> Outcome {
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
        Outcome {
            due_in: plan.wake_in,
            in_flight_expiry: self.in_flight.next_expiry(Instant::now()),
            looked_up: looked_up.iter().any(|ok| *ok),
            errors,
        }
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
