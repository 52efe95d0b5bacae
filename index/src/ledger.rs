//! The ledger: which pools exist, which addresses are claimed, and by whom — fed by the
//! IPPool and IPClaim watches, read by every decision of the webhook and the binder.
//!
//! Everything a decision asks is answered without a pass over the claims: claims by name,
//! the number per pool, the members of each workload's retained set, the reservations per
//! namespace that no pod has taken yet, and each pool's free addresses ([`FreeSet`]). Pools
//! are parsed once, when their spec changes; claims once, when they change, into
//! [`ClaimInfo`] (typed, and about a third of the API object's size). A claim that cannot be
//! read (a garbage address or an unknown label value, after a version skew or a hand edit) is
//! kept as an [`Unreadable`]: it still exists, so it is never "missing"; its address (from its
//! name) stays taken and counted in its pool, its owner still keeps it, and it is logged once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pinip_api::holder::{ClaimHolder, Record};
use pinip_api::{ClaimInfo, IPClaim, IPPool, Owner, claim_name, parse_claim_name};
use tokio::sync::{Notify, watch};

use crate::free::FreeSet;
use crate::pool::Pool;

/// A claim event, as the ledger saw it (after its own books are updated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimEvent<'a> {
    /// Created or changed.
    Applied(&'a str),
    Deleted(&'a str),
    /// A relist is done: the books were replaced at once, so any claim may have changed
    /// (including ones created and deleted while the watch was down).
    Relisted,
}

type OnClaim = Arc<dyn Fn(ClaimEvent<'_>) + Send + Sync>;

/// What a ledger's owner hears of its watches.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Poked on every pool or claim event.
    pub changed: Option<Arc<Notify>>,
    /// Called on every claim event.
    pub on_claim: Option<OnClaim>,
}

/// A claim that exists but cannot be read: what is known of it without reading its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub name: String,
    pub why: String,
    pub pool: String,
    pub owner: Owner,
    /// The address its name stands for (the name is the lock, whatever the fields say).
    pub ip: Option<IpAddr>,
}

impl Unreadable {
    fn of(c: &IPClaim, why: String) -> Unreadable {
        let name = c.name_any();
        let ip = parse_claim_name(&name).ok().map(|(_, ip)| ip);
        Unreadable {
            why,
            pool: c.spec.pool.clone(),
            owner: c.spec.owner.clone(),
            ip,
            name,
        }
    }
}

const POOLS_LISTED: u8 = 1;
const CLAIMS_LISTED: u8 = 2;

#[derive(Clone)]
pub struct Ledger {
    book: Arc<RwLock<Book>>,
    listed: watch::Receiver<u8>,
}

