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

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pinip_api::{ClaimInfo, IPClaim, IPPool, Owner, parse_claim_name};
use tokio::sync::{Notify, watch};

use crate::book::Book;
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
    pub(crate) fn of(c: &IPClaim, why: String) -> Unreadable {
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
        in_pool(&self.read().unreadable, pool)
    }

    /// The claims `owner` keeps in `pool` that cannot be read.
    pub fn unreadable_members(&self, owner: &Owner, pool: &str) -> Vec<Arc<Unreadable>> {
        let book = self.read();
        kept_by(&book.by_owner, &book.unreadable, owner, pool)
    }

    /// The claims of `pool` (a pass over all claims: for pool changes, not pod decisions).
    pub fn claims_of(&self, pool: &str) -> Vec<Arc<ClaimInfo>> {
        in_pool(&self.read().claims, pool)
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
        kept_by(&book.by_owner, &book.claims, owner, pool)
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

/// What the ledger files under a claim's name, readable or not.
trait Filed {
    fn name(&self) -> &str;
    fn pool(&self) -> &str;
}

impl Filed for ClaimInfo {
    fn name(&self) -> &str {
        &self.name
    }
    fn pool(&self) -> &str {
        &self.pool
    }
}

impl Filed for Unreadable {
    fn name(&self) -> &str {
        &self.name
    }
    fn pool(&self) -> &str {
        &self.pool
    }
}

fn by_name<T: Filed>(mut v: Vec<Arc<T>>) -> Vec<Arc<T>> {
    v.sort_by(|a, b| a.name().cmp(b.name()));
    v
}

/// The entries of `filed` in `pool`, by name.
fn in_pool<T: Filed>(filed: &HashMap<String, Arc<T>>, pool: &str) -> Vec<Arc<T>> {
    by_name(
        filed
            .values()
            .filter(|e| e.pool() == pool)
            .cloned()
            .collect(),
    )
}

/// The entries of `filed` that `owner` keeps in `pool`, by name.
fn kept_by<T: Filed>(
    by_owner: &HashMap<Owner, Vec<String>>,
    filed: &HashMap<String, Arc<T>>,
    owner: &Owner,
    pool: &str,
) -> Vec<Arc<T>> {
    by_name(
        by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|n| filed.get(n))
            .filter(|e| e.pool() == pool)
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::tests::{claim, ip, pool, sts};
    use serde_json::json;

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
