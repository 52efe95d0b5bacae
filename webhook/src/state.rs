//! What every request handler shares.

use std::sync::Arc;

use kube::Client;
use pinip_index::Resolver;

use crate::allocate::Allocator;
use crate::index::Index;
use crate::metrics::Metrics;

pub struct State {
    pub client: Client,
    pub index: Index,
    /// Verifies pod owners (watch caches, one GET for what they miss).
    pub resolver: Resolver,
    pub allocator: Allocator,
    pub metrics: Arc<Metrics>,
    /// Most claims reserved for pods of one namespace that the binder has not bound yet.
    pub max_reservations: usize,
}
