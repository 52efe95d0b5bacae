//! Writes the CRDs generated from the Rust types into `manifests/crds` and the Helm chart's
//! `crds/` (or one `--dir`), or with `--check` fails when a committed file differs from what
//! the types generate.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut check = false;
    let mut dirs = vec![
        PathBuf::from("manifests/crds"),
        PathBuf::from("manifests/helm/pinip/crds"),
    ];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--dir" => match args.next() {
                Some(d) => dirs = vec![d.into()],
                None => return usage("--dir needs a directory"),
            },
            "-h" | "--help" => {
                println!(
                    "crdgen [--check] [--dir DIR]\n\nWrites pinip's CRD YAML into DIR (default: manifests/crds and manifests/helm/pinip/crds).\n--check: write nothing; exit 1 if any file differs from the generated YAML."
                );
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let mut drift = false;
    for (dir, (name, yaml)) in dirs
        .iter()
        .flat_map(|d| pinip_api::crd::crd_files().into_iter().map(move |f| (d, f)))
    {
        let path = dir.join(name);
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                eprintln!(
                    "{} differs from the generated CRD; run `cargo run -p pinip-api --bin crdgen` and commit",
                    path.display()
                );
                drift = true;
            }
        } else if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("crdgen: {msg} (see --help)");
    ExitCode::from(2)
}
