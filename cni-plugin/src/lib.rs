//! pinip's CNI IPAM plugin: returns the address that pinip's admission webhook decided for the
//! pod (the `pinip.io/allocation` annotation). It never allocates and never writes.
//!
//! The binary `pinip` (src/main.rs) only wires the process to [`verbs::Plugin::run`].

pub mod annotations_source;
pub mod args;
pub mod config;
pub mod error;
pub mod log;
pub mod pod;
pub mod result;
pub mod verbs;
pub mod version;
