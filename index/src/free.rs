//! The free addresses of one pool, kept current as claims come and go: the pool's usable
//! spans minus its claimed addresses, as disjoint inclusive spans. Taking or giving back an
//! address splits or merges at most two spans, and the search for a free address starts at
//! any point and never looks at a claimed one, however full the pool.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;

use pinip_api::addrset::{AddrSet, Family, ip_to_u128, u128_to_ip};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeSet {
    family: Family,
    /// start → end (inclusive); disjoint and never adjacent.
    spans: BTreeMap<u128, u128>,
    /// Number of free addresses (saturates only for a whole IPv6 space).
    len: u128,
}

impl FreeSet {
    /// Every address of `usable` free.
    pub fn new(usable: &AddrSet) -> FreeSet {
        FreeSet {
            family: usable.family(),
            spans: usable.spans().iter().copied().collect(),
            len: usable.len(),
        }
    }

    pub fn len(&self) -> u128 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The span holding `n`, if `n` is free.
    fn span_of(&self, n: u128) -> Option<(u128, u128)> {
        self.spans
            .range(..=n)
            .next_back()
            .filter(|(_, e)| **e >= n)
            .map(|(s, e)| (*s, *e))
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && self.span_of(ip_to_u128(ip)).is_some()
    }

    /// Marks `ip` claimed; false when it was not free.
    pub fn take(&mut self, ip: &IpAddr) -> bool {
        if Family::of(ip) != self.family {
            return false;
        }
        let n = ip_to_u128(ip);
        let Some((s, e)) = self.span_of(n) else {
            return false;
        };
        self.spans.remove(&s);
        if s < n {
            self.spans.insert(s, n - 1);
        }
        if n < e {
            self.spans.insert(n + 1, e);
        }
        self.len = self.len.saturating_sub(1);
        true
    }

    /// Marks `ip` free again; the caller knows it is one of the pool's usable addresses.
    /// False when it was free already.
    pub fn give(&mut self, ip: &IpAddr) -> bool {
        if Family::of(ip) != self.family {
            return false;
        }
        let n = ip_to_u128(ip);
        if self.span_of(n).is_some() {
            return false;
        }
        let mut start = n;
        let mut end = n;
        if let Some(prev) = n.checked_sub(1)
            && let Some((s, _)) = self.span_of(prev)
        {
            self.spans.remove(&s);
            start = s;
        }
        if let Some(next) = n.checked_add(1)
            && let Some(e) = self.spans.remove(&next)
        {
            end = e;
        }
        self.spans.insert(start, end);
        self.len = self.len.saturating_add(1);
        true
    }

