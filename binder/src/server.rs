//! /healthz, /readyz and /metrics over plain HTTP (the same small axum stack as the webhook).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::index::Index;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct App {
    pub metrics: Arc<Metrics>,
    /// Ready once every watch has listed; a standby replica is ready too.
    pub index: Index,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn readyz(State(app): State<App>) -> Response {
    if app.index.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced").into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(&app.index),
    )
        .into_response()
}
