//! The IPAM success result in each version's format, and reading the addresses back out of a
//! `prevResult` for CHECK.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use pinip_api::annotations::InterfaceAllocation;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::CniVersion;

/// An IPAM result: addresses, routes and DNS; no `interfaces` (the main plugin owns those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamResult {
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "{} gw {gw}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

impl IpamResult {
    /// The result for one entry of `pinip.io/allocation`.
    pub fn from_allocation(entry: &InterfaceAllocation) -> IpamResult {
        IpamResult {
            ips: entry
                .ips
                .iter()
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: entry
                .routes
                .iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: r.gw,
                })
                .collect(),
            dns: Dns {
                nameservers: entry.dns.nameservers.clone(),
                search: entry.dns.search.clone(),
                options: entry.dns.options.clone(),
            },
        }
    }

    /// The result JSON in the format of `version`: 0.3.x and 0.4.0 add `ips[].version`.
    pub fn render(&self, version: CniVersion) -> String {
        #[derive(Serialize)]
        struct Ip<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<&'static str>,
            address: &'a IpNet,
            #[serde(skip_serializing_if = "Option::is_none")]
            gateway: &'a Option<IpAddr>,
        }
        #[derive(Serialize)]
        struct Rendered<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'static str,
            ips: Vec<Ip<'a>>,
            #[serde(skip_serializing_if = "<[Route]>::is_empty")]
            routes: &'a [Route],
            #[serde(skip_serializing_if = "Dns::is_empty")]
            dns: &'a Dns,
        }
        let ips = self
            .ips
            .iter()
            .map(|ip| Ip {
                version: version.ips_carry_version().then_some(match ip.address {
                    IpNet::V4(_) => "4",
                    IpNet::V6(_) => "6",
                }),
                address: &ip.address,
                gateway: &ip.gateway,
            })
            .collect();
        let r = Rendered {
            cni_version: version.as_str(),
            ips,
            routes: &self.routes,
            dns: &self.dns,
        };
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_string(&r).unwrap_or_default()
    }
}

/// The addresses in `prevResult` that belong to the container interface `ifname`: every
/// `ips[]` entry whose `interface` index is absent, out of range, or names `ifname`.
pub fn prev_result_ips(prev: &Map<String, Value>, ifname: &str) -> Result<Vec<IpConfig>, CniError> {
    let bad = |field: String, reason: &str| CniError::InvalidConfig {
        field,
        reason: reason.to_string(),
        hint: "prevResult must be the result the runtime received from ADD".to_string(),
    };
    let interfaces: Vec<Option<&str>> = match prev.get("interfaces") {
        Some(Value::Array(ifs)) => ifs
            .iter()
            .map(|i| i.get("name").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    };
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(ips)) => ips,
        Some(_) => return Err(bad("prevResult.ips".into(), "must be an array")),
    };
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let belongs = match ip.get("interface").and_then(Value::as_u64) {
            None => true,
            Some(idx) => match usize::try_from(idx).ok().and_then(|x| interfaces.get(x)) {
                Some(Some(name)) => *name == ifname,
                _ => true,
            },
        };
        if !belongs {
            continue;
        }
        let address = ip
            .get("address")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpNet>().ok())
            .ok_or_else(|| {
                bad(
                    format!("prevResult.ips[{i}].address"),
                    "must be an address in CIDR notation",
                )
            })?;
        let gateway = match ip.get("gateway") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(g) => Some(
                g.as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| {
                        bad(
                            format!("prevResult.ips[{i}].gateway"),
                            "must be an IP address",
                        )
                    })?,
            ),
        };
        out.push(IpConfig { address, gateway });
    }
    Ok(out)
}

/// `a, b` for messages; `none` when empty.
pub fn describe(ips: &[IpConfig]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(json: &str) -> InterfaceAllocation {
        serde_json::from_str(json).unwrap()
    }

    const DUAL: &str = r#"{"name":"eth0","ips":[
        {"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"},
        {"address":"fd00::5/64","pool":"blue6","claim":"fd00-0000-0000-0000-0000-0000-0000-0005"}],
        "routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"},{"dst":"fd00:1::/64"}],
        "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"],"options":["ndots:5"]}}"#;

    #[test]
    fn renders_each_version() {
        let r = IpamResult::from_allocation(&entry(DUAL));
        let old = r#"{"cniVersion":"VER","ips":[{"version":"4","address":"10.20.0.5/24","gateway":"10.20.0.1"},{"version":"6","address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"},{"dst":"fd00:1::/64"}],"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"],"options":["ndots:5"]}}"#;
        let new = r#"{"cniVersion":"VER","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1"},{"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"},{"dst":"fd00:1::/64"}],"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"],"options":["ndots:5"]}}"#;
        for v in CniVersion::SUPPORTED {
            let want = if v.ips_carry_version() { old } else { new };
            assert_eq!(r.render(v), want.replace("VER", v.as_str()), "{v}");
            // An IPAM result never has interfaces.
            assert!(!r.render(v).contains("interface"));
        }
    }

    #[test]
    fn renders_minimal_entry() {
        let r = IpamResult::from_allocation(&entry(
            r#"{"name":"eth0","ips":[{"address":"10.20.0.5/24","pool":"p","claim":"c"}]}"#,
        ));
        assert_eq!(
            r.render(CniVersion::V1_0_0),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.20.0.5/24"}]}"#
        );
    }

    #[test]
    fn prev_result_ips_filters_by_interface() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "10.20.0.5/24", "gateway": "10.20.0.1", "interface": 2},
                {"address": "10.99.0.1/24", "interface": 0},
                {"version": "6", "address": "fd00::5/64", "gateway": ""}
            ]
        });
        let ips = prev_result_ips(prev.as_object().unwrap(), "eth0").unwrap();
        assert_eq!(describe(&ips), "10.20.0.5/24 gw 10.20.0.1, fd00::5/64");
        assert_eq!(describe(&[]), "none");
        assert!(
            prev_result_ips(json!({}).as_object().unwrap(), "eth0")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn prev_result_errors() {
        let e = |v: Value| {
            prev_result_ips(v.as_object().unwrap(), "eth0")
                .unwrap_err()
                .to_json("1.0.0")
        };
        assert_eq!(
            e(json!({"ips": {}})),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult.ips: must be an array","details":"prevResult must be the result the runtime received from ADD"}"#
        );
        assert_eq!(
            e(json!({"ips": [{"address": "10.0.0.300/24"}]})),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult.ips[0].address: must be an address in CIDR notation","details":"prevResult must be the result the runtime received from ADD"}"#
        );
        assert_eq!(
            e(json!({"ips": [{"address": "10.0.0.3/24", "gateway": 5}]})),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult.ips[0].gateway: must be an IP address","details":"prevResult must be the result the runtime received from ADD"}"#
        );
    }
}
