//! The annotation contract between users, the webhook and the CNI plugin: keys, and typed parse
//! and render of each value. Parse errors name the annotation and the offending value.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addrset::Family;
use crate::names::is_dns1123_subdomain;

/// Label on a namespace that opts all its pods in.
pub const ENABLED_LABEL: &str = "pinip.io/enabled";
/// Pool name, or `v4pool,v6pool` for dual stack.
pub const POOL: &str = "pinip.io/pool";
/// An exact address, or one per family comma-separated.
pub const IP: &str = "pinip.io/ip";
/// `ordinal`, `app` or `none`.
pub const RETAIN: &str = "pinip.io/retain";
/// The webhook's decision; written only by the webhook, read by the CNI plugin.
pub const ALLOCATION: &str = "pinip.io/allocation";

/// Every annotation a user may write to opt a pod in.
pub const USER_KEYS: [&str; 3] = [POOL, IP, RETAIN];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("{key}: value is empty")]
    Empty { key: &'static str },
    #[error("{POOL}: {value:?} is not a pool name (a lowercase RFC 1123 subdomain such as blue)")]
    PoolName { value: String },
    #[error("{POOL}: {value:?} names more than two pools; give one, or one per family")]
    TooManyPools { value: String },
    #[error("{POOL}: {value:?} names pool {name:?} twice")]
    DuplicatePool { value: String, name: String },
    #[error("{IP}: {value:?} is not an IP address")]
    NotAnIp { value: String },
    #[error("{IP}: {value:?} gives two {family} addresses; give at most one per family")]
    SameFamily { value: String, family: &'static str },
    #[error("{RETAIN}: {value:?} is not one of ordinal, app, none")]
    Retain { value: String },
    #[error("{ALLOCATION}: not valid JSON for version 1: {reason}")]
    AllocationJson { reason: String },
    #[error("{ALLOCATION}: version {version} is not supported (this build reads version 1)")]
    AllocationVersion { version: u64 },
}

fn split_list(key: &'static str, value: &str) -> Result<Vec<String>, AnnotationError> {
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if value.trim().is_empty() {
        return Err(AnnotationError::Empty { key });
    }
    Ok(items)
}

/// `pinip.io/pool`: one pool, or two (one per family) for dual stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRequest(pub Vec<String>);

impl FromStr for PoolRequest {
    type Err = AnnotationError;
    fn from_str(value: &str) -> Result<Self, AnnotationError> {
        let names = split_list(POOL, value)?;
        if names.len() > 2 {
            return Err(AnnotationError::TooManyPools {
                value: value.into(),
            });
        }
        for n in &names {
            if !is_dns1123_subdomain(n) {
                return Err(AnnotationError::PoolName {
                    value: value.into(),
                });
            }
        }
        if names.len() == 2 && names[0] == names[1] {
            return Err(AnnotationError::DuplicatePool {
                value: value.into(),
                name: names[0].clone(),
            });
        }
        Ok(PoolRequest(names))
    }
}

impl fmt::Display for PoolRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `pinip.io/ip`: one exact address, or one per family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpRequest(pub Vec<IpAddr>);

impl IpRequest {
    pub fn for_family(&self, family: Family) -> Option<IpAddr> {
        self.0.iter().copied().find(|ip| Family::of(ip) == family)
    }
}

impl FromStr for IpRequest {
    type Err = AnnotationError;
    fn from_str(value: &str) -> Result<Self, AnnotationError> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for item in split_list(IP, value)? {
            let ip: IpAddr = item.parse().map_err(|_| AnnotationError::NotAnIp {
                value: item.clone(),
            })?;
            if ips.iter().any(|o| Family::of(o) == Family::of(&ip)) {
                return Err(AnnotationError::SameFamily {
                    value: value.into(),
                    family: Family::of(&ip).name(),
                });
            }
            ips.push(ip);
        }
        Ok(IpRequest(ips))
    }
}

impl fmt::Display for IpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|ip| ip.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// `pinip.io/retain`: what happens to an address when its pod goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retain {
    /// The StatefulSet ordinal keeps the address (default for StatefulSet pods).
    Ordinal,
    /// The workload keeps a set of addresses; its pods take free members.
    App,
    /// Released when the pod is gone (default otherwise).
    None,
}

impl FromStr for Retain {
    type Err = AnnotationError;
    fn from_str(value: &str) -> Result<Self, AnnotationError> {
        match value.trim() {
            "ordinal" => Ok(Retain::Ordinal),
            "app" => Ok(Retain::App),
            "none" => Ok(Retain::None),
            "" => Err(AnnotationError::Empty { key: RETAIN }),
            _ => Err(AnnotationError::Retain {
                value: value.into(),
            }),
        }
    }
}

impl fmt::Display for Retain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Retain::Ordinal => "ordinal",
            Retain::App => "app",
            Retain::None => "none",
        })
    }
}

