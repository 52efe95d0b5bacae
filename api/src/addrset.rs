//! A set of addresses of one family as sorted, disjoint, inclusive intervals of integers.
//!
//! Pools can be IPv6 /64s, so nothing here enumerates a set to measure or index it: sizes are
//! sums of interval lengths and the n-th address is found by walking the intervals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Address family of a pool or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }

    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

pub fn ip_to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(*v4) as u128,
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

pub fn u128_to_ip(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals of addresses of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrSet {
    family: Family,
    spans: Vec<(u128, u128)>,
}

impl AddrSet {
    pub fn empty(family: Family) -> Self {
        AddrSet {
            family,
            spans: Vec::new(),
        }
    }

    /// Every address of `net`, including IPv4 network and broadcast addresses.
    pub fn of_net(net: &IpNet) -> Self {
        let family = Family::of_net(net);
        let start = ip_to_u128(&net.network());
        let end = ip_to_u128(&net.broadcast());
        AddrSet {
            family,
            spans: vec![(start, end)],
        }
    }

    /// The inclusive range `start..=end`; empty when `end < start`. Both must be of `family`.
    pub fn of_range(family: Family, start: u128, end: u128) -> Self {
        let spans = if start <= end {
            vec![(start, end)]
        } else {
            Vec::new()
        };
        AddrSet { family, spans }
    }

    pub fn single(ip: &IpAddr) -> Self {
        let n = ip_to_u128(ip);
        AddrSet {
            family: Family::of(ip),
            spans: vec![(n, n)],
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn spans(&self) -> &[(u128, u128)] {
        &self.spans
    }

    /// Number of addresses. An IPv6 set can hold 2^128 addresses, one more than `u128::MAX`;
    /// that single case saturates.
    pub fn len(&self) -> u128 {
        self.spans.iter().fold(0u128, |acc, (s, e)| {
            acc.saturating_add((e - s).saturating_add(1))
        })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        if Family::of(ip) != self.family {
            return false;
        }
        let n = ip_to_u128(ip);
        let i = self.spans.partition_point(|(_, e)| *e < n);
        self.spans.get(i).is_some_and(|(s, _)| *s <= n)
    }

    pub fn union(&self, other: &AddrSet) -> AddrSet {
        if other.family != self.family {
            return self.clone();
        }
        let mut all: Vec<(u128, u128)> = self.spans.iter().chain(&other.spans).copied().collect();
        all.sort_unstable();
        let mut spans: Vec<(u128, u128)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match spans.last_mut() {
                Some((_, le)) if s <= le.saturating_add(1) => *le = (*le).max(e),
                _ => spans.push((s, e)),
            }
        }
        AddrSet {
            family: self.family,
            spans,
        }
    }

    pub fn intersect(&self, other: &AddrSet) -> AddrSet {
        let mut spans = Vec::new();
        if other.family == self.family {
            let (mut i, mut j) = (0, 0);
            while i < self.spans.len() && j < other.spans.len() {
                let (a0, a1) = self.spans[i];
                let (b0, b1) = other.spans[j];
                let (s, e) = (a0.max(b0), a1.min(b1));
                if s <= e {
                    spans.push((s, e));
                }
                if a1 < b1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
        }
        AddrSet {
            family: self.family,
            spans,
        }
    }

    pub fn subtract(&self, other: &AddrSet) -> AddrSet {
        if other.family != self.family {
            return self.clone();
        }
        let mut spans = Vec::new();
        let mut j = 0;
        for &(s, e) in &self.spans {
            let mut cur = s;
            let mut done = false;
            while j < other.spans.len() && other.spans[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while k < other.spans.len() && other.spans[k].0 <= e {
                let (b0, b1) = other.spans[k];
                if b0 > cur {
                    spans.push((cur, b0 - 1));
                }
                if b1 >= e {
                    done = true;
                    break;
                }
                cur = b1 + 1;
                k += 1;
            }
            if !done {
                spans.push((cur, e));
            }
        }
        AddrSet {
            family: self.family,
            spans,
        }
    }

    /// The `index`-th address in ascending order, if `index < len()`.
    pub fn nth(&self, index: u128) -> Option<IpAddr> {
        let mut rest = index;
        for &(s, e) in &self.spans {
            let n = e - s;
            if rest <= n {
                return Some(u128_to_ip(self.family, s + rest));
            }
            rest -= n + 1;
        }
        None
    }

    /// Position of `ip` in ascending order, if it is a member.
    pub fn index_of(&self, ip: &IpAddr) -> Option<u128> {
        if !self.contains(ip) {
            return None;
        }
        let n = ip_to_u128(ip);
        let mut before = 0u128;
        for &(s, e) in &self.spans {
            if n <= e {
                return Some(before + (n - s));
            }
            before += e - s + 1;
        }
        None
    }

    /// Every member once, starting at position `offset` (taken modulo the size) and wrapping
    /// around to the first address. Lazy: callers take as many candidates as they need.
    pub fn iter_from(&self, offset: u128) -> impl Iterator<Item = IpAddr> + '_ {
        let mut segments: Vec<(u128, u128)> = Vec::with_capacity(self.spans.len() + 1);
        let len = self.len();
        if len > 0 {
            let (head, off) = self.locate(offset % len);
            let (s, e) = self.spans[head];
            segments.push((s + off, e));
            segments.extend_from_slice(&self.spans[head + 1..]);
            segments.extend_from_slice(&self.spans[..head]);
            if off > 0 {
                segments.push((s, s + off - 1));
            }
        }
        let family = self.family;
        segments.into_iter().flat_map(move |(from, to)| {
            InclusiveU128 {
                next: from,
                end: to,
                done: false,
            }
            .map(move |n| u128_to_ip(family, n))
        })
    }

    fn locate(&self, index: u128) -> (usize, u128) {
        let mut rest = index;
        for (i, &(s, e)) in self.spans.iter().enumerate() {
            if rest <= e - s {
                return (i, rest);
            }
            rest -= e - s + 1;
        }
        (0, 0)
    }

    /// First address present in both sets, if any.
    pub fn first_common(&self, other: &AddrSet) -> Option<IpAddr> {
        self.intersect(other).nth(0)
    }
}

/// `RangeInclusive<u128>` cannot represent an exhausted range ending at `u128::MAX` without
/// overflow tricks; this small iterator can.
struct InclusiveU128 {
    next: u128,
    end: u128,
    done: bool,
}

impl Iterator for InclusiveU128 {
    type Item = u128;
    fn next(&mut self) -> Option<u128> {
        if self.done {
            return None;
        }
        let n = self.next;
        if n == self.end {
            self.done = true;
        } else {
            self.next += 1;
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(spans: &[(u32, u32)]) -> AddrSet {
        spans
            .iter()
            .fold(AddrSet::empty(Family::V4), |acc, (s, e)| {
                acc.union(&AddrSet::of_range(Family::V4, *s as u128, *e as u128))
            })
    }

    fn members(set: &AddrSet) -> Vec<u128> {
        set.spans().iter().flat_map(|(s, e)| *s..=*e).collect()
    }

    fn small_spans() -> impl Strategy<Value = Vec<(u32, u32)>> {
        prop::collection::vec((0u32..200, 0u32..20).prop_map(|(s, l)| (s, s + l)), 0..6)
    }

    #[test]
    fn iter_from_wraps_around() {
        let set = v4(&[(10, 12), (20, 21)]);
        let got: Vec<u128> = set.iter_from(3).map(|ip| ip_to_u128(&ip)).collect();
        assert_eq!(got, vec![20, 21, 10, 11, 12]);
        let got: Vec<u128> = set.iter_from(1).map(|ip| ip_to_u128(&ip)).collect();
        assert_eq!(got, vec![11, 12, 20, 21, 10]);
    }

    #[test]
    fn whole_ipv6_space_saturates_and_iterates() {
        let set = AddrSet::of_range(Family::V6, 0, u128::MAX);
        assert_eq!(set.len(), u128::MAX);
        let mut it = set.iter_from(u128::MAX - 1);
        assert_eq!(it.next().map(|ip| ip_to_u128(&ip)), Some(u128::MAX - 1));
    }

    proptest! {
        #[test]
        fn set_ops_match_naive(a in small_spans(), b in small_spans()) {
            let (sa, sb) = (v4(&a), v4(&b));
            let (ma, mb) = (members(&sa), members(&sb));
            let inter: Vec<u128> = ma.iter().copied().filter(|x| mb.contains(x)).collect();
            let diff: Vec<u128> = ma.iter().copied().filter(|x| !mb.contains(x)).collect();
            prop_assert_eq!(members(&sa.intersect(&sb)), inter.clone());
            prop_assert_eq!(members(&sa.subtract(&sb)), diff);
            prop_assert_eq!(sa.first_common(&sb).map(|ip| ip_to_u128(&ip)), inter.first().copied());
        }

        #[test]
        fn iter_from_visits_each_member_once(a in small_spans(), offset in 0u128..500) {
            let set = v4(&a);
            let mut got: Vec<u128> = set.iter_from(offset).map(|ip| ip_to_u128(&ip)).collect();
            prop_assert_eq!(got.len() as u128, set.len());
            if let Some(first) = got.first() {
                prop_assert_eq!(Some(*first), set.nth(offset % set.len()).map(|ip| ip_to_u128(&ip)));
            }
            got.sort_unstable();
            prop_assert_eq!(got, members(&set));
        }

        #[test]
        fn nth_and_index_of_agree(a in small_spans()) {
            let set = v4(&a);
            for (i, m) in members(&set).into_iter().enumerate() {
                let ip = u128_to_ip(Family::V4, m);
                prop_assert_eq!(set.nth(i as u128), Some(ip));
                prop_assert_eq!(set.index_of(&ip), Some(i as u128));
                prop_assert!(set.contains(&ip));
            }
        }
    }
}
