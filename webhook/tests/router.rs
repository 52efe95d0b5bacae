//! The admission router without a cluster: AdmissionReviews sent through
//! `tower::ServiceExt::oneshot` to the webhook's routes, deciding over an in-memory index
//! (pools, claims, namespaces, nodes, workloads), for every denial and patch the webhook can
//! produce from its index alone.
//!
//! The API client answers every request 503 and counts them: a dry-run decision, a denial or
//! a pool check must need no API call (the count stays 0), and where a real decision writes an
//! IPClaim the refusal shows as the denial a failed write gives. Whether those writes work
//! against a real kube-apiserver is the test bed's job (integration/tests/webhook.rs,
//! ownership.rs), not this file's. So are the two denials that need the API server to confirm
//! that a holder is alive: `claim_held` (ownership.rs, one fixed address serves one pod) and
//! `set_full` (appset.rs, a pod that would grow a set past its bound waits).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::PartialObjectMeta;
use pinip_api::annotations::Allocation;
use pinip_api::{IPClaim, IPPool, claim_name};
use pinip_index::{Ledger, Workloads};
use pinip_webhook::index::Index;
use pinip_webhook::metrics::Metrics;
use pinip_webhook::server::{App, admission_router};
use pinip_webhook::state::{Settings, State};
use serde_json::{Value, json};
use tower::ServiceExt;

const STS_UID: &str = "5e7a0000-0000-0000-0000-000000000001";

/// A kube client whose API server refuses everything; counts what was asked.
fn refusing_client() -> (kube::Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
        counted.fetch_add(1, Ordering::Relaxed);
        async {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "no API server in this test", "reason": "ServiceUnavailable",
                                "code": 503});
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(Body::from(status.to_string()))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, "default"), calls)
}

fn pool(name: &str, spec: Value) -> IPPool {
    serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
                                  "metadata": {"name": name, "resourceVersion": "1"}, "spec": spec}))
    .unwrap()
}

fn claim(ip: &str, prefix: u8, pool: &str, labels: Value, owner: Value, pod: Value) -> IPClaim {
    let addr: std::net::IpAddr = ip.parse().unwrap();
    serde_json::from_value(json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
        "metadata": {"name": claim_name("", &addr), "labels": labels, "resourceVersion": "7"},
        "spec": {"pool": pool, "address": format!("{ip}/{prefix}"), "owner": owner, "pod": pod,
                 "interface": "eth0"}}))
    .unwrap()
}

fn namespace(name: &str, labels: Value) -> PartialObjectMeta<Namespace> {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": name, "labels": labels}}))
    .unwrap()
}

fn node(name: &str, zone: &str) -> PartialObjectMeta<Node> {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}))
    .unwrap()
}

