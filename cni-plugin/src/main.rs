//! `pinip`: the CNI IPAM plugin binary. Wiring only: read the environment and stdin, run the
//! verb, print the result or the error JSON on stdout, exit non-zero on error.
//!
//! The runtime execs the plugin once per pod, so start-up is most of its cost. `no_main` skips
//! the Rust runtime's set-up for long-lived programs (reading /proc/self/maps for the main
//! thread's stack guard, an alternate signal stack, reopening closed stdio): a stack overflow
//! then ends in a plain SIGSEGV instead of a message, which for a plugin that recurses nowhere
//! is the right trade.

// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use pinip_cni::args::Env;
use pinip_cni::error::CniError;
use pinip_cni::log::DefaultSink;
use pinip_cni::pod::KubeApi;
use pinip_cni::verbs::{Failure, Output, Plugin};
use pinip_cni::version::CniVersion;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // What std's start-up would have done: a write to a closed pipe (stdout, or the API
    // server's connection) is an EPIPE error reported as CNI error JSON, not a kill by signal.
    // SAFETY: sets a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    match run() {
        ExitCode::SUCCESS => 0,
        _ => 1,
    }
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().lock().read_to_end(&mut stdin) {
        Err(e) => Err(Failure::new(
            CniVersion::LATEST.as_str(),
            CniError::Io {
                reason: e.to_string(),
            },
        )),
        Ok(_) => {
            let plugin = Plugin {
                api: &KubeApi,
                log_sink: DefaultSink::Stderr,
            };
            catch_unwind(AssertUnwindSafe(|| plugin.run(&env, &stdin))).unwrap_or_else(|_| {
                Err(Failure::new(
                    pinip_cni::config::echo_version(&stdin),
                    CniError::Internal {
                        reason: "the plugin panicked (see stderr)".into(),
                    },
                ))
            })
        }
    };
    let (text, code) = match outcome {
        Ok(Output::Stdout(json)) => (Some(json), ExitCode::SUCCESS),
        Ok(Output::Nothing) => (None, ExitCode::SUCCESS),
        Err(f) => (Some(f.to_json()), ExitCode::FAILURE),
    };
    if let Some(text) = text {
        let mut out = std::io::stdout().lock();
        // A closed stdout leaves nothing to report to; the exit status still tells.
        let _ = out.write_all(text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    code
}
