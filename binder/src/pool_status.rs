//! IPPool status: `total`, `allocated` and the `Exhausted` and `Overlapping` conditions, from
//! the ledger's pools and per-pool counts (the ledger recounts on every relist).

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use pinip_api::{IPPool, IPPoolStatus, UsablePool};
use pinip_index::Pool;

pub const EXHAUSTED: &str = "Exhausted";
pub const OVERLAPPING: &str = "Overlapping";

/// The status every pool should have now. `allocated`: the claims of a pool; `now` stamps
/// conditions whose status changes.
pub fn desired(
    pools: &[Arc<Pool>],
    allocated: impl Fn(&str) -> usize,
    now: Timestamp,
) -> Vec<(String, IPPoolStatus)> {
    pools
        .iter()
        .map(|pool| {
            let allocated = i64::try_from(allocated(&pool.name)).unwrap_or(i64::MAX);
            let overlap = pools
                .iter()
                .filter(|other| other.name != pool.name)
                .find_map(|other| Some((other.name.clone(), pool.overlap(other)?)));
            let status = status(&pool.object, &pool.usable, allocated, overlap, now);
            (pool.name.clone(), status)
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
    use std::collections::HashMap;

    fn pool(name: &str, spec: serde_json::Value) -> Arc<Pool> {
        parsed(
            serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name, "generation": 3}, "spec": spec}))
            .unwrap(),
        )
    }

    fn parsed(p: IPPool) -> Arc<Pool> {
        Arc::new(Pool::parse(Arc::new(p)))
    }

    /// `n` claims of `pool`, none of any other.
    fn claims(pool: &str, n: usize) -> impl Fn(&str) -> usize {
        let pool = pool.to_string();
        move |p: &str| if p == pool { n } else { 0 }
    }

    fn none(_: &str) -> usize {
        0
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
        let counts: HashMap<&str, usize> = [("tiny", 2), ("a", 5)].into();
        let cs = |p: &str| counts.get(p).copied().unwrap_or(0);
        let got: HashMap<String, IPPoolStatus> = desired(&pools, cs, now).into_iter().collect();
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
        let first = desired(std::slice::from_ref(&p), none, t0).remove(0).1;
        let mut with_status = (*p.object).clone();
        with_status.status = Some(first.clone());
        let with_status = parsed(with_status);
        let again = desired(std::slice::from_ref(&with_status), none, t1)
            .remove(0)
            .1;
        assert!(up_to_date(with_status.object.status.as_ref(), &again));
        let full = desired(&[with_status], claims("p", 2), t1).remove(0).1;
        assert_eq!(get(&full, EXHAUSTED).last_transition_time, Time(t1));
        assert_eq!(get(&full, OVERLAPPING).last_transition_time, Time(t0));
    }

    #[test]
    fn invalid_spec_is_reported_not_panicked() {
        let now = Timestamp::UNIX_EPOCH;
        let bad = pool("bad", json!({"cidr": "10.0.0.5/24"}));
        let s = desired(&[bad], none, now).remove(0).1;
        assert_eq!(s.total, 0);
        assert_eq!(get(&s, EXHAUSTED).reason, "InvalidSpec");
    }
}
