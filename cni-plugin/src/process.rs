//! The process around one invocation, shared by both binaries (`pinip` and `pinip-kube`):
//! environment and stdin in, one JSON document out on stdout, exit status 0 or 1.
//!
//! The runtime execs the plugin once per pod, so start-up is most of its cost. Both binaries
//! are `no_main`: that skips the Rust runtime's set-up for long-lived programs (reading
//! /proc/self/maps for the main thread's stack guard, an alternate signal stack, reopening
//! closed stdio); a stack overflow then ends in a plain SIGSEGV instead of a message, which
//! for a plugin that recurses nowhere is the right trade.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::args::Env;
use crate::config;
use crate::error::CniError;
use crate::log::DefaultSink;
use crate::pod::PodApi;
use crate::verbs::{Failure, Output, Plugin};
use crate::version::CniVersion;

/// Runs one invocation of the plugin in this process and returns its exit status. `api` is
/// given the request bytes read from stdin (the API reader of `pinip` re-execs with them).
pub fn main(api: impl for<'a> FnOnce(&'a [u8]) -> Box<dyn PodApi + 'a>) -> i32 {
    // What std's start-up would have done: a write to a closed pipe (stdout, or the API
    // server's connection) is an EPIPE error reported as CNI error JSON, not a kill by signal.
    // (std's exec resets it for the new program: `pinip-kube` sets it again here.)
    // SAFETY: sets a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
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
            let api = api(&stdin);
            let plugin = Plugin {
                api: api.as_ref(),
                log_sink: DefaultSink::Stderr,
            };
            catch_unwind(AssertUnwindSafe(|| plugin.run(&env, &stdin))).unwrap_or_else(|_| {
                Err(Failure::new(
                    config::echo_version(&stdin),
                    CniError::Internal {
                        reason: "the plugin panicked (see stderr)".into(),
                    },
                ))
            })
        }
    };
    let (text, code) = match outcome {
        Ok(Output::Stdout(json)) => (Some(json), 0),
        Ok(Output::Nothing) => (None, 0),
        Err(f) => (Some(f.to_json()), 1),
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
