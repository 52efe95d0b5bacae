//! Prometheus metrics: admissions by webhook and result, denials by reason, decision latency,
//! 409 retries, and per-pool free/used addresses (computed from the watch index at scrape, so
//! they never drift).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::index::Index;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub state: &'static str,
}

/// Fine enough below 30 ms to read a 10 ms p99 (kube-apiserver's are 5/25/100 ms).
const LATENCY_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub decision_seconds: Histogram,
    pub claim_create_seconds: Histogram,
    /// Admission requests from the moment their headers are read to their answer, by route.
    pub request_seconds: Family<PathLabels, Histogram>,
    pub claim_conflicts: Counter,
    pub handovers: Counter,
    /// TLS clients refused on the admission port (`--client-ca`), by reason.
    pub clients_refused: Family<DenialLabels, Counter>,
    pool_addresses: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pinip_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by webhook and result",
            admissions.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register("denials", "Admissions denied, by reason", denials.clone());
        let decision_seconds = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "decision_seconds",
            "Time to decide a pod's addresses in /mutate, API writes included",
            decision_seconds.clone(),
        );
        let claim_create_seconds = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "claim_create_seconds",
            "Time of each IPClaim create /mutate sent to the API server (answer included, \
             409s too): the part of a decision spent waiting on the API server",
            claim_create_seconds.clone(),
        );
        let request_seconds = Family::<PathLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "request_seconds",
            "Admission requests on the admission port, from their headers read to their \
             answer (body read, review parsed, decided, answer encoded), by route",
            request_seconds.clone(),
        );
        let claim_conflicts = Counter::default();
        registry.register(
            "claim_conflicts",
            "IPClaim writes that lost a race (409) and moved to the next candidate",
            claim_conflicts.clone(),
        );
        let handovers = Counter::default();
        registry.register(
            "handovers",
            "Existing IPClaims handed to a new pod after their holder was confirmed gone",
            handovers.clone(),
        );
        let clients_refused = Family::<DenialLabels, Counter>::default();
        registry.register(
            "clients_refused",
            "TLS clients refused on the admission port: certificate not from --client-ca \
             (untrusted) or naming none of --client-name (name)",
            clients_refused.clone(),
        );
        let pool_addresses = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_addresses",
            "Addresses per pool that are used (claimed) or free (saturates for huge pools)",
            pool_addresses.clone(),
        );
        Metrics {
            registry,
            admissions,
            denials,
            decision_seconds,
            claim_create_seconds,
            request_seconds,
            claim_conflicts,
            handovers,
            clients_refused,
            pool_addresses,
        }
    }
}

impl Metrics {
    pub fn admission(&self, webhook: &'static str, result: &'static str) {
        self.admissions
            .get_or_create(&AdmissionLabels { webhook, result })
            .inc();
    }

    /// The text exposition, with pool gauges recomputed from `index`.
    pub fn render(&self, index: &Index) -> String {
        self.pool_addresses.clear();
        for p in index.ledger.pools() {
            let name = p.name.clone();
            let size = p.usable.as_ref().map(|u| u.size()).unwrap_or(0);
            let u = i64::try_from(index.ledger.claimed(&name)).unwrap_or(i64::MAX);
            let free = i64::try_from(size).unwrap_or(i64::MAX).saturating_sub(u);
            self.pool_addresses
                .get_or_create(&PoolLabels {
                    pool: name.clone(),
                    state: "used",
                })
                .set(u);
            self.pool_addresses
                .get_or_create(&PoolLabels {
                    pool: name,
                    state: "free",
                })
                .set(free.max(0));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
