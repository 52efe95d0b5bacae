//! Start-up is most of an ADD (the runtime execs the plugin once per pod), so on dynamically
//! linked glibc targets the binaries are linked for it:
//! - position-dependent (`-no-pie`): a PIE's start-up applies thousands of relative
//!   relocations, and the pages they touch were most of the page faults of an ADD;
//! - without `libgcc_s.so.1`: its load-time constructor (`__cpu_indicator_init`) runs `cpuid`,
//!   which in a virtual machine traps to the hypervisor; with ld.so's own probe it was a sixth
//!   of an ADD (perf). The unwinder is linked statically from `libgcc_eh.a` instead, as
//!   `-static-libgcc` does for C: a `libgcc_s.so` linker script in this package's link search
//!   path, found before the system's, stands for `-lgcc_s`. It applies to every artifact of
//!   this package (its binaries, tests and benchmarks), none of which loads other Rust or C++
//!   shared objects that would need one shared unwinder.
//!
//! musl and `crt-static` builds are static already and get neither.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static")
    {
        return;
    }
    for bin in ["pinip", "pinip-kube"] {
        println!("cargo:rustc-link-arg-bin={bin}=-no-pie");
    }
    let dir = std::path::Path::new(&var("OUT_DIR")).join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/static-unwinder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("write OUT_DIR/static-unwinder/libgcc_s.so");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
