//! `pinip-kube`: the `pinip` plugin with the Kubernetes client, for requests that must read
//! the pod from the API server. `pinip` execs it (see [`pinip_cni::handoff`]); it can also be
//! named as the IPAM `type` itself. Wiring only.

// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    pinip_cni::process::main(|_| Box::new(pinip_cni::pod::KubeApi))
}