impl Ledger {
    /// Starts the IPPool and IPClaim watches (they run until the process exits, retrying
    /// with backoff).
    pub fn start(client: &Client, hooks: Hooks) -> Ledger {
        let book = Arc::new(RwLock::new(Book::default()));
        let (listed_tx, listed) = watch::channel(0u8);
        let listed_tx = Arc::new(listed_tx);
        let cfg = watcher::Config::default();
        let pools = watcher(Api::<IPPool>::all(client.clone()), cfg.clone()).default_backoff();
        let claims = watcher(Api::<IPClaim>::all(client.clone()), cfg).default_backoff();
        {
            let (book, hooks, listed_tx) = (book.clone(), hooks.clone(), listed_tx.clone());
            tokio::spawn(async move {
                let mut pools = std::pin::pin!(pools);
                while let Some(ev) = pools.next().await {
                    match ev {
                        Ok(ev) => {
                            let done = matches!(ev, watcher::Event::InitDone);
                            book.write().expect("ledger lock").pool_event(ev);
                            if done {
                                listed_tx.send_modify(|l| *l |= POOLS_LISTED);
                            }
                            if let Some(c) = &hooks.changed {
                                c.notify_one();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(watch = "ippools", error = %e, "watch error; retrying")
                        }
                    }
                }
            });
        }
        tokio::spawn({
            let book = book.clone();
            async move {
                let mut claims = std::pin::pin!(claims);
                while let Some(ev) = claims.next().await {
                    match ev {
                        Ok(ev) => {
                            let done = matches!(ev, watcher::Event::InitDone);
                            // A relisted claim is not in the books until the relist is done:
                            // it is announced by `Relisted`, not one by one.
                            let name = match &ev {
                                watcher::Event::Apply(c) | watcher::Event::Delete(c) => {
                                    Some(c.name_any())
                                }
                                _ => None,
                            };
                            let deleted = matches!(ev, watcher::Event::Delete(_));
                            book.write().expect("ledger lock").claim_event(ev);
                            if done {
                                listed_tx.send_modify(|l| *l |= CLAIMS_LISTED);
                            }
                            if let Some(on) = &hooks.on_claim {
                                match &name {
                                    Some(name) if deleted => on(ClaimEvent::Deleted(name)),
                                    Some(name) => on(ClaimEvent::Applied(name)),
                                    None if done => on(ClaimEvent::Relisted),
                                    None => {}
                                }
                            }
                            if let Some(c) = &hooks.changed {
                                c.notify_one();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(watch = "ipclaims", error = %e, "watch error; retrying")
                        }
                    }
                }
            }
        });
        Ledger { book, listed }
    }

    /// A ledger of exactly these pools and claims, fed by nothing (for tests).
    pub fn of(pools: Vec<IPPool>, claims: Vec<IPClaim>) -> Ledger {
        let mut book = Book::default();
        for p in pools {
            book.pool_event(watcher::Event::Apply(p));
        }
        for c in claims {
            book.claim_event(watcher::Event::Apply(c));
        }
        let (_, listed) = watch::channel(POOLS_LISTED | CLAIMS_LISTED);
        Ledger {
            book: Arc::new(RwLock::new(book)),
            listed,
        }
    }

    /// Waits until both watches have listed once (any number of tasks may wait).
    pub async fn wait_ready(&self) {
        let mut listed = self.listed.clone();
        let _ = listed
            .wait_for(|l| *l == POOLS_LISTED | CLAIMS_LISTED)
            .await;
    }

    pub fn is_ready(&self) -> bool {
        *self.listed.borrow() == POOLS_LISTED | CLAIMS_LISTED
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book.read().expect("ledger lock")
    }

    /// Every pool, by name.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.read().pools.values().cloned().collect()
    }

    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.read().pools.get(name).cloned()
    }

    pub fn claim(&self, name: &str) -> Option<Arc<ClaimInfo>> {
        self.read().claims.get(name).cloned()
    }

    /// Every readable claim (a snapshot).
    pub fn claims(&self) -> Vec<Arc<ClaimInfo>> {
        self.read().claims.values().cloned().collect()
    }

    /// Names of the claims that exist but cannot be read.
    pub fn unreadable(&self) -> HashSet<String> {
        self.read().unreadable.keys().cloned().collect()
    }

