//! pinip's real-cluster test bed: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler built from the upstream Go modules, nodes registered and kept Ready as a
//! kubelet would, and a node agent per node that makes the sandboxes of the pods scheduled there
//! through a real containerd (CRI) or the bed's own CNI runtime, both running the reference CNI
//! plugins in network namespaces. See README.md for what is real and what is not.

pub mod agent;
pub mod bed;
pub mod binders;
pub mod cni;
pub mod containerd;
pub mod controlplane;
pub mod invariants;
pub mod lb;
pub mod measure;
pub mod netns;
pub mod node;
pub mod nodenet;
pub mod pinip;
pub mod pki;
pub mod process;
pub mod secret_volume;
pub mod stack;
pub mod suite;
pub mod wait;
pub mod whereabouts;

pub use bed::{Bed, BedOptions, Ipam, MainPlugin};
