//! How `pinip` reads the API server: it does not. The runtime execs `pinip` for every pod and
//! nearly always passes the allocation in runtimeConfig, so `pinip` links no Kubernetes client,
//! TLS or async runtime (its start-up is most of an ADD). When the request does need the API
//! (no runtimeConfig annotations; STATUS with a kubeconfig), it replaces itself with
//! `pinip-kube`, the same plugin with the client, installed next to it: same arguments and
//! environment, and the request it read from stdin handed over in a memfd. `pinip-kube` then
//! runs the whole invocation again and answers the runtime itself.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::CniError;
use crate::pod::{KubeTarget, PodApi, PodMeta, PodRef};

/// The file name of the plugin with the Kubernetes client, in `pinip`'s own directory.
pub const API_READER: &str = "pinip-kube";

/// A [`PodApi`] whose calls exec [`API_READER`] with `stdin`; they return only on failure.
pub struct ExecApiReader<'a> {
    pub stdin: &'a [u8],
}

impl ExecApiReader<'_> {
    fn exec(&self, subject: &str) -> CniError {
        let path = reader_path();
        let missing = |reason: String| CniError::ApiReaderMissing {
            path: path.display().to_string(),
            subject: subject.to_string(),
            reason,
        };
        let stdin = match memfd_with(self.stdin) {
            Ok(f) => f,
            Err(e) => return missing(format!("cannot hand the request over: {e}")),
        };
        // `exec` returns only if the exec failed; on success `pinip-kube` answers.
        let e = Command::new(&path)
            .args(std::env::args_os().skip(1))
            .stdin(Stdio::from(stdin))
            .exec();
        missing(e.to_string())
    }
}

impl PodApi for ExecApiReader<'_> {
    fn get_pod(&self, _target: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError> {
        Err(self.exec(&pod.label()))
    }

    fn probe(&self, _target: &KubeTarget) -> Result<(), CniError> {
        Err(self.exec("the API server version"))
    }
}

/// `pinip-kube` next to the running executable (the link's target, when the runtime's CNI
/// path holds a symlink to `pinip`).
fn reader_path() -> PathBuf {
    std::env::current_exe()
        .map(|p| p.with_file_name(API_READER))
        .unwrap_or_else(|_| PathBuf::from(API_READER))
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
