//! What the admin port (`pinip_runtime::admin`: /healthz, /readyz, /metrics) reports of the
//! binder.

use std::sync::Arc;

use pinip_runtime::Admin;

use crate::index::Index;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct App {
    pub metrics: Arc<Metrics>,
    /// Ready once every watch has listed; a standby replica is ready too.
    pub index: Index,
}

impl Admin for App {
    fn ready(&self) -> bool {
        self.index.is_ready()
    }
    fn metrics(&self) -> String {
        self.metrics.render(&self.index)
    }
}
