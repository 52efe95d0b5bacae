//! The HTTP surfaces: the admission port (/mutate, /validate; HTTPS, optionally only for
//! kube-apiserver's client certificate) and the metrics port (/metrics, /healthz, /readyz;
//! plain HTTP for kubelet probes and Prometheus, no admission route).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as Ext;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use pinip_api::IPPool;
use pinip_runtime::Admin;
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
        .route("/validate/pods", post(validate_pod))
        .route("/validate/ippools", post(validate_pool))
        .route("/validate/workloads", post(validate_workload))
        // Webhook configurations from before the typed routes name one path for all three.
        .route("/validate", post(validate_any))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), timed))
        .with_state(app)
}

/// Times a request to a matched route (`route_layer`: unmatched paths are not counted, so the
/// label takes only the routes above).
async fn timed(
    Ext(app): Ext<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = match req.uri().path() {
        "/mutate" => "/mutate",
        "/validate/pods" => "/validate/pods",
        "/validate/ippools" => "/validate/ippools",
        "/validate/workloads" => "/validate/workloads",
        _ => "/validate",
    };
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    app.state
        .metrics
        .request_seconds
        .get_or_create(&crate::metrics::PathLabels { path })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The metrics port (`pinip_runtime::admin`): ready once the watches have listed.
impl Admin for App {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn metrics(&self) -> String {
        self.state.metrics.render(&self.state.index)
    }
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
        Err(why) => invalid(&body, why),
    };
    reply(resp)
}

async fn validate_pod(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    reply(pod_review(&app, &body).await)
}

async fn validate_pool(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    reply(pool_review(&app, &body).await)
}

async fn validate_workload(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    reply(workload_review(&app, &body).await)
}

async fn pod_review(app: &App, body: &[u8]) -> AdmissionResponse {
    match parse::<Pod>(body) {
        Ok(req) => crate::validate::pod(&app.state, &req).await,
        Err(why) => unreadable(app, body, why),
    }
}

async fn pool_review(app: &App, body: &[u8]) -> AdmissionResponse {
    match parse::<IPPool>(body) {
        Ok(req) => crate::validate::pool(&app.state, &req).await,
        Err(why) => unreadable(app, body, why),
    }
}

/// Workloads are only ever warned about: one that cannot be read is let through with a
/// warning saying so (and a review that is not one at all is answered as invalid, which the
/// configuration's `failurePolicy: Ignore` also lets through).
async fn workload_review(app: &App, body: &[u8]) -> AdmissionResponse {
    match parse::<DynamicObject>(body) {
        Ok(req) => crate::validate::workload(&app.state, &req).await,
        Err(why) => {
            app.state.metrics.admission("validate", "invalid");
            match peek(body) {
                Some(r) if !r.uid.is_empty() => {
                    let mut resp = AdmissionResponse::invalid("");
                    resp.uid = r.uid;
                    resp.allowed = true;
                    resp.result = Default::default();
                    resp.warnings = Some(vec![format!(
                        "pinip: the object could not be read, so it was not checked: {why}"
                    )]);
                    resp
                }
                _ => AdmissionResponse::invalid(why),
            }
        }
    }
}

/// What a review is about, read without its object: the kind picks a typed route, the uid
/// lets an invalid review's answer name the request it answers.
#[derive(serde::Deserialize)]
struct Peek {
    request: PeekRequest,
}

#[derive(serde::Deserialize)]
struct PeekRequest {
    #[serde(default)]
    uid: String,
    kind: Option<kube::core::GroupVersionKind>,
}

fn peek(body: &[u8]) -> Option<PeekRequest> {
    serde_json::from_slice::<Peek>(body).ok().map(|p| p.request)
}

/// A /validate review that cannot be read as the route's kind: answered as invalid, counted.
fn unreadable(app: &App, body: &[u8], why: String) -> AdmissionResponse {
    app.state.metrics.admission("validate", "invalid");
    invalid(body, why)
}

/// The answer to a review that cannot be read as the route's kind.
fn invalid(body: &[u8], why: String) -> AdmissionResponse {
    let mut resp = AdmissionResponse::invalid(why);
    if let Some(r) = peek(body) {
        resp.uid = r.uid;
    }
    resp
}

async fn validate_any(Ext(app): Ext<App>, body: axum::body::Bytes) -> Response {
    let kind = peek(&body).and_then(|r| r.kind).map(|k| (k.group, k.kind));
    let resp = match kind.as_ref().map(|(g, k)| (g.as_str(), k.as_str())) {
        Some(("", "Pod")) => pod_review(&app, &body).await,
        Some(("pinip.io", "IPPool")) => pool_review(&app, &body).await,
        _ => workload_review(&app, &body).await,
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