/// The cluster every test decides over.
fn cluster() -> (Vec<IPPool>, Vec<IPClaim>) {
    let pools = vec![
        pool(
            "zone-a",
            json!({"cidr": "10.20.0.0/24", "ranges": ["10.20.0.10-10.20.0.200"],
                   "gateway": "10.20.0.1", "routes": [{"dst": "0.0.0.0/0"}],
                   "dns": {"nameservers": ["10.20.0.53"], "search": ["svc.local"]},
                   "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "a"}},
                   "default": true}),
        ),
        pool(
            "blue",
            json!({"cidr": "10.30.0.0/24", "gateway": "10.30.0.1"}),
        ),
        pool("blue-2", json!({"cidr": "10.31.0.0/24"})),
        pool(
            "team-only",
            json!({"cidr": "10.40.0.0/24", "namespaceSelector": {"matchLabels": {"team": "db"}}}),
        ),
        pool("side", json!({"cidr": "10.50.0.0/24", "network": "net1"})),
        // Two usable addresses, both claimed.
        pool("tiny", json!({"cidr": "10.60.0.0/30"})),
        // Its range lies outside its cidr: the ledger keeps it, as invalid.
        pool(
            "broken",
            json!({"cidr": "10.70.0.0/24", "ranges": ["10.71.0.1-10.71.0.9"]}),
        ),
    ];
    let bare = |ns: &str, name: &str| json!({"kind": "Pod", "namespace": ns, "name": name});
    let claims = vec![
        claim(
            "10.60.0.1",
            30,
            "tiny",
            json!({}),
            bare("other", "x"),
            json!({"name": "x", "uid": "u1"}),
        ),
        claim(
            "10.60.0.2",
            30,
            "tiny",
            json!({}),
            bare("other", "y"),
            json!({"name": "y", "uid": "u2"}),
        ),
        claim(
            "10.30.0.9",
            24,
            "blue",
            json!({}),
            bare("other", "holder"),
            json!({"name": "holder", "uid": "u3"}),
        ),
        // StatefulSet apps/db ordinal 0 keeps 10.30.0.20, but its claim's retain label is
        // one pinip does not know.
        claim(
            "10.30.0.20",
            24,
            "blue",
            json!({"pinip.io/retain": "forever"}),
            json!({"kind": "StatefulSet", "namespace": "apps", "name": "db", "ordinal": 0}),
            json!({"name": "db-0"}),
        ),
        // A reservation in namespace "crowded" whose pod does not exist yet.
        claim(
            "10.31.0.5",
            24,
            "blue-2",
            json!({}),
            bare("crowded", "soon"),
            json!({"name": "soon"}),
        ),
    ];
    (pools, claims)
}

struct Hook {
    app: App,
    calls: Arc<AtomicUsize>,
}

fn hook() -> Hook {
    let (pools, claims) = cluster();
    let (client, calls) = refusing_client();
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "apps", "uid": STS_UID},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}}}}))
    .unwrap();
    let index = Index::of(
        Ledger::of(pools, claims),
        vec![
            namespace("apps", json!({"pinip.io/enabled": "true"})),
            namespace("plain", json!({})),
            namespace("crowded", json!({"pinip.io/enabled": "true"})),
        ],
        vec![node("node-1", "a")],
        Workloads::of(vec![sts], vec![], vec![]),
    );
    let state = State::new(
        client,
        index,
        Arc::new(Metrics::default()),
        Settings {
            cooldown: Duration::from_secs(30),
            reservation_hold: Duration::from_secs(75),
            max_reservations_per_namespace: 1,
            interface: "eth0".into(),
        },
    );
    Hook {
        app: App {
            state: Arc::new(state),
            ready: Arc::new(true.into()),
        },
        calls,
    }
}

fn review(kind: (&str, &str, &str), op: &str, object: Value, old: Value, dry_run: bool) -> Value {
    let (group, kind, resource) = kind;
    let version = if group.is_empty() { "v1" } else { "v1alpha1" };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let meta = if object.is_null() { &old } else { &object };
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-0000000000aa",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": meta["metadata"]["name"], "namespace": meta["metadata"]["namespace"],
            "operation": op,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object, "oldObject": old, "dryRun": dry_run,
        }
    })
}

const POD: (&str, &str, &str) = ("", "Pod", "pods");
const POOL: (&str, &str, &str) = ("pinip.io", "IPPool", "ippools");

fn pod(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}})
}

fn pod_review(ns: &str, name: &str, annotations: Value, dry_run: bool) -> Value {
    review(
        POD,
        "CREATE",
        pod(ns, name, annotations),
        Value::Null,
        dry_run,
    )
}

