//! The ledger's books: the claim map and every index derived from it (counts per pool,
//! claims by owner, unbound reservations per namespace, free addresses per pool), updated
//! together from watch events. Only [`crate::ledger`] touches them, under its lock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::watcher;
use pinip_api::holder::{ClaimHolder, Record};
use pinip_api::{ClaimInfo, IPClaim, IPPool, Owner, claim_name};

use crate::free::FreeSet;
use crate::ledger::Unreadable;
use crate::pool::Pool;

/// The ledger's books. Every derived index is updated with the claim map, in one place.
#[derive(Default)]
pub(crate) struct Book {
    pub(crate) pools: BTreeMap<String, Arc<Pool>>,
    pub(crate) free: HashMap<String, FreeSet>,
    pub(crate) claims: HashMap<String, Arc<ClaimInfo>>,
    /// Claims that cannot be read.
    pub(crate) unreadable: HashMap<String, Arc<Unreadable>>,
    pub(crate) per_pool: HashMap<String, usize>,
    /// Claim names by owner, for owners that are not bare pods (only those keep sets).
    pub(crate) by_owner: HashMap<Owner, Vec<String>>,
    /// Reservations no pod has taken yet, by holder namespace.
    pub(crate) unbound: HashMap<String, usize>,
    /// While a watch relists: what it has delivered so far.
    pools_relist: Option<Vec<IPPool>>,
    claims_relist: Option<Claims>,
}

/// Readable claims and unreadable ones, by name.
type Claims = (
    HashMap<String, Arc<ClaimInfo>>,
    HashMap<String, Arc<Unreadable>>,
);

/// Reads a claim into `into`; an unreadable one is logged when first seen that way.
fn file(c: &IPClaim, into: &mut Claims, before: &HashMap<String, Arc<Unreadable>>) {
    let name = c.name_any();
    match ClaimInfo::read(c) {
        Ok(info) => {
            into.0.insert(name, Arc::new(info));
        }
        Err(why) => {
            if before.get(&name).map(|u| &u.why) != Some(&why) {
                tracing::warn!(claim = %name, reason = %why, "IPClaim cannot be read; its address stays taken and nothing else is done with it until it is fixed or deleted");
            }
            into.1.insert(name, Arc::new(Unreadable::of(c, why)));
        }
    }
}

/// What every derived index needs of a claim, readable or not.
struct Entry<'a> {
    name: &'a str,
    pool: &'a str,
    owner: &'a Owner,
    ip: Option<IpAddr>,
    unbound: bool,
}

