//! Links the `pinip` plugin binary as a position-dependent executable: a PIE's start-up
//! applies ~25 000 relative relocations, and the pages they touch were most of the page faults
//! of an ADD (the runtime execs the plugin once per pod, so its start-up is its cost).
/// Only for dynamically linked glibc targets: musl and `crt-static` builds are static PIEs.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static")
    {
        println!("cargo:rustc-link-arg-bin=pinip=-no-pie");
    }
}
