//! The `IPPool` custom resource and the address set a pool hands out.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::addrset::{AddrSet, Family, ip_to_u128};
use crate::schema;

/// A range of addresses from which pods get fixed addresses. One address family per pool.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pinip.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    doc = "A range of addresses from which pinip gives pods fixed addresses.",
    shortname = "ipp",
    status = "IPPoolStatus",
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"ALLOCATED","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".status.total"}"#,
    printcolumn = r#"{"name":"DEFAULT","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = schema::pool_spec_rules()))]
pub struct IPPoolSpec {
    /// The pool's network in canonical form, e.g. `10.20.0.0/24` or `fd00:20::/64`.
    #[schemars(schema_with = "schema::cidr")]
    pub cidr: String,
    /// Address ranges inside `cidr` to hand out, each `first-last` or a single address.
    /// Default: the whole cidr minus network, broadcast and gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::ranges")]
    pub ranges: Vec<String>,
    /// Addresses never handed out: CIDRs, `first-last` ranges or single addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::excludes")]
    pub exclude: Vec<String>,
    /// Gateway written into each allocation; never handed out to a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_ip")]
    pub gateway: Option<String>,
    /// Routes written into each allocation; a route's `gw` defaults to `gateway`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub routes: Vec<Route>,
    /// DNS settings written into each allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Nodes that can host this pool's addresses; pods get a matching required node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Namespaces that may draw from this pool. Default: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods that opt in without naming a pool draw from default pools.
    #[serde(default)]
    pub default: bool,
    /// Pools of different networks (e.g. Multus secondary networks) may overlap.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(schema_with = "schema::network")]
    pub network: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    /// Destination CIDR, e.g. `0.0.0.0/0`.
    #[schemars(schema_with = "schema::cidr_any")]
    pub dst: String,
    /// Next hop; defaults to the pool's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_ip")]
    pub gw: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::ips")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub options: Vec<String>,
}

/// Written by the binder, recomputed from the claims each time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// Usable addresses; saturates at 2^63-1 for very large IPv6 pools.
    #[serde(default)]
    pub total: i64,
    /// Addresses held by a claim.
    #[serde(default)]
    pub allocated: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Why a pool's spec cannot be turned into an address set. The API server's schema rejects
/// most of these at `kubectl apply`; this is the same check for code paths that get a spec
/// from elsewhere (old objects, tests, the validating webhook's messages).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("spec.cidr: {0:?} is not a CIDR (e.g. 10.20.0.0/24)")]
    Cidr(String),
    #[error("spec.cidr: {given:?} has host bits set; write {canonical}")]
    CidrNotCanonical { given: String, canonical: String },
    #[error("spec.{field}: {value:?} is not an address, a first-last range or a CIDR")]
    Range { field: &'static str, value: String },
    #[error("spec.{field}: {value:?} is not inside cidr {cidr}")]
    Outside {
        field: &'static str,
        value: String,
        cidr: String,
    },
    #[error("spec.{field}: {value:?} is not an IP address")]
    Ip { field: &'static str, value: String },
}

/// A parsed pool: its network, gateway and the set of addresses it may hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsablePool {
    pub cidr: IpNet,
    pub gateway: Option<IpAddr>,
    pub usable: AddrSet,
}

impl UsablePool {
    pub fn family(&self) -> Family {
        self.usable.family()
    }

    /// Number of usable addresses, computed without enumerating them.
    pub fn size(&self) -> u128 {
        self.usable.len()
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.usable.contains(ip)
    }

    /// First usable address that both pools could hand out, if they overlap.
    pub fn overlap(&self, other: &UsablePool) -> Option<IpAddr> {
        self.usable.first_common(&other.usable)
    }

    /// The address with the pool's prefix length, as written into claims and allocations.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.cidr.prefix_len()).expect("prefix length comes from a valid cidr")
    }
}

