//! Prometheus metrics: reconciles, errors, claim writes, reclaims, conflicts and leadership,
//! plus claims by phase, computed from the watch index at scrape (so they never drift).

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::index::Index;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub action: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `changed` or `all`.
    pub scope: &'static str,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Reconcile passes, by result (`ok`, `error`: some write failed and is retried).
    pub reconciles: Family<ResultLabels, Counter>,
    /// Failed API calls, by kind of error.
    pub errors: Family<ErrorLabels, Counter>,
    pub reconcile_seconds: Family<ScopeLabels, Histogram, fn() -> Histogram>,
    /// Claim writes that succeeded, by action and reason.
    pub writes: Family<WriteLabels, Counter>,
    /// Reservations no pod took within the grace period, reclaimed.
    pub reclaimed: Counter,
    /// Releases and deletes not written because the API server showed a live holder.
    pub kept_held: Counter,
    /// First binds not written because the API server did not show that pod (uid) live
    /// with this claim (the pod watch lagged).
    pub binds_unconfirmed: Counter,
    /// Pods whose allocation names an address their claim does not back, by reason.
    pub conflicts: Family<ReasonLabels, Counter>,
    pub pool_status_writes: Counter,
    pub leader: Gauge,
    /// 1 while the binder writes claims' status separately (an older IPClaim CRD).
    pub claim_status_split: Gauge,
    claims: Family<PhaseLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pinip_binder");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles (of what changed, or of everything), by result",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Failed API calls during reconciles, by error",
            errors.clone(),
        );
        let reconcile_seconds = Family::<ScopeLabels, Histogram>::new_with_constructor(
            reconcile_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_seconds",
            "Time of one reconcile, API writes included, by scope (changed: what watch events touched; all: every claim)",
            reconcile_seconds.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "claim_writes",
            "IPClaim writes (bind, release, delete), by action and reason",
            writes.clone(),
        );
        let kept_held = Counter::default();
        registry.register(
            "kept_held",
            "Releases and deletes not written because a live pod still held the claim (checked against the API server)",
            kept_held.clone(),
        );
        let binds_unconfirmed = Counter::default();
        registry.register(
            "binds_unconfirmed",
            "First binds not written because the API server did not show the pod (that uid, live, with this claim)",
            binds_unconfirmed.clone(),
        );
        let reclaimed = Counter::default();
        registry.register(
            "reclaimed",
            "Reservations whose pod never appeared, reclaimed after the grace period",
            reclaimed.clone(),
        );
        let conflicts = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "conflicts",
            "Pods whose allocation names an address that its claim does not back, by reason",
            conflicts.clone(),
        );
        let pool_status_writes = Counter::default();
        registry.register(
            "pool_status_writes",
            "IPPool status updates",
            pool_status_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and reconciles",
            leader.clone(),
        );
        let claim_status_split = Gauge::default();
        registry.register(
            "claim_status_split",
            "1 while the IPClaim CRD served has a status subresource (an older release's) and a bind takes two writes",
            claim_status_split.clone(),
        );
        let claims = Family::<PhaseLabels, Gauge>::default();
        registry.register("claims", "IPClaims by phase", claims.clone());
        Metrics {
            registry,
            reconciles,
            errors,
            reconcile_seconds,
            writes,
            reclaimed,
            kept_held,
            binds_unconfirmed,
            conflicts,
            pool_status_writes,
            leader,
            claim_status_split,
            claims,
        }
    }
}

impl Metrics {
    pub fn error(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabels { error }).inc();
    }

    /// The text exposition, with claims by phase recomputed from `index`.
    pub fn render(&self, index: &Index) -> String {
        let mut by_phase: BTreeMap<&'static str, i64> =
            [("Reserved", 0), ("Bound", 0), ("Released", 0)].into();
        for c in index.ledger.claims() {
            let phase = match c.phase {
                pinip_api::ClaimPhase::Reserved => "Reserved",
                pinip_api::ClaimPhase::Bound => "Bound",
                pinip_api::ClaimPhase::Released => "Released",
            };
            *by_phase.entry(phase).or_default() += 1;
        }
        for (phase, n) in by_phase {
            self.claims.get_or_create(&PhaseLabels { phase }).set(n);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
