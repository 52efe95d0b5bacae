//! pinip's binder: binds each IPClaim the webhook reserved to the pod that names it (pod uid
//! and node), follows StatefulSet pods when they are recreated, releases addresses when their
//! pod or workload is gone, reclaims reservations whose pod never appeared, reports address
//! conflicts, and keeps every IPPool's status. One replica leads (a Lease); the others keep
//! warm caches. `main.rs` only wires these modules together.

pub mod args;
pub mod bind;
pub mod error;
pub mod events;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod pool_status;
pub mod reconcile;
pub mod scope;
pub mod server;
pub mod workload;

pub use error::Error;
