//! Why an admission is denied. Each reason reads as the end of a sentence that begins with the
//! pod and pool (see `mutate::deny_message`), and has a short label for metrics.

use std::net::IpAddr;

use pinip_api::set::SetBound;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Denial {
    #[error("{0}")]
    Annotation(String),
    #[error("pool {pool} does not exist")]
    UnknownPool { pool: String },
    #[error(
        "this namespace may not use pool {pool} (its namespaceSelector does not admit the namespace)"
    )]
    NamespaceNotAllowed { pool: String },
    #[error("pools {pools} are of the same address family; name one pool per family")]
    SameFamilyPools { pools: String },
    #[error(
        "address {ip} is not one pool {pool} hands out (outside its ranges, excluded, or its gateway)"
    )]
    AddressNotInPool { pool: String, ip: IpAddr },
    #[error("no pool this namespace may use contains {ip}")]
    NoPoolForAddress { ip: IpAddr },
    #[error(
        "pool {pool} belongs to network {network:?}; pinip writes allocations for the pod's primary interface only, so only pools of the primary network (network \"\") can be used"
    )]
    OtherNetwork { pool: String, network: String },
    #[error("no default pool: {why}")]
    NoDefaultPool { why: String },
    #[error("pool {pool} is invalid: {reason}")]
    BadPool { pool: String, reason: String },
    #[error("pool {pool} is exhausted: all {size} addresses are in use or cooling down")]
    Exhausted { pool: String, size: u128 },
    #[error("address {ip} belongs to {holder}")]
    AddressHeld { ip: IpAddr, holder: String },
    #[error(
        "address {ip} (IPClaim {claim}) is held by {held}; a fixed address serves one pod at a time: give the workload as many addresses as pods it runs at once, or roll it out with strategy Recreate or maxSurge 0"
    )]
    ClaimHeld {
        ip: IpAddr,
        claim: String,
        held: String,
    },
    #[error(
        "namespace {namespace} already holds {count} reservations whose pods do not exist (yet); the limit is {limit}: pods refused after admission leave reservations that are reclaimed within about a minute, try again then"
    )]
    TooManyReservations {
        namespace: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "the address set of {set} in pool {pool} holds {members} addresses, its bound is {bound}, and no member is free (each is held by a pod that still exists, running or terminating, or is being admitted); the pod waits: it is admitted when a member is released (raise pinip.io/set-size on the pod template to allow more)"
    )]
    SetFull {
        set: String,
        pool: String,
        members: usize,
        bound: SetBound,
    },
    #[error(
        "IPClaim {claim} keeps the address of {owner} in pool {pool} but cannot be read ({why}); the pod waits until an administrator fixes or deletes that claim"
    )]
    UnreadableClaim {
        claim: String,
        owner: String,
        pool: String,
        why: String,
    },
    #[error("{0}")]
    Retain(String),
    #[error("pinip.io/allocation is written only by the pinip webhook; remove it from the pod")]
    AllocationSupplied,
    #[error("could not allocate: {0}; the API server will retry the pod's creation")]
    Api(String),
}

impl Denial {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Denial::Annotation(_) => "malformed_annotation",
            Denial::UnknownPool { .. } => "unknown_pool",
            Denial::NamespaceNotAllowed { .. } => "namespace_not_allowed",
            Denial::SameFamilyPools { .. } => "same_family_pools",
            Denial::AddressNotInPool { .. } | Denial::NoPoolForAddress { .. } => {
                "address_not_in_pool"
            }
            Denial::NoDefaultPool { .. } => "no_default_pool",
            Denial::OtherNetwork { .. } => "other_network",
            Denial::BadPool { .. } => "invalid_pool",
            Denial::Exhausted { .. } => "pool_exhausted",
            Denial::AddressHeld { .. } => "address_held",
            Denial::ClaimHeld { .. } => "claim_held",
            Denial::SetFull { .. } => "set_full",
            Denial::UnreadableClaim { .. } => "unreadable_claim",
            Denial::Retain(_) => "bad_retain",
            Denial::TooManyReservations { .. } => "too_many_reservations",
            Denial::AllocationSupplied => "allocation_supplied",
            Denial::Api(_) => "api_error",
        }
    }

    /// The pool the reason is about, when it names one.
    pub fn pool(&self) -> Option<&str> {
        match self {
            Denial::UnknownPool { pool }
            | Denial::NamespaceNotAllowed { pool }
            | Denial::OtherNetwork { pool, .. }
            | Denial::AddressNotInPool { pool, .. }
            | Denial::BadPool { pool, .. }
            | Denial::Exhausted { pool, .. }
            | Denial::SetFull { pool, .. }
            | Denial::UnreadableClaim { pool, .. } => Some(pool),
            _ => None,
        }
    }
}
