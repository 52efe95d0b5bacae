//! /mutate: decide a pod's addresses at creation and answer with the patch that records them.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use pinip_api::annotations::{
    ALLOCATION, Allocation, DnsAllocation, ENABLED_LABEL, IP, InterfaceAllocation, IpAllocation,
    IpRequest, POOL, PoolRequest, RETAIN, Retain, RouteAllocation, USER_KEYS,
};

use crate::allocate::{Decided, Holder};
use crate::policy::{self, Chosen};
use crate::reason::Denial;
use crate::state::State;
use pinip_api::owner;

/// `pinip: pod demo/web-0 (pool blue): <reason>` — what the user sees from kubectl.
pub fn deny_message(ns: &str, pod: &str, pools: &str, reason: &Denial) -> String {
    let pool = reason.pool().unwrap_or(pools);
    if pool.is_empty() {
        format!("pinip: pod {ns}/{pod}: {reason}")
    } else {
        format!("pinip: pod {ns}/{pod} (pool {pool}): {reason}")
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether the pod is pinip's to decide: its namespace (with `ns_labels`) opted in, or it
/// carries a pinip annotation.
pub fn in_scope(pod: &Pod, ns_labels: &BTreeMap<String, String>) -> bool {
    USER_KEYS.iter().any(|k| annotation(pod, k).is_some())
        || ns_labels.get(ENABLED_LABEL).is_some_and(|v| v == "true")
}

/// A namespace's labels from the watch; one GET when the namespace is newer than the watch.
/// A lookup that fails is an error, never "no labels": an enabled namespace must not look
/// disabled because the API server did not answer.
pub async fn namespace_labels(state: &State, ns: &str) -> Result<BTreeMap<String, String>, String> {
    if let Some(l) = state.index.namespace_labels(ns) {
        return Ok(l);
    }
    let api: Api<Namespace> = Api::all(state.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(n)) => Ok(n.metadata.labels.unwrap_or_default()),
        Ok(None) => Err(format!("namespace {ns} does not exist")),
        Err(e) => Err(format!("reading namespace {ns}: {e}")),
    }
}

pub async fn mutate(state: &State, req: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if req.operation != Operation::Create {
        state.metrics.admission("mutate", "skipped");
        return resp;
    }
    let Some(pod) = req.object.as_ref() else {
        state.metrics.admission("mutate", "invalid");
        return invalid(req, "pod CREATE review without an object");
    };
    let ns = req.namespace.clone().unwrap_or_default();
    // Read once: the scope check and the decision both need the namespace's labels.
    let ns_labels = match namespace_labels(state, &ns).await {
        Ok(l) => l,
        Err(why) => {
            state.metrics.admission("mutate", "denied");
            let msg = format!(
                "pinip: pod {ns}/{}: {why}; try again",
                owner::display_name(pod)
            );
            tracing::warn!(message = %msg, "denied: namespace lookup failed");
            return resp.deny(msg);
        }
    };
    // A pod that arrives with an allocation is a spoof wherever it is, in scope or not.
    if !in_scope(pod, &ns_labels) && annotation(pod, ALLOCATION).is_none() {
        state.metrics.admission("mutate", "skipped");
        return resp;
    }
    let started = Instant::now();
    let shown = owner::display_name(pod);
    let pools_hint = annotation(pod, POOL).unwrap_or("");
    let outcome = decide(state, pod, &ns, &ns_labels, req.dry_run).await;
    state
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok((allocation, node_reqs)) => match crate::patch::mutation(pod, &allocation, &node_reqs) {
            Ok(patch) => match resp.with_patch(patch) {
                Ok(r) => {
                    state.metrics.admission("mutate", "allowed");
                    tracing::info!(pod_ref = %format!("{ns}/{shown}"), allocation = %allocation.render(), dry_run = req.dry_run, "decided");
                    r
                }
                Err(e) => invalid(req, e),
            },
            Err(e) => invalid(req, e),
        },
        Err(denial) => {
            state.metrics.admission("mutate", "denied");
            state
                .metrics
                .denials
                .get_or_create(&crate::metrics::DenialLabels {
                    reason: denial.metric_label(),
                })
                .inc();
            let msg = deny_message(&ns, &shown, pools_hint, &denial);
            tracing::info!(pod_ref = %format!("{ns}/{shown}"), reason = denial.metric_label(), message = %msg, "denied");
            resp.deny(msg)
        }
    }
}

/// An answer that says the review could not be handled, naming the request it answers.
fn invalid(req: &AdmissionRequest<Pod>, why: impl ToString) -> AdmissionResponse {
    let mut resp = AdmissionResponse::invalid(why);
    resp.uid = req.uid.clone();
    resp
}

type Decision = (
    Allocation,
    Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement>,
);

