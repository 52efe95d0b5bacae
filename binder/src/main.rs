//! pinip binder: binds reservations to pods, follows rescheduling, releases and reclaims addresses, keeps pool status.
//!
//! Not implemented yet: this binary only documents itself and refuses to run, so that nothing
//! pretends to work before its issue lands.

use clap::Parser;

/// pinip binder: binds reservations to pods, follows rescheduling, releases and reclaims addresses, keeps pool status.
///
/// NOT IMPLEMENTED YET: running it exits with status 2.
#[derive(Parser, Debug)]
#[command(name = "pinip-binder", version)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    let _ = pinip_api::annotations::ALLOCATION;
    eprintln!("pinip-binder is not implemented yet; see the project's open issues");
    std::process::ExitCode::from(2)
}
