//! What more than one test file needs.

use std::path::PathBuf;

/// The static build of `pinip` (what a node runs; `cni-plugin/build-static.sh` makes it and
/// `./test.sh` names it in `PINIP_STATIC_PINIP`), or `None` with a note when it is not named.
pub fn static_pinip() -> Option<PathBuf> {
    match std::env::var_os("PINIP_STATIC_PINIP") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "PINIP_STATIC_PINIP={} is not a file",
                p.display()
            );
            Some(p)
        }
        None => {
            eprintln!(
                "PINIP_STATIC_PINIP is not set: the static build is not tested (./test.sh sets it)"
            );
            None
        }
    }
}
