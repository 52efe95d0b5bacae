//! A node's own network namespace: its loopback, the veth whose end is the macvlan master
//! (this kernel has no dummy link type), the bridge the bridge plugin creates there, and a
//! loopback forwarder so that CNI plugins running in the namespace reach the API server at
//! the same `https://127.0.0.1:<port>` as everything else, as they would on a real node.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, TcpStream};

use crate::netns;

/// Name of the macvlan master link inside every node namespace.
pub const MACVLAN_MASTER: &str = "mv0";

pub fn create(ns: &str) -> Result<()> {
    netns::add(ns)?;
    netns::ip(&[
        "-n",
        ns,
        "link",
        "add",
        MACVLAN_MASTER,
        "type",
        "veth",
        "peer",
        "name",
        "mv0-peer",
    ])?;
    netns::ip(&["-n", ns, "link", "set", MACVLAN_MASTER, "up"])?;
    netns::ip(&["-n", ns, "link", "set", "mv0-peer", "up"])?;
    Ok(())
}

/// Binds 127.0.0.1:`port` inside namespace `ns` and forwards every connection to
/// 127.0.0.1:`port` of the test bed's own namespace, until the returned task is aborted.
pub fn forward_loopback(ns: &str, port: u16) -> Result<tokio::task::JoinHandle<()>> {
    let path = netns::path(ns);
    // setns affects only the calling thread, so bind from a short-lived thread; the socket
    // stays in the namespace it was created in.
    let listener = std::thread::scope(|s| {
        s.spawn(|| -> Result<StdListener> {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "setns {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            let l = StdListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .expect("bind thread")
    })?;
    let listener = TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}
