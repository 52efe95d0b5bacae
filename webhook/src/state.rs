//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

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

/// The decision's settings (the webhook's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// An address released less than this long ago is not handed out again.
    pub cooldown: Duration,
    /// How long a claim reserved for a pod that does not exist yet stays reserved for it.
    pub reservation_hold: Duration,
    pub max_reservations_per_namespace: usize,
    /// The pod interface allocations are written for.
    pub interface: String,
}

impl State {
    pub fn new(client: Client, index: Index, metrics: Arc<Metrics>, settings: Settings) -> State {
        State {
            resolver: Resolver {
                client: client.clone(),
                workloads: index.workloads.clone(),
            },
            allocator: Allocator {
                api: kube::Api::all(client.clone()),
                client: client.clone(),
                hold: settings.reservation_hold,
                index: index.clone(),
                cooldown: settings.cooldown,
                interface: settings.interface,
                metrics: metrics.clone(),
            },
            client,
            index,
            metrics,
            max_reservations: settings.max_reservations_per_namespace,
        }
    }
}
