//! IPPool status: `total`, `allocated` and the `Exhausted` and `Overlapping` conditions,
//! recomputed from the claims every time (never counted up and down, so it cannot drift).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pinip_api::{IPClaim, IPPool, IPPoolStatus, UsablePool};

pub const EXHAUSTED: &str = "Exhausted";
pub const OVERLAPPING: &str = "Overlapping";

/// The status every pool should have now. `now` stamps conditions whose status changes.
pub fn desired(
    pools: &[Arc<IPPool>],
    claims: &[Arc<IPClaim>],
    now: Timestamp,
) -> Vec<(String, IPPoolStatus)> {
    let mut allocated: HashMap<&str, i64> = HashMap::new();
    for c in claims {
        *allocated.entry(c.spec.pool.as_str()).or_default() += 1;
    }
    let parsed: Vec<(String, &IPPool, Result<UsablePool, String>)> = pools
        .iter()
        .map(|p| {
            (
                p.name_any(),
                p.as_ref(),
                p.spec.usable().map_err(|e| e.to_string()),
            )
        })
        .collect();
    parsed
        .iter()
        .map(|(name, pool, usable)| {
            let allocated = allocated.get(name.as_str()).copied().unwrap_or(0);
            let overlap = usable.as_ref().ok().and_then(|u| {
                parsed
                    .iter()
                    .filter(|(other, p, _)| other != name && p.spec.network == pool.spec.network)
                    .find_map(|(other, _, ou)| {
                        let ip = u.overlap(ou.as_ref().ok()?)?;
                        Some((other.clone(), ip))
                    })
            });
            let status = status(pool, usable, allocated, overlap, now);
            (name.clone(), status)
        })
        .collect()
}

fn status(
    pool: &IPPool,
    usable: &Result<UsablePool, String>,
    allocated: i64,
    overlap: Option<(String, IpAddr)>,
    now: Timestamp,
) -> IPPoolStatus {
    let total = match usable {
        Ok(u) => i64::try_from(u.size()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let exhausted = match usable {
        Err(why) => cond(EXHAUSTED, true, "InvalidSpec", why.clone()),
        Ok(_) if allocated >= total => cond(
            EXHAUSTED,
            true,
            "AllAddressesClaimed",
            format!("all {total} addresses are claimed"),
        ),
        Ok(_) => cond(
            EXHAUSTED,
            false,
            "AddressesFree",
            format!("{} of {total} addresses are free", total - allocated),
        ),
    };
    let overlapping = match overlap {
        Some((other, ip)) => cond(
            OVERLAPPING,
            true,
            "OverlapsPool",
            format!(
                "overlaps pool {other} of the same network (both hand out {ip}); give one a different network or disjoint ranges"
            ),
        ),
        None => cond(
            OVERLAPPING,
            false,
            "NoOverlap",
            "no other pool of the same network hands out these addresses".into(),
        ),
    };
    let old = pool.status.as_ref();
    let conditions = [exhausted, overlapping]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = pool.metadata.generation;
            // Keep the transition time while the status stays the same.
            c.last_transition_time = old
                .and_then(|s| s.conditions.iter().find(|o| o.type_ == c.type_))
                .filter(|o| o.status == c.status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| Time(now));
            c
        })
        .collect();
    IPPoolStatus {
        total,
        allocated,
        conditions,
    }
}

fn cond(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Whether `current` already says what `desired` says.
pub fn up_to_date(current: Option<&IPPoolStatus>, desired: &IPPoolStatus) -> bool {
    current == Some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, spec: serde_json::Value) -> Arc<IPPool> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name, "generation": 3}, "spec": spec}))
            .unwrap(),
        )
    }

    fn claims(pool: &str, n: usize) -> Vec<Arc<IPClaim>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    serde_json::from_value(
                        json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
                    "metadata": {"name": format!("{pool}-{i}")},
                    "spec": {"pool": pool, "address": "10.0.0.1/24",
                        "owner": {"kind": "Pod", "namespace": "n", "name": "p"}}}),
                    )
                    .unwrap(),
                )
            })
            .collect()
    }

    fn get<'a>(s: &'a IPPoolStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn counts_and_conditions() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let pools = vec![
            pool("tiny", json!({"cidr": "10.70.0.0/30"})),
            pool("a", json!({"cidr": "10.50.0.0/24"})),
            pool("b", json!({"cidr": "10.50.0.128/25"})),
            pool(
                "other-net",
                json!({"cidr": "10.50.0.0/24", "network": "net1"}),
            ),
            pool("huge", json!({"cidr": "fd00::/8"})),
        ];
        let mut cs = claims("tiny", 2);
        cs.extend(claims("a", 5));
        let got: HashMap<String, IPPoolStatus> = desired(&pools, &cs, now).into_iter().collect();
        let tiny = &got["tiny"];
        assert_eq!((tiny.total, tiny.allocated), (2, 2));
        assert_eq!(get(tiny, EXHAUSTED).status, "True");
        assert_eq!(get(tiny, EXHAUSTED).message, "all 2 addresses are claimed");
        assert_eq!(get(tiny, EXHAUSTED).observed_generation, Some(3));
        let a = &got["a"];
        assert_eq!((a.total, a.allocated), (254, 5));
        assert_eq!(get(a, EXHAUSTED).status, "False");
        assert_eq!(get(a, OVERLAPPING).status, "True");
        assert!(
            get(a, OVERLAPPING).message.contains("overlaps pool b"),
            "{:?}",
            get(a, OVERLAPPING)
        );
        assert_eq!(get(&got["b"], OVERLAPPING).status, "True");
        // Another network may reuse the CIDR.
        assert_eq!(get(&got["other-net"], OVERLAPPING).status, "False");
        assert_eq!(got["huge"].total, i64::MAX);
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2030-01-02T00:00:00Z".parse().unwrap();
        let p = pool("p", json!({"cidr": "10.0.0.0/30"}));
        let first = desired(std::slice::from_ref(&p), &[], t0).remove(0).1;
        let mut with_status = (*p).clone();
        with_status.status = Some(first.clone());
        let with_status = Arc::new(with_status);
        let again = desired(std::slice::from_ref(&with_status), &[], t1)
            .remove(0)
            .1;
        assert!(up_to_date(with_status.status.as_ref(), &again));
        let full = desired(&[with_status], &claims("p", 2), t1).remove(0).1;
        assert_eq!(get(&full, EXHAUSTED).last_transition_time, Time(t1));
        assert_eq!(get(&full, OVERLAPPING).last_transition_time, Time(t0));
    }

    #[test]
    fn invalid_spec_is_reported_not_panicked() {
        let now = Timestamp::UNIX_EPOCH;
        let bad = pool("bad", json!({"cidr": "10.0.0.5/24"}));
        let s = desired(&[bad], &[], now).remove(0).1;
        assert_eq!(s.total, 0);
        assert_eq!(get(&s, EXHAUSTED).reason, "InvalidSpec");
    }
}
