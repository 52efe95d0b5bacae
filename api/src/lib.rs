//! pinip's shared contract: the `IPPool` and `IPClaim` custom resources, the annotation
//! contract between webhook, binder and CNI plugin, and address-range arithmetic.
//! No Kubernetes client calls live here; every other crate may depend on this one.

pub mod addrset;
pub mod annotations;
pub mod claim;
pub mod claim_info;
pub mod claim_name;
pub mod crd;
pub mod duration;
pub mod holder;
pub mod names;
pub mod owner;
pub mod pool;
mod schema;
pub mod set;
pub mod workload;

pub use addrset::{AddrSet, Family};
pub use claim::{ClaimPhase, IPClaim, IPClaimSpec, IPClaimStatus, Owner, PodRef};
pub use claim_info::ClaimInfo;
pub use claim_name::{claim_name, parse_claim_name};
pub use pool::{IPPool, IPPoolSpec, IPPoolStatus, PoolError, UsablePool};