    /// The claims of `pool` that cannot be read.
    pub fn unreadable_of(&self, pool: &str) -> Vec<Arc<Unreadable>> {
        let mut v: Vec<Arc<Unreadable>> = self
            .read()
            .unreadable
            .values()
            .filter(|u| u.pool == pool)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The claims `owner` keeps in `pool` that cannot be read.
    pub fn unreadable_members(&self, owner: &Owner, pool: &str) -> Vec<Arc<Unreadable>> {
        let book = self.read();
        let mut v: Vec<Arc<Unreadable>> = book
            .by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|n| book.unreadable.get(n))
            .filter(|u| u.pool == pool)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The claims of `pool` (a pass over all claims: for pool changes, not pod decisions).
    pub fn claims_of(&self, pool: &str) -> Vec<Arc<ClaimInfo>> {
        let mut v: Vec<Arc<ClaimInfo>> = self
            .read()
            .claims
            .values()
            .filter(|c| c.pool == pool)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// How many claims name `pool` (unreadable ones included).
    pub fn claimed(&self, pool: &str) -> usize {
        self.read().per_pool.get(pool).copied().unwrap_or(0)
    }

    /// How many of `pool`'s usable addresses no claim holds (`None`: unknown or invalid pool).
    pub fn free(&self, pool: &str) -> Option<u128> {
        self.read().free.get(pool).map(FreeSet::len)
    }

    /// The claims `owner` (a workload, or a StatefulSet ordinal) keeps in `pool`, by name.
    pub fn members(&self, owner: &Owner, pool: &str) -> Vec<Arc<ClaimInfo>> {
        let book = self.read();
        let mut v: Vec<Arc<ClaimInfo>> = book
            .by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|n| book.claims.get(n))
            .filter(|c| c.pool == pool)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Whether `owner` keeps any claim in `pool` (readable or not).
    pub fn holds(&self, owner: &Owner, pool: &str) -> bool {
        let book = self.read();
        book.by_owner.get(owner).into_iter().flatten().any(|n| {
            book.claims.get(n).map(|c| c.pool.as_str()) == Some(pool)
                || book.unreadable.get(n).map(|u| u.pool.as_str()) == Some(pool)
        })
    }

    /// Claims reserved for pods of `ns` that no pod has taken yet (no pod uid recorded).
    pub fn unbound_reservations(&self, ns: &str) -> usize {
        self.read().unbound.get(ns).copied().unwrap_or(0)
    }

    /// Up to `limit` free addresses of `pool` from `from` on (wrapping around) that `skip`
    /// does not reject, looking at no more than `budget` free addresses.
    pub fn free_candidates(
        &self,
        pool: &str,
        from: &IpAddr,
        limit: usize,
        budget: usize,
        skip: impl FnMut(&IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        self.read()
            .free
            .get(pool)
            .map(|f| f.candidates(from, limit, budget, skip))
            .unwrap_or_default()
    }

    /// Number of claims known.
    pub fn len(&self) -> usize {
        self.read().claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ledger's books. Every derived index is updated with the claim map, in one place.
#[derive(Default)]
struct Book {
    pools: BTreeMap<String, Arc<Pool>>,
    free: HashMap<String, FreeSet>,
    claims: HashMap<String, Arc<ClaimInfo>>,
    /// Claims that cannot be read.
    unreadable: HashMap<String, Arc<Unreadable>>,
    per_pool: HashMap<String, usize>,
    /// Claim names by owner, for owners that are not bare pods (only those keep sets).
    by_owner: HashMap<Owner, Vec<String>>,
    /// Reservations no pod has taken yet, by holder namespace.
    unbound: HashMap<String, usize>,
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
    fn pool_event(&mut self, ev: watcher::Event<IPPool>) {
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

    fn claim_event(&mut self, ev: watcher::Event<IPClaim>) {
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
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, cidr: &str) -> IPPool {
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": {"cidr": cidr}}))
        .unwrap()
    }

    fn claim(ip: &str, pool: &str, owner: serde_json::Value, pod: serde_json::Value) -> IPClaim {
        let addr: IpAddr = ip.parse().unwrap();
        serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": claim_name("", &addr),
                         "managedFields": [{"manager": "x"}],
                         "annotations": {"pinip.io/workload": "{}", "other.io/x": "y"}},
            "spec": {"pool": pool, "address": format!("{ip}/24"), "owner": owner, "pod": pod}}))
        .unwrap()
    }

    fn sts(ordinal: i32) -> serde_json::Value {
        json!({"kind": "StatefulSet", "namespace": "a", "name": "db", "ordinal": ordinal})
    }

    fn bare(name: &str) -> serde_json::Value {
        json!({"kind": "Pod", "namespace": "b", "name": name})
    }

    fn ip(s: &str) -> IpAddr {
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

    #[tokio::test]
    async fn the_ledger_answers_from_its_books() {
        let l = Ledger::of(
            vec![pool("p", "10.0.0.0/29")],
            vec![
                claim("10.0.0.1", "p", sts(0), json!({})),
                claim("10.0.0.4", "p", sts(1), json!({})),
            ],
        );
        l.wait_ready().await;
        assert_eq!(l.claimed("p"), 2);
        assert_eq!(l.free("p"), Some(4));
        let owner: Owner = serde_json::from_value(sts(1)).unwrap();
        assert!(l.holds(&owner, "p") && !l.holds(&owner, "q"));
        assert_eq!(l.members(&owner, "p")[0].name, "10-0-0-4");
        assert_eq!(
            l.free_candidates("p", &ip("10.0.0.4"), 3, 10, |_| false),
            [ip("10.0.0.5"), ip("10.0.0.6"), ip("10.0.0.2")]
        );
        assert_eq!(l.pools()[0].usable.as_ref().unwrap().size(), 6);
    }
}
