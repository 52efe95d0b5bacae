//! An IPPool as every decision reads it: parsed once when its watch delivers it.

use std::net::IpAddr;
use std::sync::Arc;

use kube::ResourceExt;
use pinip_api::{IPPool, IPPoolSpec, UsablePool};

/// A pool and its parsed address set.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub object: Arc<IPPool>,
    /// Its usable addresses, or why the spec cannot give any.
    pub usable: Result<UsablePool, String>,
}

impl Pool {
    pub fn parse(object: Arc<IPPool>) -> Pool {
        let usable = object.spec.usable().map_err(|e| e.to_string());
        if let Err(e) = &usable {
            tracing::warn!(pool = %object.name_any(), error = %e, "IPPool is invalid; no address is handed out from it");
        }
        Pool {
            name: object.name_any(),
            object,
            usable,
        }
    }

    /// The network the pool serves (empty: the pod's primary interface).
    pub fn network(&self) -> &str {
        &self.object.spec.network
    }

    /// The one overlap rule: two pools of the same network may not both hand out an
    /// address; the first such address. Pools of different networks may overlap.
    pub fn overlap(&self, other: &Pool) -> Option<IpAddr> {
        overlap(&self.object.spec, self.usable.as_ref().ok()?, other)
    }
}

/// [`Pool::overlap`] for a spec not (yet) in the ledger, e.g. one being admitted.
pub fn overlap(spec: &IPPoolSpec, usable: &UsablePool, other: &Pool) -> Option<IpAddr> {
    if spec.network != other.object.spec.network {
        return None;
    }
    usable.overlap(other.usable.as_ref().ok()?)
}
