//! Writes the CRDs generated from the Rust types into a directory (default `manifests/crds`),
//! or with `--check` fails when the committed files differ from what the types generate.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut check = false;
    let mut dir = PathBuf::from("manifests/crds");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--dir" => match args.next() {
                Some(d) => dir = d.into(),
                None => return usage("--dir needs a directory"),
            },
            "-h" | "--help" => {
                println!(
                    "crdgen [--check] [--dir DIR]\n\nWrites pinip's CRD YAML into DIR (default manifests/crds).\n--check: write nothing; exit 1 if any file differs from the generated YAML."
                );
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let mut drift = false;
    for (name, yaml) in pinip_api::crd::crd_files() {
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
