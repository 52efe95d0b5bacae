//! pinip CNI IPAM plugin. Not implemented yet.
fn main() -> std::process::ExitCode {
    println!(r#"{{"cniVersion":"1.1.0","code":999,"msg":"the pinip CNI plugin is not implemented yet"}}"#);
    std::process::ExitCode::FAILURE
}
