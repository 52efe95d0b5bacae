//! pinip's admission webhook: `/mutate` decides each pod's addresses when it is created and
//! records them in `pinip.io/allocation`; `/validate` enforces policy on pods, pools and
//! claims. `main.rs` only wires these modules together.

pub mod allocate;
pub mod client_auth;
pub mod index;
pub mod metrics;
pub mod mutate;
pub mod patch;
pub mod policy;
pub mod reason;
pub mod server;
pub mod state;
pub mod tls;
pub mod validate;
pub mod warn;