impl IPPoolSpec {
    /// The pool's address set: (cidr ∩ ranges) − exclude − IPv4 network and broadcast − gateway.
    pub fn usable(&self) -> Result<UsablePool, PoolError> {
        let cidr: IpNet = self
            .cidr
            .parse()
            .map_err(|_| PoolError::Cidr(self.cidr.clone()))?;
        if cidr.trunc() != cidr {
            return Err(PoolError::CidrNotCanonical {
                given: self.cidr.clone(),
                canonical: cidr.trunc().to_string(),
            });
        }
        let family = Family::of_net(&cidr);
        let whole = AddrSet::of_net(&cidr);
        let mut base = if self.ranges.is_empty() {
            whole.clone()
        } else {
            let mut set = AddrSet::empty(family);
            for r in &self.ranges {
                let part = parse_span("ranges", r, family, false)?;
                if part.subtract(&whole) != AddrSet::empty(family) {
                    return Err(PoolError::Outside {
                        field: "ranges",
                        value: r.clone(),
                        cidr: cidr.to_string(),
                    });
                }
                set = set.union(&part);
            }
            set
        };
        for x in &self.exclude {
            base = base.subtract(&parse_span("exclude", x, family, true)?);
        }
        if let IpNet::V4(v4) = cidr
            && v4.prefix_len() < 31
        {
            base = base.subtract(&AddrSet::single(&IpAddr::V4(v4.network())));
            base = base.subtract(&AddrSet::single(&IpAddr::V4(v4.broadcast())));
        }
        let gateway = match &self.gateway {
            None => None,
            Some(g) => {
                let ip: IpAddr = g.parse().map_err(|_| PoolError::Ip {
                    field: "gateway",
                    value: g.clone(),
                })?;
                if !cidr.contains(&ip) {
                    return Err(PoolError::Outside {
                        field: "gateway",
                        value: g.clone(),
                        cidr: cidr.to_string(),
                    });
                }
                base = base.subtract(&AddrSet::single(&ip));
                Some(ip)
            }
        };
        Ok(UsablePool {
            cidr,
            gateway,
            usable: base,
        })
    }
}

