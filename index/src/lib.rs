//! The middle layer between pinip's contract (`pinip-api`) and its binaries: what the webhook
//! and the binder both need to know about the cluster, decided in one place.
//!
//! - [`ledger`]: pools (parsed once, [`pool`]) and claims, indexed (in its books) for every question a
//!   decision asks: by name, per pool, by owner, unbound per namespace, free addresses
//!   ([`free`]);
//! - [`workloads`]: watch-fed caches of StatefulSets, ReplicaSets and Deployments;
//! - [`resolve`]: the verified owner of a pod (caches first, one GET for what they miss);
//! - [`set`]: the bound of a workload's address set (`retain: app`);
//! - [`confirm`]: whether a claim is free to change hands, asked of the API server right
//!   before the write that depends on it.

mod book;
pub mod confirm;
pub mod dynamic;
pub mod free;
pub mod ledger;
pub mod pool;
pub mod resolve;
pub mod set;
pub mod watch;
pub mod workloads;

pub use confirm::{confirm_free, confirm_holder};
pub use ledger::Ledger;
pub use pool::Pool;
pub use resolve::Resolver;
pub use workloads::Workloads;