async fn decide(
    state: &State,
    pod: &Pod,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    dry_run: bool,
) -> Result<Decision, Denial> {
    if annotation(pod, ALLOCATION).is_some() {
        return Err(Denial::AllocationSupplied);
    }
    let bad = |e: pinip_api::annotations::AnnotationError| Denial::Annotation(e.to_string());
    let pool_req: Option<PoolRequest> = annotation(pod, POOL)
        .map(str::parse)
        .transpose()
        .map_err(bad)?;
    let ip_req: Option<IpRequest> = annotation(pod, IP)
        .map(str::parse)
        .transpose()
        .map_err(bad)?;
    let retain_req: Option<Retain> = annotation(pod, RETAIN)
        .map(str::parse)
        .transpose()
        .map_err(bad)?;

    let resolved = state
        .resolver
        .resolve(pod, ns)
        .await
        .map_err(|e| Denial::Api(format!("verifying the pod's owner: {e}")))?;
    let owner = resolved.owner.clone();
    let retain = retain_req.unwrap_or_else(|| owner::default_retain(&owner));
    if let (Some(Retain::Ordinal | Retain::App), Some(why)) = (retain_req, &resolved.unverified) {
        return Err(Denial::Retain(format!(
            "retain \"{retain}\" needs a verified owner, but {why}"
        )));
    }
    owner::check_retain(&owner, retain).map_err(Denial::Retain)?;

    let pools = state.index.ledger.pools();
    let usage = IndexUsage {
        index: &state.index,
        owner: &owner,
        retained: matches!(retain, Retain::Ordinal | Retain::App),
    };
    let chosen = policy::choose(
        &pools,
        pod,
        ns_labels,
        pool_req.as_ref(),
        ip_req.as_ref(),
        &usage,
    )?;
    let unbound = state.index.ledger.unbound_reservations(ns);
    if unbound >= state.max_reservations {
        return Err(Denial::TooManyReservations {
            namespace: ns.to_string(),
            count: unbound,
            limit: state.max_reservations,
        });
    }
    let holder = Holder {
        name: pod.metadata.name.clone().unwrap_or_default(),
        generate_name: pod.metadata.generate_name.clone().unwrap_or_default(),
    };
    let decided = state
        .allocator
        .allocate(
            &chosen,
            &owner,
            resolved.workload.as_ref(),
            retain,
            &holder,
            dry_run,
        )
        .await?;
    Ok((
        allocation(&state.allocator.interface, &decided),
        node_requirements(&chosen),
    ))
}

/// Pool usage from the watch index; only consulted when several default pools fit.
struct IndexUsage<'a> {
    index: &'a crate::index::Index,
    owner: &'a pinip_api::Owner,
    retained: bool,
}

impl policy::PoolUsage for IndexUsage<'_> {
    fn nodes(&self) -> Vec<policy::NodeLabels> {
        self.index.nodes()
    }

    fn claimed(&self, pool: &str) -> u128 {
        self.index.ledger.claimed(pool) as u128
    }

    fn held_by_owner(&self, pool: &str) -> bool {
        self.retained && self.index.ledger.holds(self.owner, pool)
    }
}

fn node_requirements(
    chosen: &[Chosen],
) -> Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement> {
    let mut reqs = Vec::new();
    for c in chosen {
        if let Some(sel) = &c.pool.object.spec.node_selector {
            for r in policy::node_requirements(sel) {
                if !reqs.contains(&r) {
                    reqs.push(r);
                }
            }
        }
    }
    reqs
}

/// The allocation annotation for the decided addresses: one interface, its ips, and the
/// pools' routes and DNS (route gateways default to the pool's gateway).
pub fn allocation(interface: &str, decided: &[Decided]) -> Allocation {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    let mut dns = DnsAllocation::default();
    for d in decided {
        let spec = &d.chosen.pool.object.spec;
        let gateway = d.chosen.usable.gateway;
        ips.push(IpAllocation {
            address: d.chosen.usable.with_prefix(d.ip),
            gateway,
            pool: d.chosen.name(),
            claim: d.claim.clone(),
        });
        for r in &spec.routes {
            if let Ok(dst) = r.dst.parse() {
                let gw = r.gw.as_deref().and_then(|g| g.parse().ok()).or(gateway);
                routes.push(RouteAllocation { dst, gw });
            }
        }
        if let Some(d) = &spec.dns {
            dns.nameservers.extend(
                d.nameservers
                    .iter()
                    .filter_map(|n| n.parse::<std::net::IpAddr>().ok()),
            );
            dns.search.extend(d.search.iter().cloned());
            dns.options.extend(d.options.iter().cloned());
        }
    }
    Allocation {
        version: Allocation::VERSION,
        interfaces: vec![InterfaceAllocation {
            name: interface.to_string(),
            ips,
            routes,
            dns,
        }],
    }
}
