//! pinip's CNI IPAM plugin: returns the address that pinip's admission webhook decided for the
//! pod (the `pinip.io/allocation` annotation). It never allocates and never writes.
//!
//! The binaries `pinip` (src/main.rs, no API client: [`handoff`]) and `pinip-kube`
//! (src/bin/kube.rs, with it) only wire the process to [`verbs::Plugin::run`] ([`process`]).

pub mod annotations_source;
pub mod args;
pub mod config;
pub mod error;
pub mod handoff;
pub mod log;
pub mod pod;
pub mod process;
pub mod result;
pub mod verbs;
pub mod version;