/// Posts `body` to `path`; the review's `response`.
async fn post(hook: &Hook, path: &str, body: impl Into<Body>) -> Value {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = admission_router(hook.app.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK, "{path}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

async fn send(hook: &Hook, path: &str, review: &Value) -> Value {
    let resp = post(hook, path, review.to_string()).await;
    assert_eq!(
        resp["uid"], review["request"]["uid"],
        "answers the review it got"
    );
    resp
}

fn denial(resp: &Value) -> String {
    assert_eq!(resp["allowed"], false, "expected a denial: {resp}");
    resp["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The pod after the answer's patch, checked to be a JSON patch kube-apiserver can apply.
fn patched(resp: &Value, review: &Value) -> Value {
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(resp["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().expect("base64 patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn allocation(pod: &Value) -> Allocation {
    pod["metadata"]["annotations"]["pinip.io/allocation"]
        .as_str()
        .expect("allocation annotation")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn default_pool_decision_patches_allocation_and_zone_affinity() {
    let hook = hook();
    let r = pod_review("apps", "web-1", json!({}), true);
    let resp = send(&hook, "/mutate", &r).await;
    let pod = patched(&resp, &r);
    let a = allocation(&pod);
    let iface = &a.interfaces[0];
    assert_eq!(iface.name, "eth0");
    let ip = &iface.ips[0];
    assert_eq!(ip.pool, "zone-a");
    let addr = ip.address.addr();
    let (lo, hi): (std::net::IpAddr, std::net::IpAddr) = (
        "10.20.0.10".parse().unwrap(),
        "10.20.0.200".parse().unwrap(),
    );
    assert!(
        ip.address.prefix_len() == 24 && lo <= addr && addr <= hi,
        "{addr}"
    );
    assert_eq!(ip.claim, claim_name("", &addr));
    assert_eq!(ip.gateway, Some("10.20.0.1".parse().unwrap()));
    assert_eq!(iface.routes[0].dst.to_string(), "0.0.0.0/0");
    assert_eq!(iface.routes[0].gw, Some("10.20.0.1".parse().unwrap()));
    assert_eq!(
        iface.dns.nameservers,
        ["10.20.0.53".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(iface.dns.search, ["svc.local"]);
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        terms,
        &json!([{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}])
    );
    // Nothing else of the pod changed.
    let mut rest = pod.clone();
    rest["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("pinip.io/allocation");
    rest["spec"].as_object_mut().unwrap().remove("affinity");
    assert_eq!(rest, r["request"]["object"]);
    assert_eq!(
        hook.calls.load(Ordering::Relaxed),
        0,
        "a dry run asks nothing of the API"
    );
}

#[tokio::test]
async fn fixed_address_is_patched_as_asked() {
    let hook = hook();
    let r = pod_review("plain", "fixed", json!({"pinip.io/ip": "10.30.0.77"}), true);
    let resp = send(&hook, "/mutate", &r).await;
    let a = allocation(&patched(&resp, &r));
    let ip = &a.interfaces[0].ips[0];
    assert_eq!(
        (ip.pool.as_str(), ip.address.to_string()),
        ("blue", "10.30.0.77/24".into())
    );
    assert_eq!(ip.claim, "10-30-0-77");
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn pods_outside_pinip_pass_untouched() {
    let hook = hook();
    let resp = send(
        &hook,
        "/mutate",
        &pod_review("plain", "p", json!({}), false),
    )
    .await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none_or(Value::is_null), "{resp}");
    // Not a CREATE: nothing to decide.
    let mut r = pod_review("apps", "p", json!({}), false);
    r["request"]["operation"] = json!("UPDATE");
    r["request"]["oldObject"] = r["request"]["object"].clone();
    let resp = send(&hook, "/mutate", &r).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none_or(Value::is_null));
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
}

/// Every denial /mutate gives from its index, with the pod, pool and reason named.
#[tokio::test]
async fn mutate_denials_name_pod_pool_and_reason() {
    let hook = hook();
    let cases: &[(&str, &str, Value, &str)] = &[
        (
            "plain",
            "spoof",
            json!({"pinip.io/allocation": "{}"}),
            "pinip: pod plain/spoof: pinip.io/allocation is written only by the pinip webhook; remove it from the pod",
        ),
        (
            "plain",
            "bad-ip",
            json!({"pinip.io/ip": "10.30.0.300"}),
            "pinip: pod plain/bad-ip: pinip.io/ip: \"10.30.0.300\" is not an IP address",
        ),
        (
            "plain",
            "ghost",
            json!({"pinip.io/pool": "nope"}),
            "pinip: pod plain/ghost (pool nope): pool nope does not exist",
        ),
        (
            "plain",
            "outsider",
            json!({"pinip.io/pool": "team-only"}),
            "pinip: pod plain/outsider (pool team-only): this namespace may not use pool team-only (its namespaceSelector does not admit the namespace)",
        ),
        (
            "plain",
            "twice",
            json!({"pinip.io/pool": "blue,blue-2"}),
            "pinip: pod plain/twice (pool blue,blue-2): pools blue,blue-2 are of the same address family; name one pool per family",
        ),
        (
            "plain",
            "outside",
            json!({"pinip.io/pool": "blue", "pinip.io/ip": "10.31.0.4"}),
            "pinip: pod plain/outside (pool blue): address 10.31.0.4 is not one pool blue hands out (outside its ranges, excluded, or its gateway)",
        ),
        (
            "plain",
            "nowhere",
            json!({"pinip.io/ip": "192.0.2.1"}),
            "pinip: pod plain/nowhere: no pool this namespace may use contains 192.0.2.1",
        ),
        (
            "plain",
            "sidecar",
            json!({"pinip.io/pool": "side"}),
            "pinip: pod plain/sidecar (pool side): pool side belongs to network \"net1\"; pinip writes allocations for the pod's primary interface only, so only pools of the primary network (network \"\") can be used",
        ),
        (
            "plain",
            "invalid",
            json!({"pinip.io/pool": "broken"}),
            "pinip: pod plain/invalid (pool broken): pool broken is invalid: spec.ranges: \"10.71.0.1-10.71.0.9\" is not inside cidr 10.70.0.0/24",
        ),
        (
            "plain",
            "late",
            json!({"pinip.io/pool": "tiny"}),
            "pinip: pod plain/late (pool tiny): pool tiny is exhausted: all 2 addresses are in use or cooling down",
        ),
        (
            "plain",
            "thief",
            json!({"pinip.io/ip": "10.30.0.9"}),
            "pinip: pod plain/thief: address 10.30.0.9 belongs to Pod other/holder",
        ),
        (
            "plain",
            "keeper",
            json!({"pinip.io/pool": "blue", "pinip.io/retain": "ordinal"}),
            "pinip: pod plain/keeper (pool blue): retain \"ordinal\" needs a StatefulSet pod with an ordinal; this pod belongs to Pod keeper",
        ),
        (
            "plain",
            "odd",
            json!({"pinip.io/retain": "sometimes"}),
            "pinip: pod plain/odd: pinip.io/retain: \"sometimes\" is not one of ordinal, app, none",
        ),
        (
            "crowded",
            "many",
            json!({"pinip.io/pool": "blue"}),
            "pinip: pod crowded/many (pool blue): namespace crowded already holds 1 reservations whose pods do not exist (yet); the limit is 1: pods refused after admission leave reservations that are reclaimed within about a minute, try again then",
        ),
    ];
    for (ns, name, annotations, want) in cases {
        let resp = send(
            &hook,
            "/mutate",
            &pod_review(ns, name, annotations.clone(), true),
        )
        .await;
        assert_eq!(denial(&resp), *want, "{ns}/{name}");
    }
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn no_default_pool_for_a_namespace_it_does_not_admit() {
    let hook = hook();
    // zone-a is the only default pool; a pod pinned to a zone-b node cannot use it.
    let mut r = pod_review("apps", "elsewhere", json!({}), true);
    r["request"]["object"]["spec"]["nodeSelector"] = json!({"topology.kubernetes.io/zone": "b"});
    let msg = denial(&send(&hook, "/mutate", &r).await);
    assert!(
        msg.starts_with("pinip: pod apps/elsewhere: no default pool: no default pool fits: zone-a"),
        "{msg}"
    );
}

#[tokio::test]
async fn unreadable_claim_keeps_its_ordinal_waiting() {
    let hook = hook();
    let mut r = pod_review("apps", "db-0", json!({"pinip.io/pool": "blue"}), true);
    r["request"]["object"]["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": STS_UID,
        "controller": true}]);
    let msg = denial(&send(&hook, "/mutate", &r).await);
    assert!(
        msg.contains("(pool blue): IPClaim 10-30-0-20 keeps the address of StatefulSet apps/db ordinal 0 in pool blue but cannot be read"),
        "{msg}"
    );
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn failed_claim_write_denies_so_the_api_server_retries() {
    let hook = hook();
    let r = pod_review("plain", "real", json!({"pinip.io/pool": "blue"}), false);
    let msg = denial(&send(&hook, "/mutate", &r).await);
    assert!(
        msg.starts_with("pinip: pod plain/real (pool blue): could not allocate: ")
            && msg.contains("the API server will retry"),
        "{msg}"
    );
    assert!(
        hook.calls.load(Ordering::Relaxed) >= 1,
        "the claim create was tried"
    );
}

#[tokio::test]
async fn namespace_unknown_to_the_index_and_the_api_fails_closed() {
    let hook = hook();
    let msg = denial(
        &send(
            &hook,
            "/mutate",
            &pod_review("new-ns", "p", json!({}), true),
        )
        .await,
    );
    assert!(
        msg.starts_with("pinip: pod new-ns/p: reading namespace new-ns: ")
            && msg.ends_with("try again"),
        "{msg}"
    );
    assert_eq!(
        hook.calls.load(Ordering::Relaxed),
        1,
        "one GET for the namespace"
    );
}

#[tokio::test]
async fn not_a_review_is_answered_as_invalid() {
    let hook = hook();
    for path in [
        "/mutate",
        "/validate/pods",
        "/validate/ippools",
        "/validate/workloads",
        "/validate",
    ] {
        let resp = post(&hook, path, "{\"kind\": 3}").await;
        assert_eq!(resp["allowed"], false, "{path}");
        assert_eq!(resp["status"]["reason"], "InvalidRequest", "{path}");
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("AdmissionReview"),
            "{path}: {resp}"
        );
    }
    // A review of the wrong kind on a typed route does not pass as allowed.
    let p = pool("fresh", json!({"cidr": "10.90.0.0/24"}));
    let r = review(
        POOL,
        "CREATE",
        serde_json::to_value(&p).unwrap(),
        Value::Null,
        false,
    );
    let resp = send(&hook, "/validate/pods", &r).await;
    assert_eq!(resp["allowed"], false, "{resp}");
}

#[tokio::test]
async fn validate_pods_checks_addresses_and_allocations() {
    let hook = hook();
    let pods = "/validate/pods";
    let msg = denial(
        &send(
            &hook,
            pods,
            &pod_review("plain", "far", json!({"pinip.io/ip": "10.40.0.3"}), false),
        )
        .await,
    );
    assert_eq!(
        msg,
        "pinip: pod plain/far: no pool this namespace may use contains 10.40.0.3"
    );
    let resp = send(
        &hook,
        pods,
        &pod_review("plain", "near", json!({"pinip.io/ip": "10.30.0.3"}), false),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");

    let alloc = |ip: &str, claim: &str| {
        json!({"version": 1, "interfaces": [{"name": "eth0", "ips": [
            {"address": format!("{ip}/24"), "pool": "blue", "claim": claim}]}]})
        .to_string()
    };
    // The claim named is not the one pinip names for the address.
    let msg = denial(
        &send(
            &hook,
            pods,
            &pod_review(
                "other",
                "holder",
                json!({"pinip.io/allocation": alloc("10.30.0.9", "10-30-0-8")}),
                false,
            ),
        )
        .await,
    );
    assert!(
        msg.contains("names claim 10-30-0-8 for 10.30.0.9/24; pinip would name it 10-30-0-9"),
        "{msg}"
    );
    // Backed by a claim that records this pod: allowed, from the index alone.
    let resp = send(
        &hook,
        pods,
        &pod_review(
            "other",
            "holder",
            json!({"pinip.io/allocation": alloc("10.30.0.9", "10-30-0-9")}),
            false,
        ),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
    // Someone else's claim: the index does not show it for this pod, so the API server is
    // asked (the handover may be newer than the watch); it does not answer here, so denied.
    let msg = denial(
        &send(
            &hook,
            pods,
            &pod_review(
                "plain",
                "thief",
                json!({"pinip.io/allocation": alloc("10.30.0.9", "10-30-0-9")}),
                false,
            ),
        )
        .await,
    );
    assert!(msg.starts_with("pinip: pod plain/thief: "), "{msg}");
    assert_eq!(hook.calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn validate_ippools_refuses_overlaps_strands_and_deletes_under_claims() {
    let hook = hook();
    let pools = "/validate/ippools";
    let obj = |name: &str, spec: Value| serde_json::to_value(pool(name, spec)).unwrap();
    let resp = send(
        &hook,
        pools,
        &review(
            POOL,
            "CREATE",
            obj("fresh", json!({"cidr": "10.90.0.0/24"})),
            Value::Null,
            false,
        ),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");
    let msg = denial(
        &send(
            &hook,
            pools,
            &review(
                POOL,
                "CREATE",
                obj("copy", json!({"cidr": "10.30.0.128/25"})),
                Value::Null,
                false,
            ),
        )
        .await,
    );
    assert!(
        msg.starts_with("pinip: IPPool copy: overlaps pool blue (both hand out 10.30.0.129)"),
        "{msg}"
    );
    // Another network may reuse the addresses.
    let resp = send(
        &hook,
        pools,
        &review(
            POOL,
            "CREATE",
            obj("copy", json!({"cidr": "10.30.0.0/24", "network": "net2"})),
            Value::Null,
            false,
        ),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");
    let msg = denial(
        &send(
            &hook,
            pools,
            &review(
                POOL,
                "CREATE",
                obj(
                    "bad",
                    json!({"cidr": "10.91.0.0/24", "gateway": "10.92.0.1"}),
                ),
                Value::Null,
                false,
            ),
        )
        .await,
    );
    assert!(msg.starts_with("pinip: IPPool bad: "), "{msg}");

    let old = obj(
        "blue",
        json!({"cidr": "10.30.0.0/24", "gateway": "10.30.0.1"}),
    );
    let msg = denial(&send(&hook, pools, &review(POOL, "UPDATE", obj("blue", json!({"cidr": "10.30.0.0/24", "gateway": "10.30.0.1", "exclude": ["10.30.0.9/32"]})), old.clone(), false)).await);
    assert_eq!(
        msg,
        "pinip: IPPool blue: the change would strand claimed addresses 10.30.0.9"
    );
    // The unreadable claim's address counts too.
    let msg = denial(&send(&hook, pools, &review(POOL, "UPDATE", obj("blue", json!({"cidr": "10.30.0.0/24", "gateway": "10.30.0.1", "exclude": ["10.30.0.16/28"]})), old.clone(), false)).await);
    assert_eq!(
        msg,
        "pinip: IPPool blue: the change would strand claimed addresses 10.30.0.20"
    );
    let msg = denial(
        &send(
            &hook,
            pools,
            &review(
                POOL,
                "UPDATE",
                obj(
                    "blue",
                    json!({"cidr": "10.30.0.0/24", "gateway": "10.30.0.1", "network": "net1"}),
                ),
                old.clone(),
                false,
            ),
        )
        .await,
    );
    assert!(msg.contains("network is immutable"), "{msg}");
    let msg = denial(
        &send(
            &hook,
            pools,
            &review(POOL, "DELETE", Value::Null, old, false),
        )
        .await,
    );
    assert!(
        msg.starts_with("pinip: IPPool blue: 2 addresses are still claimed (e.g. 10.30.0."),
        "{msg}"
    );
    let resp = send(
        &hook,
        pools,
        &review(
            POOL,
            "DELETE",
            Value::Null,
            obj("team-only", json!({"cidr": "10.40.0.0/24"})),
            false,
        ),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(hook.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn validate_workloads_warns_and_never_denies() {
    let hook = hook();
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "plain"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"pinip.io/ip": "10.30.0.50"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.invalid/none:1"}]}}}});
    let r = review(
        ("apps", "Deployment", "deployments"),
        "CREATE",
        deploy,
        Value::Null,
        false,
    );
    let mut r = r;
    r["request"]["kind"]["version"] = json!("v1");
    r["request"]["resource"]["version"] = json!("v1");
    for path in ["/validate/workloads", "/validate"] {
        let resp = send(&hook, path, &r).await;
        assert_eq!(resp["allowed"], true, "{path}: {resp}");
        let warnings = resp["warnings"].as_array().expect("warnings");
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .unwrap()
                .starts_with("pinip: Deployment plain/web fixes one address per family (pinip.io/ip) but can run 3 pods at once")),
            "{path}: {warnings:?}"
        );
    }
}

#[tokio::test]
async fn the_untyped_route_answers_as_the_typed_ones() {
    let hook = hook();
    let pod = pod_review("plain", "far", json!({"pinip.io/ip": "10.40.0.3"}), false);
    let p = pool("copy", json!({"cidr": "10.30.0.0/25"}));
    let pool = review(
        POOL,
        "CREATE",
        serde_json::to_value(&p).unwrap(),
        Value::Null,
        false,
    );
    let blue = serde_json::to_value(self::pool("blue", json!({"cidr": "10.30.0.0/24"}))).unwrap();
    let delete = review(POOL, "DELETE", Value::Null, blue, false);
    for (typed, r) in [
        ("/validate/pods", &pod),
        ("/validate/ippools", &pool),
        ("/validate/ippools", &delete),
    ] {
        let resp = send(&hook, typed, r).await;
        assert_eq!(resp["allowed"], false, "{typed}: {resp}");
        assert_eq!(resp, send(&hook, "/validate", r).await, "{typed}");
    }
}

#[tokio::test]
async fn unreadable_objects_are_invalid_and_counted_but_workloads_pass() {
    let hook = hook();
    let mut bad = review(
        POOL,
        "CREATE",
        serde_json::to_value(pool("odd", json!({"cidr": "10.95.0.0/24"}))).unwrap(),
        Value::Null,
        false,
    );
    bad["request"]["object"]["spec"]["cidr"] = json!(5);
    let resp = send(&hook, "/validate/ippools", &bad).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["reason"], "InvalidRequest");
    // A workload that cannot be read is let through, with a warning that says so.
    let mut r = review(
        ("apps", "Deployment", "deployments"),
        "CREATE",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "odd", "namespace": "plain"}, "spec": {"replicas": "many"}}),
        Value::Null,
        false,
    );
    r["request"]["object"]["metadata"] = json!(7);
    let resp = send(&hook, "/validate/workloads", &r).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(
        resp["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("pinip: the object could not be read")),
        "{resp}"
    );
    let metrics = pinip_runtime::Admin::metrics(&hook.app);
    let invalid = metrics
        .lines()
        .find(|l| {
            l.starts_with("pinip_webhook_admissions_total{") && l.contains("result=\"invalid\"")
        })
        .unwrap_or_default()
        .to_string();
    assert!(invalid.ends_with(" 2"), "{invalid:?} in\n{metrics}");
}
