//! A round-robin TCP load balancer on loopback, standing in for a Service in front of several
//! webhook replicas. TLS passes through: each connection goes whole to one backend.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct LoadBalancer {
    pub port: u16,
    task: JoinHandle<()>,
    /// Connections handed to each backend, in backend order.
    pub counts: Arc<Vec<AtomicUsize>>,
}

impl LoadBalancer {
    pub async fn start(backends: Vec<u16>) -> Result<LoadBalancer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                c[i].fetch_add(1, Ordering::Relaxed);
                let backend = SocketAddr::from((Ipv4Addr::LOCALHOST, backends[i]));
                tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(backend).await {
                        // As a kernel-forwarded Service adds no delay: without TCP_NODELAY a
                        // request copied in two writes (kube-apiserver sends a request's head
                        // and body as two TLS records) waits for the ACK of the first, which
                        // the webhook delays 40 ms.
                        let _ = inbound.set_nodelay(true);
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Ok(LoadBalancer { port, task, counts })
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
