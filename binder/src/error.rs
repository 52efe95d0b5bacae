//! The binder library's errors. Each names the object it concerns; `metric_label` feeds the
//! `pinip_binder_errors_total` metric.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("IPClaim {claim}: {source}")]
    Claim {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("IPPool {pool}: writing status: {source}")]
    PoolStatus {
        pool: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: {source}")]
    Pod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("looking up {workload}: {source}")]
    Lookup {
        workload: String,
        #[source]
        source: kube::Error,
    },
    #[error("event on pod {pod}: {source}")]
    Event {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {lease}: {source}")]
    Lease {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {lease}: no answer within {secs:.1}s")]
    LeaseTimeout { lease: String, secs: f64 },
    #[error(
        "IPClaim {claim}: the API server dropped the status of a write without its status subresource; is the IPClaim CRD being changed?"
    )]
    StatusDropped { claim: String },
}

impl Error {
    /// Wraps a failed call on IPClaim `claim` (for `map_err`).
    pub fn claim(claim: &str) -> impl Fn(kube::Error) -> Error + '_ {
        move |source| Error::Claim {
            claim: claim.to_string(),
            source,
        }
    }

    fn kube(&self) -> Option<&kube::Error> {
        match self {
            Error::Claim { source, .. }
            | Error::PoolStatus { source, .. }
            | Error::Pod { source, .. }
            | Error::Lookup { source, .. }
            | Error::Event { source, .. }
            | Error::Lease { source, .. } => Some(source),
            Error::LeaseTimeout { .. } | Error::StatusDropped { .. } => None,
        }
    }

    /// A write that lost a race (409): the object changed under us; decided again next pass.
    pub fn is_conflict(&self) -> bool {
        matches!(self.kube(), Some(kube::Error::Api(s)) if s.code == 409)
    }

    pub fn metric_label(&self) -> &'static str {
        if self.is_conflict() {
            return "conflict";
        }
        match self {
            Error::Claim { .. } | Error::StatusDropped { .. } => "claim_write",
            Error::PoolStatus { .. } => "pool_status",
            Error::Pod { .. } => "pod_read",
            Error::Lookup { .. } => "workload_lookup",
            Error::Event { .. } => "event",
            Error::Lease { .. } | Error::LeaseTimeout { .. } => "lease",
        }
    }
}
