//! The IPClaim name of an address: deterministic, a valid DNS-1123 subdomain, and reversible.
//!
//! - IPv4 `10.20.0.5` → `10-20-0-5`
//! - IPv6 `fd00::5` → `fd00-0000-0000-0000-0000-0000-0000-0005` (fixed expanded form, so every
//!   address has exactly one name)
//! - with a pool `network` (pools of separate networks may reuse a CIDR): `net1.10-20-0-5`.
//!
//! The address part never contains a dot, so the network is everything before the last dot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{name:?} is not an IPClaim name (expected e.g. 10-20-0-5, fd00-0000-…-0005 or net1.10-20-0-5)"
)]
pub struct ClaimNameError {
    pub name: String,
}

/// The claim name for `ip` in `network` (empty for the default network).
pub fn claim_name(network: &str, ip: &IpAddr) -> String {
    let addr = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{a}-{b}-{c}-{d}")
        }
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join("-"),
    };
    if network.is_empty() {
        addr
    } else {
        format!("{network}.{addr}")
    }
}

/// The network and address a claim name stands for.
pub fn parse_claim_name(name: &str) -> Result<(String, IpAddr), ClaimNameError> {
    let err = || ClaimNameError {
        name: name.to_string(),
    };
    let (network, addr) = match name.rsplit_once('.') {
        Some((n, a)) if !n.is_empty() => (n, a),
        Some(_) => return Err(err()),
        None => ("", name),
    };
    let parts: Vec<&str> = addr.split('-').collect();
    let ip = match parts.len() {
        4 => {
            let mut o = [0u8; 4];
            for (i, p) in parts.iter().enumerate() {
                // Exactly the canonical decimal form, so one address has one name.
                let v: u8 = p.parse().map_err(|_| err())?;
                if v.to_string() != *p {
                    return Err(err());
                }
                o[i] = v;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        8 => {
            let mut s = [0u16; 8];
            for (i, p) in parts.iter().enumerate() {
                if p.len() != 4 || !p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(err());
                }
                s[i] = u16::from_str_radix(p, 16).map_err(|_| err())?;
            }
            IpAddr::V6(Ipv6Addr::from(s))
        }
        _ => return Err(err()),
    };
    Ok((network.to_string(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(claim_name("", &"10.20.0.5".parse().unwrap()), "10-20-0-5");
        assert_eq!(
            claim_name("", &"fd00::5".parse().unwrap()),
            "fd00-0000-0000-0000-0000-0000-0000-0005"
        );
        assert_eq!(
            claim_name("net1", &"10.20.0.5".parse().unwrap()),
            "net1.10-20-0-5"
        );
    }

    #[test]
    fn rejects_non_names() {
        for bad in [
            "10-20-0",
            "10-20-0-256",
            "10-20-0-05",
            ".10-20-0-5",
            "fd00-0-0-0-0-0-0-5",
            "FD00-0000-0000-0000-0000-0000-0000-0005",
            "x",
        ] {
            assert_eq!(
                parse_claim_name(bad),
                Err(ClaimNameError { name: bad.into() }),
                "{bad}"
            );
        }
        assert_eq!(
            ClaimNameError { name: "x".into() }.to_string(),
            r#""x" is not an IPClaim name (expected e.g. 10-20-0-5, fd00-0000-…-0005 or net1.10-20-0-5)"#
        );
    }

    fn network() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z]([a-z0-9-]{0,20}[a-z0-9])?"]
    }

    proptest! {
        #[test]
        fn v4_round_trip(n in any::<u32>(), net in network()) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            let name = claim_name(&net, &ip);
            prop_assert!(crate::names::is_dns1123_subdomain(&name), "{}", name);
            prop_assert_eq!(parse_claim_name(&name), Ok((net, ip)));
        }

        #[test]
        fn v6_round_trip(n in any::<u128>(), net in network()) {
            let ip = IpAddr::V6(Ipv6Addr::from(n));
            let name = claim_name(&net, &ip);
            prop_assert!(crate::names::is_dns1123_subdomain(&name), "{}", name);
            prop_assert_eq!(parse_claim_name(&name), Ok((net, ip)));
        }
    }
}