impl<'a> Entry<'a> {
    fn of(c: &'a ClaimInfo) -> Entry<'a> {
        Entry {
            name: &c.name,
            pool: &c.pool,
            owner: &c.owner,
            ip: Some(c.ip()),
            unbound: unbound(c),
        }
    }

    fn unreadable(u: &'a Unreadable) -> Entry<'a> {
        Entry {
            name: &u.name,
            pool: &u.pool,
            owner: &u.owner,
            ip: u.ip,
            unbound: false,
        }
    }
}

/// Whether a claim is reserved for a pod that has not been bound (no uid yet).
fn unbound(c: &ClaimInfo) -> bool {
    matches!(
        c.record(),
        Record::Pod { uid: None, .. } | Record::Prefix { .. }
    )
}

impl Book {
    pub(crate) fn pool_event(&mut self, ev: watcher::Event<IPPool>) {
        match ev {
            watcher::Event::Apply(p) => {
                if let Some(l) = self.pools_relist.as_mut() {
                    l.push(p);
                } else {
                    self.apply_pool(p);
                }
            }
            watcher::Event::Delete(p) => {
                let name = p.name_any();
                self.pools.remove(&name);
                self.free.remove(&name);
            }
            watcher::Event::Init => self.pools_relist = Some(Vec::new()),
            watcher::Event::InitApply(p) => self.pools_relist.get_or_insert_default().push(p),
            watcher::Event::InitDone => {
                let listed = self.pools_relist.take().unwrap_or_default();
                let names: Vec<String> = listed.iter().map(|p| p.name_any()).collect();
                self.pools.retain(|n, _| names.contains(n));
                self.free.retain(|n, _| names.contains(n));
                for p in listed {
                    self.apply_pool(p);
                }
            }
        }
    }

    /// A pool whose spec is unchanged keeps its parse and free set (status writes are most
    /// pool events); otherwise it is parsed and its free set rebuilt from the claims.
    fn apply_pool(&mut self, p: IPPool) {
        let name = p.name_any();
        let p = Arc::new(p);
        if let Some(old) = self.pools.get(&name)
            && old.object.spec == p.spec
        {
            let pool = Pool {
                name: name.clone(),
                object: p,
                usable: old.usable.clone(),
            };
            self.pools.insert(name, Arc::new(pool));
            return;
        }
        let pool = Arc::new(Pool::parse(p));
        self.pools.insert(name.clone(), pool.clone());
        self.rebuild_free(&pool);
    }

    fn rebuild_free(&mut self, pool: &Pool) {
        let Ok(u) = &pool.usable else {
            self.free.remove(&pool.name);
            return;
        };
        let mut free = FreeSet::new(&u.usable);
        let named = self
            .claims
            .values()
            .map(|c| (c.name.as_str(), Some(c.ip())))
            .chain(self.unreadable.values().map(|u| (u.name.as_str(), u.ip)));
        for (name, ip) in named {
            if let Some(ip) = ip
                && u.contains(&ip)
                && claim_name(pool.network(), &ip) == name
            {
                free.take(&ip);
            }
        }
        self.free.insert(pool.name.clone(), free);
    }

    pub(crate) fn claim_event(&mut self, ev: watcher::Event<IPClaim>) {
        match ev {
            watcher::Event::Apply(c) => match self.claims_relist.as_mut() {
                Some(l) => file(&c, l, &self.unreadable),
                None => self.apply_claim(&c),
            },
            watcher::Event::Delete(c) => self.remove_claim(&c.name_any()),
            watcher::Event::Init => self.claims_relist = Some(Claims::default()),
            watcher::Event::InitApply(c) => {
                let before = &self.unreadable;
                file(&c, self.claims_relist.get_or_insert_default(), before);
            }
            watcher::Event::InitDone => {
                let (claims, unreadable) = self.claims_relist.take().unwrap_or_default();
                self.claims = claims;
                self.unreadable = unreadable;
                self.reaccount();
            }
        }
    }

    fn remove_claim(&mut self, name: &str) {
        if let Some(old) = self.unreadable.remove(name) {
            self.account(&Entry::unreadable(&old), false);
        }
        if let Some(old) = self.claims.remove(name) {
            self.account(&Entry::of(&old), false);
        }
    }

    fn apply_claim(&mut self, c: &IPClaim) {
        let name = c.name_any();
        let mut filed = Claims::default();
        file(c, &mut filed, &self.unreadable);
        self.remove_claim(&name);
        for (name, u) in filed.1 {
            self.account(&Entry::unreadable(&u), true);
            self.unreadable.insert(name, u);
        }
        for (name, info) in filed.0 {
            self.account(&Entry::of(&info), true);
            self.claims.insert(name, info);
        }
    }

    /// Adds a claim to (or removes it from) every derived index.
    fn account(&mut self, c: &Entry<'_>, add: bool) {
        let name = c.name;
        let count = self.per_pool.entry(c.pool.to_string()).or_default();
        if add {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_pool.remove(c.pool);
            }
        }
        if c.owner.kind != "Pod" {
            let names = self.by_owner.entry(c.owner.clone()).or_default();
            if add {
                names.push(name.to_string());
            } else {
                names.retain(|n| n != name);
                if names.is_empty() {
                    self.by_owner.remove(c.owner);
                }
            }
        }
        if c.unbound {
            let ns = &c.owner.namespace;
            let n = self.unbound.entry(ns.to_string()).or_default();
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.unbound.remove(ns);
                }
            }
        }
        let Some(ip) = c.ip else { return };
        for pool in self.pools.values() {
            if let (Ok(u), Some(free)) = (&pool.usable, self.free.get_mut(&pool.name))
                && u.contains(&ip)
                && claim_name(pool.network(), &ip) == name
            {
                if add {
                    free.take(&ip);
                } else {
                    free.give(&ip);
                }
            }
        }
    }

    /// Rebuilds every derived index from the claim map (after a relist).
    fn reaccount(&mut self) {
        self.per_pool.clear();
        self.by_owner.clear();
        self.unbound.clear();
        let claims: Vec<Arc<ClaimInfo>> = self.claims.values().cloned().collect();
        let pools: Vec<Arc<Pool>> = self.pools.values().cloned().collect();
        for p in &pools {
            if let Ok(u) = &p.usable {
                self.free.insert(p.name.clone(), FreeSet::new(&u.usable));
            }
        }
        for c in &claims {
            self.account(&Entry::of(c), true);
        }
        let unreadable: Vec<Arc<Unreadable>> = self.unreadable.values().cloned().collect();
        for u in &unreadable {
            self.account(&Entry::unreadable(u), true);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn pool(name: &str, cidr: &str) -> IPPool {
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": {"cidr": cidr}}))
        .unwrap()
    }

    pub(crate) fn claim(
        ip: &str,
        pool: &str,
        owner: serde_json::Value,
        pod: serde_json::Value,
    ) -> IPClaim {
        let addr: IpAddr = ip.parse().unwrap();
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": claim_name("", &addr),
                         "managedFields": [{"manager": "x"}],
                         "annotations": {"pinip.io/workload": "{}", "other.io/x": "y"}},
            "spec": {"pool": pool, "address": format!("{ip}/24"), "owner": owner, "pod": pod}}))
        .unwrap()
    }

    pub(crate) fn sts(ordinal: i32) -> serde_json::Value {
        json!({"kind": "StatefulSet", "namespace": "a", "name": "db", "ordinal": ordinal})
    }

    fn bare(name: &str) -> serde_json::Value {
        json!({"kind": "Pod", "namespace": "b", "name": name})
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_members_reservations_and_free_addresses_follow_events() {
        let mut b = Book::default();
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/29")));
        assert_eq!(b.free["p"].len(), 6);
        b.claim_event(watcher::Event::Apply(claim(
            "10.0.0.1",
            "p",
            sts(0),
            json!({"name": "db-0"}),
        )));
        b.claim_event(watcher::Event::Apply(claim(
            "10.0.0.2",
            "p",
            bare("x"),
            json!({"generateName": "x-"}),
        )));
        assert_eq!(b.per_pool["p"], 2);
        assert_eq!(b.free["p"].len(), 4);
        assert!(!b.free["p"].contains(&ip("10.0.0.1")));
        assert_eq!(b.unbound["a"], 1);
        assert_eq!(b.unbound["b"], 1);
        let owner: Owner = serde_json::from_value(sts(0)).unwrap();
        assert_eq!(b.by_owner[&owner], ["10-0-0-1"]);
        assert!(
            !b.by_owner.keys().any(|o| o.kind == "Pod"),
            "bare pods keep no sets"
        );
        // db-0 bound: no longer an unbound reservation.
        b.claim_event(watcher::Event::Apply(claim(
            "10.0.0.1",
            "p",
            sts(0),
            json!({"name": "db-0", "uid": "u"}),
        )));
        assert!(!b.unbound.contains_key("a"));
        assert_eq!(b.per_pool["p"], 2, "an update is not a second claim");
        b.claim_event(watcher::Event::Delete(claim(
            "10.0.0.2",
            "p",
            bare("x"),
            json!({}),
        )));
        assert_eq!(b.per_pool["p"], 1);
        assert_eq!(b.free["p"].len(), 5);
        assert!(b.unbound.is_empty());
        // A claim that cannot be read still takes the address its name stands for, counts
        // in its pool, and is kept by its owner.
        let mut bad = claim("10.0.0.3", "p", bare("y"), json!({}));
        bad.spec.address = "garbage".into();
        b.claim_event(watcher::Event::Apply(bad.clone()));
        assert!(b.unreadable.contains_key("10-0-0-3"));
        assert_eq!(b.per_pool["p"], 2);
        assert_eq!(b.free["p"].len(), 4);
        assert!(!b.free["p"].contains(&ip("10.0.0.3")));
        let mut odd = claim("10.0.0.4", "p", sts(2), json!({}));
        odd.metadata.labels = Some([("pinip.io/retain".into(), "forever".into())].into());
        b.claim_event(watcher::Event::Apply(odd.clone()));
        let owner2: Owner = serde_json::from_value(sts(2)).unwrap();
        assert_eq!(b.by_owner[&owner2], ["10-0-0-4"]);
        assert_eq!(b.per_pool["p"], 3);
        assert!(!b.free["p"].contains(&ip("10.0.0.4")));
        // A relist keeps them taken; a pool rebuilt from scratch too.
        b.claim_event(watcher::Event::Init);
        for c in [
            claim("10.0.0.1", "p", sts(0), json!({"name": "db-0", "uid": "u"})),
            bad.clone(),
            odd.clone(),
        ] {
            b.claim_event(watcher::Event::InitApply(c));
        }
        b.claim_event(watcher::Event::InitDone);
        assert_eq!(b.per_pool["p"], 3);
        assert_eq!(b.by_owner[&owner2], ["10-0-0-4"]);
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/28")));
        assert!(!b.free["p"].contains(&ip("10.0.0.3")) && !b.free["p"].contains(&ip("10.0.0.4")));
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/29")));
        b.claim_event(watcher::Event::Delete(odd));
        assert!(!b.by_owner.contains_key(&owner2));
        assert_eq!(b.per_pool["p"], 2);
        // Fixed (address and pool are immutable in the API, but the ledger does not rely on
        // it), then deleted.
        b.claim_event(watcher::Event::Apply(claim(
            "10.0.0.3",
            "p",
            bare("y"),
            json!({}),
        )));
        assert!(b.unreadable.is_empty());
        assert_eq!(b.per_pool["p"], 2);
        b.claim_event(watcher::Event::Delete(bad));
        assert_eq!(b.per_pool["p"], 1);
        assert_eq!(b.free["p"].len(), 5);
    }

    #[test]
    fn a_pool_applied_after_its_claims_starts_with_them_taken() {
        let mut b = Book::default();
        b.claim_event(watcher::Event::Apply(claim(
            "10.0.0.3",
            "p",
            bare("x"),
            json!({}),
        )));
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/29")));
        assert_eq!(b.free["p"].len(), 5);
        // A status-only change keeps the parse; a spec change rebuilds the free set.
        let mut wider = pool("p", "10.0.0.0/28");
        b.pool_event(watcher::Event::Apply(wider.clone()));
        assert_eq!(b.free["p"].len(), 13);
        wider.metadata.resource_version = Some("9".into());
        b.pool_event(watcher::Event::Apply(wider));
        assert_eq!(b.free["p"].len(), 13);
    }

    #[test]
    fn a_relist_replaces_everything_at_once() {
        let mut b = Book::default();
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/29")));
        for i in 1..=3 {
            b.claim_event(watcher::Event::Apply(claim(
                &format!("10.0.0.{i}"),
                "p",
                bare("x"),
                json!({"generateName": "x-"}),
            )));
        }
        b.claim_event(watcher::Event::Init);
        b.claim_event(watcher::Event::InitApply(claim(
            "10.0.0.5",
            "p",
            sts(1),
            json!({}),
        )));
        // Until the relist is done the old books answer.
        assert_eq!(b.per_pool["p"], 3);
        b.claim_event(watcher::Event::InitDone);
        assert_eq!(b.per_pool["p"], 1);
        assert_eq!(b.claims.len(), 1);
        assert!(b.unbound.is_empty());
        assert_eq!(b.free["p"].len(), 5);
        assert!(!b.free["p"].contains(&ip("10.0.0.5")));
        assert!(b.free["p"].contains(&ip("10.0.0.1")));
    }

    #[test]
    fn claims_of_another_network_do_not_take_the_address() {
        let mut b = Book::default();
        b.pool_event(watcher::Event::Apply(pool("p", "10.0.0.0/29")));
        let mut side = claim("10.0.0.1", "side", bare("x"), json!({}));
        side.metadata.name = Some(claim_name("net1", &ip("10.0.0.1")));
        b.claim_event(watcher::Event::Apply(side));
        assert!(b.free["p"].contains(&ip("10.0.0.1")));
    }
}