    /// Free addresses in ascending order from `from` (itself, if free), wrapping around to
    /// the lowest: at most `limit` of them that `skip` does not reject, looking at no more
    /// than `budget` free addresses in all. Claimed addresses cost nothing to pass over.
    pub fn candidates(
        &self,
        from: &IpAddr,
        limit: usize,
        budget: usize,
        mut skip: impl FnMut(&IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let mut out = Vec::new();
        let mut seen = 0usize;
        let n = if Family::of(from) == self.family {
            ip_to_u128(from)
        } else {
            0
        };
        // The span holding `n` is visited from `n`, then the spans above it, then from the
        // lowest span up to just below `n`. Lazily: a search touches only what it returns.
        let head = self.span_of(n);
        let first = head.map(|(_, e)| (n, e));
        let above = self
            .spans
            .range((Bound::Excluded(n), Bound::Unbounded))
            .map(|(s, e)| (*s, *e));
        let below = self.spans.range(..=n).filter_map(move |(s, e)| match head {
            Some((hs, _)) if hs == *s => (n > *s).then(|| (*s, n - 1)),
            _ => Some((*s, *e)),
        });
        for (s, e) in first.into_iter().chain(above).chain(below) {
            let mut a = s;
            loop {
                if out.len() >= limit || seen >= budget {
                    return out;
                }
                seen += 1;
                let ip = u128_to_ip(self.family, a);
                if !skip(&ip) {
                    out.push(ip);
                }
                if a == e {
                    break;
                }
                a += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    fn set(spans: &[(u32, u32)]) -> AddrSet {
        spans
            .iter()
            .map(|(s, e)| AddrSet::of_range(Family::V4, *s as u128, *e as u128))
            .fold(AddrSet::empty(Family::V4), |a, b| a.union(&b))
    }

    #[test]
    fn take_and_give_split_and_merge_spans() {
        let mut f = FreeSet::new(&set(&[(10, 20)]));
        assert_eq!(f.len(), 11);
        assert!(f.take(&ip(15)));
        assert!(!f.take(&ip(15)), "taken twice");
        assert!(!f.take(&ip(30)), "outside");
        assert_eq!(f.spans.len(), 2);
        assert!(f.take(&ip(10)) && f.take(&ip(20)));
        assert_eq!(f.len(), 8);
        assert!(f.give(&ip(15)));
        assert!(!f.give(&ip(15)), "given twice");
        assert_eq!(f.spans, BTreeMap::from([(11, 19)]));
        assert!(f.give(&ip(10)) && f.give(&ip(20)));
        assert_eq!(f, FreeSet::new(&set(&[(10, 20)])));
    }

    #[test]
    fn candidates_start_anywhere_wrap_and_skip() {
        let mut f = FreeSet::new(&set(&[(1, 5), (10, 12)]));
        f.take(&ip(3));
        let all = |from: u32| f.candidates(&ip(from), 100, 100, |_| false);
        assert_eq!(all(4), [4, 5, 10, 11, 12, 1, 2].map(ip));
        assert_eq!(all(3), [4, 5, 10, 11, 12, 1, 2].map(ip));
        assert_eq!(all(1), [1, 2, 4, 5, 10, 11, 12].map(ip));
        assert_eq!(all(7), [10, 11, 12, 1, 2, 4, 5].map(ip));
        assert_eq!(all(99), [1, 2, 4, 5, 10, 11, 12].map(ip));
        assert_eq!(all(11), [11, 12, 1, 2, 4, 5, 10].map(ip));
        assert_eq!(
            f.candidates(&ip(4), 2, 100, |a| *a == ip(5)),
            [4, 10].map(ip)
        );
        assert_eq!(f.candidates(&ip(4), 100, 3, |_| false), [4, 5, 10].map(ip));
    }

    #[test]
    fn a_nearly_full_pool_finds_its_last_address_in_one_step() {
        // A /16 with every address but one claimed: the one free address is the first
        // candidate from anywhere.
        let usable = AddrSet::of_range(Family::V4, 0x0a32_0000, 0x0a32_ffff);
        let mut f = FreeSet::new(&usable);
        for n in 0x0a32_0000u32..=0x0a32_ffff {
            if n != 0x0a32_7777 {
                f.take(&ip(n));
            }
        }
        let mut looked = 0;
        let c = f.candidates(&ip(0x0a32_0001), 1, 10, |_| {
            looked += 1;
            false
        });
        assert_eq!((c, looked), (vec![ip(0x0a32_7777)], 1));
    }

    proptest! {
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..200), from in 0u32..70) {
            let usable = set(&[(0, 20), (30, 50), (55, 63)]);
            let mut f = FreeSet::new(&usable);
            let mut model: BTreeSet<u32> = (0..64).filter(|n| usable.contains(&ip(*n))).collect();
            for (take, n) in ops {
                if !usable.contains(&ip(n)) { continue; }
                if take {
                    prop_assert_eq!(f.take(&ip(n)), model.remove(&n));
                } else {
                    prop_assert_eq!(f.give(&ip(n)), model.insert(n));
                }
                prop_assert_eq!(f.len(), model.len() as u128);
            }
            let expect: Vec<IpAddr> = model.range(from..).chain(model.range(..from)).map(|n| ip(*n)).collect();
            prop_assert_eq!(f.candidates(&ip(from), 1000, 1000, |_| false), expect);
        }
    }
}
