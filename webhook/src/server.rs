//! The HTTP surfaces: the admission port (/mutate, /validate; HTTPS, optionally only for
//! kube-apiserver's client certificate) and the metrics port (/metrics, /healthz, /readyz;
//! plain HTTP for kubelet probes and Prometheus, no admission route).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as Ext;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;

use crate::state::State;

#[derive(Clone)]
pub struct App {
    pub state: Arc<State>,
    pub ready: Arc<AtomicBool>,
}

/// The admission port's routes.
pub fn admission_router(app: App) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(app)
}

/// The metrics port's routes.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn readyz(Ext(app): Ext<App>) -> Response {
    if app.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced").into_response()
    }
}

async fn metrics(Ext(app): Ext<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.state.metrics.render(&app.state.index),
    )
        .into_response()
}

/// Reads a review; a body that is not one is answered as an invalid review, not a 4xx, so the
/// API server reports the reason.
fn parse<T>(body: &[u8]) -> Result<AdmissionRequest<T>, String>
where
    T: kube::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
}

async fn mutate(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    let resp = match parse::<Pod>(&body) {
        Ok(req) => crate::mutate::mutate(&app.state, &req).await,
        Err(why) => AdmissionResponse::invalid(why),
    };
    reply(resp)
}

async fn validate(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    let resp = match parse::<DynamicObject>(&body) {
        Ok(req) => crate::validate::validate(&app.state, &req).await,
        Err(why) => AdmissionResponse::invalid(why),
    };
    reply(resp)
}

/// The review answer. kube-core writes `patch` (a `Vec<u8>`) as an array of numbers; the
/// Kubernetes API documents `[]byte` as base64, so it is rewritten as such. (Tried on
/// kube-apiserver v1.37.2: the array form is accepted too, since Go's JSON decoder fills a
/// []byte from an array of numbers; base64 is kept because it is the documented form.)
pub fn reply(resp: AdmissionResponse) -> Response {
    let mut v = match serde_json::to_value(resp.into_review()) {
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if let Some(Value::Array(bytes)) = v.pointer("/response/patch") {
        let raw: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        v["response"]["patch"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
    }
    axum::Json(v).into_response()
}
