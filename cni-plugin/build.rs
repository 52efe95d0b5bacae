//! Start-up is most of an ADD (the runtime execs the plugin once per pod), so on dynamically
//! linked glibc targets the binaries are linked for it:
//! - position-dependent (`-no-pie`): a PIE's start-up applies thousands of relative
//!   relocations, and the pages they touch were most of the page faults of an ADD;
//! - without `libgcc_s.so.1`: its load-time constructor (`__cpu_indicator_init`) runs `cpuid`,
//!   which in a virtual machine traps to the hypervisor; with ld.so's own probe it was a sixth
//!   of an ADD (perf). The unwinder is linked statically from `libgcc_eh.a` instead, as
//!   `-static-libgcc` does for C: a `libgcc_s.so` linker script in a directory named on these
//!   two binaries' link line only (`-L`, which ld searches before the compiler's own library
//!   directories), stands for `-lgcc_s`. Neither binary loads other Rust or C++ shared objects
//!   that would need one shared unwinder. Skipped when the C compiler has no `libgcc_eh.a`
//!   (clang with compiler-rt, some cross sysroots), or with `PINIP_CNI_SHARED_LIBGCC=1`.
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
    const BINS: [&str; 2] = ["pinip", "pinip-kube"];
    for bin in BINS {
        println!("cargo:rustc-link-arg-bin={bin}=-no-pie");
    }
    println!("cargo:rerun-if-env-changed=PINIP_CNI_SHARED_LIBGCC");
    if var("PINIP_CNI_SHARED_LIBGCC") == "1" || !has_libgcc_eh() {
        return;
    }
    let dir = std::path::Path::new(&var("OUT_DIR")).join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/static-unwinder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("write OUT_DIR/static-unwinder/libgcc_s.so");
    for bin in BINS {
        println!("cargo:rustc-link-arg-bin={bin}=-L{}", dir.display());
    }
}

/// Whether the C compiler rustc links with has a static unwinder (it prints a bare name when
/// it has none).
fn has_libgcc_eh() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().contains('/'))
        .unwrap_or(false)
}
