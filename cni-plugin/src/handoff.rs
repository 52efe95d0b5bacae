//! How `pinip` reads the API server: it does not. The runtime execs `pinip` for every pod and
//! nearly always passes the allocation in runtimeConfig, so `pinip` links no Kubernetes client,
//! TLS or async runtime (its start-up is most of an ADD). When the request does need the API
//! (no runtimeConfig annotations; STATUS with a kubeconfig), it replaces itself with
//! `pinip-kube`, the same plugin with the client, installed next to it (next to the link's
//! target, when the runtime's CNI path holds a symlink to `pinip`): same environment (CNI
//! passes everything there and on stdin), and the request it read from stdin handed over in a
//! memfd. `pinip-kube` then runs the whole invocation again and answers the runtime itself.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::error::CniError;
use crate::pod::{KubeTarget, PodApi, PodMeta, PodRef};

/// The file name of the plugin with the Kubernetes client, in `pinip`'s own directory.
pub const API_READER: &str = "pinip-kube";

/// Set in the environment of the exec'd reader: a `pinip` that finds it set was exec'd as the
/// reader (`pinip-kube` is a copy of or a link to `pinip`) and must not exec itself forever.
const HANDED_OFF: &str = "PINIP_HANDED_OFF";

/// A [`PodApi`] whose calls exec [`API_READER`] with `stdin`; they return only on failure.
pub struct ExecApiReader<'a> {
    pub stdin: &'a [u8],
}

/// Why the exec did not happen.
enum Failed {
    /// The reader is not there, not runnable, or not the reader: an installation problem.
    Missing { path: String, reason: String },
    /// Anything else (no memfd, no memory): not the operator's installation.
    Other(String),
}

impl ExecApiReader<'_> {
    fn exec(&self) -> Failed {
        let path = match std::env::current_exe() {
            Ok(p) => p.with_file_name(API_READER),
            Err(e) => {
                return Failed::Missing {
                    path: API_READER.into(),
                    reason: format!("cannot locate pinip's own directory: {e}"),
                };
            }
        };
        let missing = |reason: String| Failed::Missing {
            path: path.display().to_string(),
            reason,
        };
        if std::env::var_os(HANDED_OFF).is_some() {
            return missing("it is not the API reader: it is pinip itself (a copy or a link), which handed the request to itself".into());
        }
        let stdin = match memfd_with(self.stdin) {
            Ok(f) => f,
            Err(e) => return Failed::Other(format!("cannot hand the request over: {e}")),
        };
        // `exec` returns only if the exec failed; on success `pinip-kube` answers.
        let e = Command::new(&path)
            .env(HANDED_OFF, "1")
            .stdin(Stdio::from(stdin))
            .exec();
        // std reset SIGPIPE to its default for the new program; this process goes on to
        // print its error, and a closed stdout must not kill it by signal.
        // SAFETY: sets a signal disposition; the plugin has no other threads.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                missing(e.to_string())
            }
            _ if e.raw_os_error() == Some(libc::ENOEXEC) => missing(e.to_string()),
            _ => Failed::Other(format!("cannot run {}: {e}", path.display())),
        }
    }
}

impl PodApi for ExecApiReader<'_> {
    fn get_pod(&self, _target: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError> {
        Err(match self.exec() {
            Failed::Missing { path, reason } => CniError::ApiReaderMissing {
                path,
                subject: pod.label(),
                reason,
            },
            Failed::Other(reason) => CniError::Internal { reason },
        })
    }

    /// STATUS: a reader that cannot run means ADDs that need the API cannot be served (50).
    fn probe(&self, _target: &KubeTarget) -> Result<(), CniError> {
        Err(match self.exec() {
            Failed::Missing { path, reason } => CniError::StatusReaderMissing { path, reason },
            Failed::Other(reason) => CniError::Internal { reason },
        })
    }
}

/// An anonymous in-memory file holding `bytes`, positioned at its start.
fn memfd_with(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    // SAFETY: the name is a NUL-terminated literal; the returned descriptor is checked.
    let fd = unsafe { libc::memfd_create(c"pinip-request".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}
