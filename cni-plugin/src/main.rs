//! `pinip`: the CNI IPAM plugin the runtime execs. It answers from the runtime's pod
//! annotations and hands any request that needs the API server to `pinip-kube`
//! ([`pinip_cni::handoff`]), so that it links no Kubernetes client. Wiring only.

// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    pinip_cni::process::main(|stdin| Box::new(pinip_cni::handoff::ExecApiReader { stdin }))
}