/// `pinip.io/allocation`, version 1: every interface's addresses, routes and DNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub version: u64,
    pub interfaces: Vec<InterfaceAllocation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAllocation {
    /// The pod interface (`CNI_IFNAME`), or a Multus network name.
    pub name: String,
    pub ips: Vec<IpAllocation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteAllocation>,
    #[serde(default, skip_serializing_if = "DnsAllocation::is_empty")]
    pub dns: DnsAllocation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAllocation {
    /// Address with prefix length, e.g. `10.20.0.5/24`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub pool: String,
    pub claim: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAllocation {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAllocation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl DnsAllocation {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

impl Allocation {
    pub const VERSION: u64 = 1;

    /// The entry for `name` (an interface such as `eth0`, or a Multus network name).
    pub fn interface(&self, name: &str) -> Option<&InterfaceAllocation> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The annotation value: compact JSON.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("allocation serialises")
    }
}

impl FromStr for Allocation {
    type Err = AnnotationError;
    fn from_str(value: &str) -> Result<Self, AnnotationError> {
        if value.trim().is_empty() {
            return Err(AnnotationError::Empty { key: ALLOCATION });
        }
        // Read the version first so that a newer format is reported as such, not as bad JSON.
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u64>,
        }
        let v: Versioned =
            serde_json::from_str(value).map_err(|e| AnnotationError::AllocationJson {
                reason: e.to_string(),
            })?;
        match v.version {
            Some(Allocation::VERSION) => {}
            Some(version) => return Err(AnnotationError::AllocationVersion { version }),
            None => {
                return Err(AnnotationError::AllocationJson {
                    reason: "missing field `version`".into(),
                });
            }
        }
        serde_json::from_str(value).map_err(|e| AnnotationError::AllocationJson {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"}],"dns":{"nameservers":["10.96.0.10"]}}]}"#;

    fn err<T: FromStr<Err = AnnotationError> + fmt::Debug>(v: &str) -> String {
        v.parse::<T>().unwrap_err().to_string()
    }

    #[test]
    fn pool_parse_and_render() {
        let p: PoolRequest = "v4pool, v6pool".parse().unwrap();
        assert_eq!(p.0, vec!["v4pool", "v6pool"]);
        assert_eq!(p.to_string(), "v4pool,v6pool");
        assert_eq!(err::<PoolRequest>(""), "pinip.io/pool: value is empty");
        assert_eq!(
            err::<PoolRequest>("Blue"),
            r#"pinip.io/pool: "Blue" is not a pool name (a lowercase RFC 1123 subdomain such as blue)"#
        );
        assert_eq!(
            err::<PoolRequest>("a,b,c"),
            r#"pinip.io/pool: "a,b,c" names more than two pools; give one, or one per family"#
        );
        assert_eq!(
            err::<PoolRequest>("a,a"),
            r#"pinip.io/pool: "a,a" names pool "a" twice"#
        );
    }

    #[test]
    fn ip_parse_and_render() {
        let r: IpRequest = "10.0.0.5,fd00::5".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.5,fd00::5");
        assert_eq!(r.for_family(Family::V6), Some("fd00::5".parse().unwrap()));
        assert_eq!(
            err::<IpRequest>("10.0.0.300"),
            r#"pinip.io/ip: "10.0.0.300" is not an IP address"#
        );
        assert_eq!(
            err::<IpRequest>("10.0.0.1,10.0.0.2"),
            r#"pinip.io/ip: "10.0.0.1,10.0.0.2" gives two IPv4 addresses; give at most one per family"#
        );
        assert_eq!(err::<IpRequest>(" "), "pinip.io/ip: value is empty");
    }

    #[test]
    fn retain_parse_and_render() {
        for r in [Retain::Ordinal, Retain::App, Retain::None] {
            assert_eq!(r.to_string().parse::<Retain>().unwrap(), r);
        }
        assert_eq!(
            err::<Retain>("forever"),
            r#"pinip.io/retain: "forever" is not one of ordinal, app, none"#
        );
        assert_eq!(err::<Retain>(""), "pinip.io/retain: value is empty");
    }

    #[test]
    fn allocation_round_trip() {
        let a: Allocation = DESIGN_EXAMPLE.parse().unwrap();
        let eth0 = a.interface("eth0").unwrap();
        assert_eq!(
            eth0.ips[0].address,
            "10.20.0.5/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(a.render(), DESIGN_EXAMPLE);
        assert!(a.interface("net1").is_none());
    }

    #[test]
    fn allocation_errors() {
        assert_eq!(
            err::<Allocation>(r#"{"version":2,"interfaces":[]}"#),
            "pinip.io/allocation: version 2 is not supported (this build reads version 1)"
        );
        assert_eq!(
            err::<Allocation>(r#"{"interfaces":[]}"#),
            "pinip.io/allocation: not valid JSON for version 1: missing field `version`"
        );
        assert_eq!(
            err::<Allocation>("{"),
            "pinip.io/allocation: not valid JSON for version 1: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            err::<Allocation>(
                r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.0.0.300/24","pool":"p","claim":"c"}]}]}"#
            ),
            "pinip.io/allocation: not valid JSON for version 1: invalid IP address syntax at line 1 column 75"
        );
        assert_eq!(err::<Allocation>(""), "pinip.io/allocation: value is empty");
    }
}
