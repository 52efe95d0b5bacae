//! Links the `pinip` plugin binary as a position-dependent executable: a PIE's start-up
//! applies ~25 000 relative relocations, and the pages they touch were most of the page faults
//! of an ADD (the runtime execs the plugin once per pod, so its start-up is its cost).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=pinip=-no-pie");
    }
}