/// Parses `a`, `a-b` and (when `allow_cidr`) `a/n` into an address set of `family`.
fn parse_span(
    field: &'static str,
    text: &str,
    family: Family,
    allow_cidr: bool,
) -> Result<AddrSet, PoolError> {
    let bad = || PoolError::Range {
        field,
        value: text.to_string(),
    };
    let ip = |s: &str| -> Result<IpAddr, PoolError> {
        let ip: IpAddr = s.trim().parse().map_err(|_| bad())?;
        if Family::of(&ip) != family {
            return Err(bad());
        }
        Ok(ip)
    };
    if allow_cidr && text.contains('/') {
        let net: IpNet = text.trim().parse().map_err(|_| bad())?;
        if Family::of_net(&net) != family {
            return Err(bad());
        }
        return Ok(AddrSet::of_net(&net.trunc()));
    }
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (ip(a)?, ip(b)?);
            if ip_to_u128(&b) < ip_to_u128(&a) {
                return Err(bad());
            }
            Ok(AddrSet::of_range(family, ip_to_u128(&a), ip_to_u128(&b)))
        }
        None => Ok(AddrSet::single(&ip(text)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(cidr: &str) -> IPPoolSpec {
        IPPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        }
    }

    #[test]
    fn design_example_pool() {
        let s = IPPoolSpec {
            cidr: "10.20.0.0/24".into(),
            ranges: vec!["10.20.0.10-10.20.0.200".into()],
            exclude: vec!["10.20.0.100/30".into()],
            gateway: Some("10.20.0.1".into()),
            ..Default::default()
        };
        let p = s.usable().unwrap();
        assert_eq!(p.size(), 191 - 4);
        assert!(!p.contains(&"10.20.0.101".parse().unwrap()));
        assert!(p.contains(&"10.20.0.10".parse().unwrap()));
        assert!(!p.contains(&"10.20.0.201".parse().unwrap()));
    }

    #[test]
    fn whole_v4_cidr_drops_network_broadcast_gateway() {
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.1".into());
        let p = s.usable().unwrap();
        assert_eq!(p.size(), 253);
        assert!(!p.contains(&"10.0.0.0".parse().unwrap()));
        assert!(!p.contains(&"10.0.0.255".parse().unwrap()));
        // /31 and /32 have no network or broadcast address (RFC 3021).
        assert_eq!(spec("10.0.0.0/31").usable().unwrap().size(), 2);
        assert_eq!(spec("10.0.0.7/32").usable().unwrap().size(), 1);
    }

    #[test]
    fn ipv6_slash_64_is_measured_not_enumerated() {
        let mut s = spec("fd00:20::/64");
        s.gateway = Some("fd00:20::1".into());
        assert_eq!(s.usable().unwrap().size(), (1u128 << 64) - 1);
    }

    #[test]
    fn errors_name_field_and_value() {
        let msg = |s: IPPoolSpec| s.usable().unwrap_err().to_string();
        assert_eq!(
            msg(spec("10.0.0.0/33")),
            r#"spec.cidr: "10.0.0.0/33" is not a CIDR (e.g. 10.20.0.0/24)"#
        );
        assert_eq!(
            msg(spec("10.0.0.5/24")),
            r#"spec.cidr: "10.0.0.5/24" has host bits set; write 10.0.0.0/24"#
        );
        let mut s = spec("10.0.0.0/24");
        s.ranges = vec!["10.0.0.9-10.0.0.2".into()];
        assert_eq!(
            msg(s),
            r#"spec.ranges: "10.0.0.9-10.0.0.2" is not an address, a first-last range or a CIDR"#
        );
        let mut s = spec("10.0.0.0/24");
        s.ranges = vec!["10.0.1.1-10.0.1.9".into()];
        assert_eq!(
            msg(s),
            r#"spec.ranges: "10.0.1.1-10.0.1.9" is not inside cidr 10.0.0.0/24"#
        );
        let mut s = spec("10.0.0.0/24");
        s.exclude = vec!["fd00::/64".into()];
        assert_eq!(
            msg(s),
            r#"spec.exclude: "fd00::/64" is not an address, a first-last range or a CIDR"#
        );
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.x".into());
        assert_eq!(msg(s), r#"spec.gateway: "10.0.0.x" is not an IP address"#);
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.9.0.1".into());
        assert_eq!(
            msg(s),
            r#"spec.gateway: "10.9.0.1" is not inside cidr 10.0.0.0/24"#
        );
    }

    /// A small random v4 pool inside 10.0.0.0/24.
    fn small_pool() -> impl Strategy<Value = IPPoolSpec> {
        (
            24u8..=30,
            prop::collection::vec((1u8..250, 0u8..30), 0..3),
            prop::collection::vec((0u8..255, 0u8..8), 0..3),
            prop::option::of(0u8..255),
        )
            .prop_map(|(prefix, ranges, exclude, gw)| {
                let net: IpNet = format!("10.0.0.0/{prefix}").parse().unwrap();
                let max = ip_to_u128(&net.broadcast()) as u32 & 0xff;
                let clamp = |x: u32| x.min(max);
                IPPoolSpec {
                    cidr: net.to_string(),
                    ranges: ranges
                        .into_iter()
                        .map(|(a, l)| {
                            let a = clamp(a as u32);
                            format!("10.0.0.{a}-10.0.0.{}", clamp(a + l as u32))
                        })
                        .collect(),
                    exclude: exclude
                        .into_iter()
                        .map(|(a, l)| format!("10.0.0.{}-10.0.0.{}", a, a.saturating_add(l)))
                        .collect(),
                    gateway: gw.map(|g| format!("10.0.0.{}", clamp(g as u32))),
                    ..Default::default()
                }
            })
    }

    proptest! {
        #[test]
        fn size_equals_iteration_count(s in small_pool(), offset in 0u128..1000) {
            let p = s.usable().unwrap();
            let seen: Vec<IpAddr> = p.usable.iter_from(offset).collect();
            prop_assert_eq!(seen.len() as u128, p.size());
            let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
            prop_assert_eq!(distinct.len(), seen.len());
            for ip in &seen {
                prop_assert!(p.contains(ip));
                prop_assert!(Some(*ip) != p.gateway);
            }
        }

        #[test]
        fn overlap_never_missed(a in small_pool(), b in small_pool()) {
            let (pa, pb) = (a.usable().unwrap(), b.usable().unwrap());
            let naive = pa.usable.iter_from(0).find(|ip| pb.contains(ip));
            prop_assert_eq!(pa.overlap(&pb), naive);
            prop_assert_eq!(pa.overlap(&pb).is_some(), pb.overlap(&pa).is_some());
        }
    }
}
