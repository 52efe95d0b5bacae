//! The admin port: `/healthz` (the process answers), `/readyz` (its watches have listed) and
//! `/metrics` (OpenMetrics text), over plain HTTP for kubelet probes and Prometheus. It never
//! serves anything that changes state.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Address and port for /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "PINIP_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
}

/// What the admin port reports of a process.
pub trait Admin: Clone + Send + Sync + 'static {
    /// Whether the process may receive traffic (its watches have listed once).
    fn ready(&self) -> bool;
    /// The process's metrics in OpenMetrics text.
    fn metrics(&self) -> String;
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router<A: Admin>(admin: A) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<A>))
        .route("/metrics", get(metrics::<A>))
        .with_state(admin)
}

async fn readyz<A: Admin>(State(admin): State<A>) -> Response {
    if admin.ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced").into_response()
    }
}

async fn metrics<A: Admin>(State(admin): State<A>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], admin.metrics()).into_response()
}

/// The admin server, running until [`AdminServer::stop`].
pub struct AdminServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `listen` (an error names it) and serves [`router`] in the background.
    pub async fn start<A: Admin>(listen: SocketAddr, admin: A) -> Result<AdminServer, Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind { listen, source })?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(
            axum::serve(listener, router(admin))
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .into_future(),
        );
        Ok(AdminServer { stop, task })
    }

    /// Stops accepting, lets open requests finish for up to `within`.
    pub async fn stop(self, within: Duration) -> Result<(), Error> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(r)) => r.map_err(Error::Serve),
            Ok(Err(join)) => Err(Error::Serve(std::io::Error::other(join))),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Fake(Arc<AtomicBool>);

    impl Admin for Fake {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
    }

    async fn get(r: &Router, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = r
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), ct)
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let admin = Fake::default();
        let r = router(admin.clone());
        assert_eq!(get(&r, "/healthz").await.0, StatusCode::OK);
        let (status, body, _) = get(&r, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "watches not synced");
        admin.0.store(true, Ordering::Relaxed);
        assert_eq!(get(&r, "/readyz").await.0, StatusCode::OK);
        let (status, body, ct) = get(&r, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "# EOF\n");
        assert_eq!(ct.as_deref(), Some(OPENMETRICS));
        assert_eq!(get(&r, "/mutate").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn binds_and_stops() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), Fake::default())
            .await
            .unwrap();
        server.stop(Duration::from_secs(1)).await.unwrap();
        // A port in use is an error that names it.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = AdminServer::start(addr, Fake::default())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
