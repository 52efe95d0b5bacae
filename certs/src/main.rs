//! pinip certificates: bootstraps the webhook's CA and serving certificate, injects the caBundle, rotates.
//!
//! Not implemented yet: this binary only documents itself and refuses to run, so that nothing
//! pretends to work before its issue lands.

use clap::Parser;

/// pinip certificates: bootstraps the webhook's CA and serving certificate, injects the caBundle, rotates.
///
/// NOT IMPLEMENTED YET: running it exits with status 2.
#[derive(Parser, Debug)]
#[command(name = "pinip-certs", version)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    let _ = pinip_api::annotations::ALLOCATION;
    eprintln!("pinip-certs is not implemented yet; see the project's open issues");
    std::process::ExitCode::from(2)
}
