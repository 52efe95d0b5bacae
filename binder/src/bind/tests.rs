//! The decisions' unit and property tests.

use super::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use pinip_api::annotations::ALLOCATION;
use pinip_api::claim::{RETAIN_LABEL, WORKLOAD_ANNOTATION};
use pinip_api::owner::Controllers;
use pinip_api::owner::Looked;
use pinip_api::{IPClaim, PodRef};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const GRACE: Duration = Duration::from_secs(120);

fn policy() -> Policy {
    Policy {
        reclaim_grace: GRACE,
        set_shrink_grace: GRACE,
        release_on_scale_down: false,
        conflict_settle: Duration::from_secs(10),
        unscheduled_bind_delay: Duration::from_secs(3),
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const T0: &str = "2030-01-01T00:00:00Z";
const T1: &str = "2030-01-01T00:01:00Z"; // within grace of T0
const T3: &str = "2030-01-01T00:03:00Z"; // past grace of T0

/// A claim as the webhook creates it, plus `extra` merged into the object.
fn claim(name: &str, address: &str, owner: Value, retain: &str, extra: Value) -> ClaimInfo {
    let mut v = json!({
        "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
        "metadata": {"name": name, "uid": format!("cu-{name}"), "resourceVersion": "7",
            "creationTimestamp": T0, "labels": {RETAIN_LABEL: retain}},
        "spec": {"pool": "blue", "address": address, "owner": owner, "interface": "eth0"},
    });
    merge(&mut v, extra);
    ClaimInfo::read(&serde_json::from_value::<IPClaim>(v).unwrap()).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn alloc(ips: &[(&str, &str)]) -> String {
    let ips: Vec<Value> = ips
        .iter()
        .map(|(claim, addr)| json!({"address": addr, "pool": "blue", "claim": claim}))
        .collect();
    json!({"version": 1, "interfaces": [{"name": "eth0", "ips": ips}]}).to_string()
}

/// A pod of StatefulSet `db` (ordinal from the name), Deployment `web` (via ReplicaSet
/// `web-abc`), or a bare pod (`owner` = "").
fn pod(name: &str, uid: &str, owner: &str, node: Option<&str>, ips: &[(&str, &str)]) -> PodInfo {
    let refs = match owner {
        "db" => {
            json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "sts-uid", "controller": true}])
        }
        "web" => {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-uid", "controller": true}])
        }
        _ => json!([]),
    };
    let generate_name = (owner == "web").then_some("web-abc-");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": T0,
            "generateName": generate_name,
            "ownerReferences": refs, "annotations": {ALLOCATION: alloc(ips)}},
        "spec": {"containers": [], "nodeName": node},
    }))
    .unwrap();
    PodInfo::read(&p, &TestControllers).unwrap().unwrap()
}

/// StatefulSet `db`, ReplicaSet `web-abc` of Deployment `web`.
struct TestControllers;

impl Controllers for TestControllers {
    fn look(&self, _: &str, kind: &str, _: &str, name: &str) -> Looked {
        let found = |uid: &str, ctl: Option<OwnerReference>| Looked::Found {
            uid: uid.into(),
            controller: ctl,
        };
        match (kind, name) {
            ("StatefulSet", "db") => found("sts-uid", None),
            ("Deployment", "web") => found("deploy-uid", None),
            ("ReplicaSet", "web-abc") => found(
                "rs-uid",
                Some(OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "deploy-uid".into(),
                    controller: Some(true),
                    ..Default::default()
                }),
            ),
            _ => Looked::Absent,
        }
    }
}

fn sts_owner(ordinal: i32) -> Value {
    json!({"kind": "StatefulSet", "namespace": "ns", "name": "db", "ordinal": ordinal})
}

fn pod_owner(name: &str) -> Value {
    json!({"kind": "Pod", "namespace": "ns", "name": name})
}

/// Presence by "kind/uid" (or "kind/name" for owners), and set bounds by "kind/uid".
#[derive(Default)]
struct Known(BTreeMap<String, Presence>, BTreeMap<String, u32>);

impl Workloads for Known {
    fn presence(&self, r: &WorkloadRef) -> Presence {
        self.0
            .get(&format!("{}/{}", r.kind, r.uid))
            .copied()
            .unwrap_or(Presence::Unknown)
    }
    fn presence_by_owner(&self, o: &Owner) -> Presence {
        self.0
            .get(&format!("{}/{}", o.kind, o.name))
            .copied()
            .unwrap_or(Presence::Exists { replicas: None })
    }
    fn set_bound(&self, r: &WorkloadRef) -> Option<u32> {
        self.1.get(&format!("{}/{}", r.kind, r.uid)).copied()
    }
}

fn run(claims: &[ClaimInfo], pods: &[PodInfo], known: &Known, now: &str, p: &Policy) -> Plan {
    let claims: Vec<Arc<ClaimInfo>> = claims.iter().cloned().map(Arc::new).collect();
    plan(
        &World {
            claims: &claims,
            unreadable: &HashSet::new(),
            exists: &|_| false,
            pods,
            workloads: known,
            in_flight: &HashSet::new(),
            now: ts(now),
        },
        p,
    )
}

fn only_bind(plan: &Plan) -> &Bind {
    assert_eq!(plan.actions.len(), 1, "{plan:?}");
    match &plan.actions[0] {
        Action::Bind(b) => b,
        a => panic!("expected a bind, got {a:?}"),
    }
}

#[test]
fn binds_reserved_claim_then_records_node() {
    let c = claim(
        "10-0-0-5",
        "10.0.0.5/24",
        pod_owner("a"),
        "none",
        json!({"spec": {"pod": {"name": "a"}}}),
    );
    let unscheduled = pod("a", "u1", "", None, &[("10-0-0-5", "10.0.0.5/24")]);
    let plan = run(
        std::slice::from_ref(&c),
        &[unscheduled],
        &Known::default(),
        T1,
        &policy(),
    );
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.uid.as_str(), b.node.as_deref(), b.phase, b.event),
        ("u1", None, ClaimPhase::Reserved, Some(Reason::IPReserved))
    );
    assert!(b.write_spec && !b.write_status);
    assert!(
        b.first,
        "a first bind (no uid recorded) is confirmed with the API server"
    );
    assert!(plan.conflicts.is_empty());

    // The scheduler placed it: the node is recorded and the claim is Bound.
    let scheduled = pod(
        "a",
        "u1",
        "",
        Some("node-1"),
        &[("10-0-0-5", "10.0.0.5/24")],
    );
    let bound_spec = claim(
        "10-0-0-5",
        "10.0.0.5/24",
        pod_owner("a"),
        "none",
        json!({"spec": {"pod": {"name": "a", "uid": "u1"}}}),
    );
    let plan = run(
        &[bound_spec],
        std::slice::from_ref(&scheduled),
        &Known::default(),
        T1,
        &policy(),
    );
    let b = only_bind(&plan);
    assert_eq!(
        (b.node.as_deref(), b.phase, b.event),
        (Some("node-1"), ClaimPhase::Bound, Some(Reason::IPBound))
    );
    assert!(b.write_spec && b.write_status);
    assert!(!b.first, "the uid is recorded: no need to ask");

    // Nothing to do once it is recorded.
    let done = claim(
        "10-0-0-5",
        "10.0.0.5/24",
        pod_owner("a"),
        "none",
        json!({"spec": {"pod": {"name": "a", "uid": "u1"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
    );
    assert_eq!(
        run(&[done], &[scheduled], &Known::default(), T3, &policy()),
        Plan::default()
    );
}

#[test]
fn a_young_unscheduled_pod_is_bound_once_placed_in_one_write() {
    let reserved = || {
        claim(
            "10-0-0-6",
            "10.0.0.6/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": {"name": "a"}}}),
        )
    };
    let mut unscheduled = pod("a", "u1", "", None, &[("10-0-0-6", "10.0.0.6/24")]);
    unscheduled.created = Some(ts("2030-01-01T00:00:59Z"));
    // One second old, not placed: no write yet, a wake-up when the delay ends.
    let plan = run(
        &[reserved()],
        std::slice::from_ref(&unscheduled),
        &Known::default(),
        T1,
        &policy(),
    );
    assert_eq!(
        (plan.actions.len(), plan.conflicts.len(), plan.wake_in),
        (0, 0, Some(Duration::from_secs(2))),
        "{plan:?}"
    );
    // Placed within the delay: pod, node and Bound in the one write.
    let mut placed = unscheduled.clone();
    placed.node = Some("node-1".into());
    let plan = run(&[reserved()], &[placed], &Known::default(), T1, &policy());
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.uid.as_str(), b.node.as_deref(), b.phase),
        ("u1", Some("node-1"), ClaimPhase::Bound)
    );
    assert!(b.write_spec && b.write_status);
    // Still unplaced once the delay is over: bound without a node, as before.
    let plan = run(
        &[reserved()],
        &[unscheduled],
        &Known::default(),
        "2030-01-01T00:01:02Z",
        &policy(),
    );
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.uid.as_str(), b.node.as_deref(), b.phase),
        ("u1", None, ClaimPhase::Reserved)
    );
}

#[test]
fn a_retained_claim_is_bound_to_an_unscheduled_pod_at_once() {
    // The bind records the workload (set membership): it does not wait for the scheduler.
    let c = claim(
        "10-0-0-7",
        "10.0.0.7/24",
        sts_owner(0),
        "ordinal",
        json!({"spec": {"pod": {"name": "db-0"}}}),
    );
    let mut p = pod("db-0", "u0", "db", None, &[("10-0-0-7", "10.0.0.7/24")]);
    p.created = Some(ts("2030-01-01T00:00:59Z"));
    let plan = run(&[c], &[p], &Known::default(), T1, &policy());
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.uid.as_str(), b.node.as_deref(), b.phase),
        ("u0", None, ClaimPhase::Reserved)
    );
}

#[test]
fn a_claim_whose_pod_went_while_its_bind_waited_is_reclaimed_after_the_grace() {
    // Nothing records that the pod existed: the reservation is one no pod took (a pod
    // re-created under the same name may be in admission with it).
    let c = claim(
        "10-0-0-8",
        "10.0.0.8/24",
        pod_owner("a"),
        "none",
        json!({"spec": {"pod": {"name": "a", "reservedAt": "2030-01-01T00:00:59Z"}}}),
    );
    let waits = run(
        std::slice::from_ref(&c),
        &[],
        &Known::default(),
        T1,
        &policy(),
    );
    assert!(waits.actions.is_empty(), "{waits:?}");
    assert_eq!(waits.wake_in, Some(GRACE - Duration::from_secs(1)));
    let gone = run(
        &[c],
        &[],
        &Known::default(),
        "2030-01-01T00:03:00Z",
        &policy(),
    );
    match gone.actions.as_slice() {
        [
            Action::Delete {
                why: Why::NeverAppeared,
                ..
            },
        ] => {}
        a => panic!("expected a delete (never appeared), got {a:?}"),
    }
}

#[test]
fn the_first_bind_waits_only_for_a_young_unbound_pod_of_known_age() {
    let c = |pod: Value| {
        claim(
            "10-0-0-9",
            "10.0.0.9/24",
            pod_owner("a"),
            "none",
            json!({"spec": {"pod": pod}}),
        )
    };
    let young = |created: Option<&str>| {
        let mut p = pod("a", "u1", "", None, &[("10-0-0-9", "10.0.0.9/24")]);
        p.created = created.map(ts);
        p
    };
    // (binds now, waits for the delay)
    let binds = |c: ClaimInfo, p: PodInfo| {
        let plan = run(&[c], &[p], &Known::default(), T1, &policy());
        (plan.actions.len(), usize::from(plan.wake_in.is_some()))
    };
    // A generateName reservation waits like a named one.
    let mut by_prefix = young(Some("2030-01-01T00:00:59Z"));
    by_prefix.generate_name = Some("a".into());
    assert_eq!(binds(c(json!({"generateName": "a"})), by_prefix), (0, 1));
    // No creation time: bound at once.
    assert_eq!(binds(c(json!({"name": "a"})), young(None)), (1, 0));
    // Created further in the future than the delay (clock skew): bound at once.
    assert_eq!(
        binds(c(json!({"name": "a"})), young(Some("2030-01-01T00:01:05Z"))),
        (1, 0)
    );
    // Within the delay of this binder's clock: waits.
    assert_eq!(
        binds(c(json!({"name": "a"})), young(Some("2030-01-01T00:01:02Z"))),
        (0, 1)
    );
}

#[test]
fn generate_name_pod_binds_by_allocation() {
    // The webhook knew no pod name; the pod that names the claim takes it.
    let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
    let c = claim(
        "10-0-0-6",
        "10.0.0.6/24",
        owner,
        "none",
        json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
    );
    let p = pod(
        "web-abc-x1",
        "u9",
        "web",
        Some("node-2"),
        &[("10-0-0-6", "10.0.0.6/24")],
    );
    let plan = run(&[c], &[p], &Known::default(), T1, &policy());
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.name.as_str(), b.phase),
        ("web-abc-x1", ClaimPhase::Bound)
    );
    // retain none: no workload annotation needed.
    assert_eq!(b.workload, None);
}

#[test]
fn retained_claim_records_workload_behind_replicaset() {
    let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
    let c = claim(
        "10-0-0-6",
        "10.0.0.6/24",
        owner,
        "app",
        json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
    );
    let p = pod(
        "web-abc-x1",
        "u9",
        "web",
        Some("node-2"),
        &[("10-0-0-6", "10.0.0.6/24")],
    );
    let plan = run(&[c], &[p], &Known::default(), T1, &policy());
    let w = only_bind(&plan).workload.clone().unwrap();
    assert_eq!(
        (w.kind.as_str(), w.name.as_str(), w.uid.as_str()),
        ("Deployment", "web", "deploy-uid")
    );
}

#[test]
fn statefulset_pod_recreated_elsewhere_is_bound_after_the_handover() {
    // The webhook handed the ordinal's claim to the new db-1 (name only, no uid yet).
    let c = claim(
        "10-0-0-7",
        "10.0.0.7/24",
        sts_owner(1),
        "ordinal",
        json!({
        "spec": {"pod": {"name": "db-1"}}, "status": {"phase": "Released"}}),
    );
    let new = pod(
        "db-1",
        "new",
        "db",
        Some("node-3"),
        &[("10-0-0-7", "10.0.0.7/24")],
    );
    let plan = run(
        &[c],
        std::slice::from_ref(&new),
        &Known::default(),
        T3,
        &policy(),
    );
    let b = only_bind(&plan);
    assert_eq!(
        (b.pod.uid.as_str(), b.node.as_deref(), b.phase, b.event),
        (
            "new",
            Some("node-3"),
            ClaimPhase::Bound,
            Some(Reason::IPBound)
        )
    );
    assert!(b.write_spec && b.write_status);
    let w = b.workload.clone().unwrap();
    assert_eq!(
        (w.kind.as_str(), w.uid.as_str()),
        ("StatefulSet", "sts-uid")
    );
    // Without the handover, a pod of the same name is not the claim's holder: the claim
    // is never moved to it, and never released from under it either; it is reported.
    let old = claim(
        "10-0-0-7",
        "10.0.0.7/24",
        sts_owner(1),
        "ordinal",
        json!({
        "spec": {"pod": {"name": "db-1", "uid": "old"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
    );
    let plan = run(&[old], &[new], &Known::default(), T3, &policy());
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.conflicts[0].reason.metric_label(), "not_holder");
}

#[test]
fn pod_gone_releases_by_policy() {
    let bound = |retain: &str, owner: Value| {
        claim(
            "10-0-0-8",
            "10.0.0.8/24",
            owner,
            retain,
            json!({
            "spec": {"pod": {"name": "db-2", "uid": "u2"}, "node": "node-1"}, "status": {"phase": "Bound"}}),
        )
    };
    // none: deleted, and the pod that is gone is named for the event.
    let plan = run(
        &[bound("none", pod_owner("db-2"))],
        &[],
        &Known::default(),
        T1,
        &policy(),
    );
    match &plan.actions[..] {
        [
            Action::Delete {
                why: Why::PodGone(p),
                ..
            },
        ] => assert_eq!(p.uid, "u2"),
        a => panic!("{a:?}"),
    }
    // retained: Released with pod and node cleared.
    let plan = run(
        &[bound("ordinal", sts_owner(2))],
        &[],
        &Known::default(),
        T1,
        &policy(),
    );
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Release {
                clear_spec: true,
                why: Why::PodGone(_),
                ..
            }]
        ),
        "{plan:?}"
    );
    // A terminated pod (Succeeded/Failed) holds nothing either.
    let mut done = pod(
        "db-2",
        "u2",
        "db",
        Some("node-1"),
        &[("10-0-0-8", "10.0.0.8/24")],
    );
    done.terminal = true;
    let plan = run(
        &[bound("ordinal", sts_owner(2))],
        &[done],
        &Known::default(),
        T1,
        &policy(),
    );
    assert!(
        matches!(&plan.actions[..], [Action::Release { .. }]),
        "{plan:?}"
    );
}

#[test]
fn scale_down_keeps_by_default_and_deletes_on_request() {
    let c = claim(
        "10-0-0-9",
        "10.0.0.9/24",
        sts_owner(2),
        "ordinal",
        json!({
        "metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
        "spec": {"pod": {"name": "db-2", "uid": "u2"}}, "status": {"phase": "Bound"}}),
    );
    let mut known = Known::default();
    known.0.insert(
        "StatefulSet/sts-uid".into(),
        Presence::Exists { replicas: Some(1) },
    );
    let plan = run(std::slice::from_ref(&c), &[], &known, T1, &policy());
    assert!(
        matches!(&plan.actions[..], [Action::Release { .. }]),
        "{plan:?}"
    );
    let p = Policy {
        set_shrink_grace: GRACE,
        release_on_scale_down: true,
        ..policy()
    };
    let plan = run(std::slice::from_ref(&c), &[], &known, T1, &p);
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Delete {
                why: Why::ScaledDown {
                    ordinal: 2,
                    replicas: 1
                },
                ..
            }]
        ),
        "{plan:?}"
    );
    // Ordinal 0 stays.
    let mut c0 = c;
    c0.owner.ordinal = Some(0);
    let plan = run(&[c0], &[], &known, T1, &p);
    assert!(
        matches!(&plan.actions[..], [Action::Release { .. }]),
        "{plan:?}"
    );
}

#[test]
fn surplus_set_members_are_deleted_newest_first_after_grace() {
    let member = |n: u8, created: &str, status: Value| {
        claim(
            &format!("10-0-0-{n}"),
            &format!("10.0.0.{n}/24"),
            json!({"kind": "Deployment", "namespace": "ns", "name": "web"}),
            "app",
            json!({
                "metadata": {"creationTimestamp": created, "annotations": {WORKLOAD_ANNOTATION:
                    r#"{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"web-uid"}"#}},
                "status": status,
            }),
        )
    };
    let released = json!({"phase": "Released", "releasedAt": T0});
    // Five members, the newest two (by creation, then name) beyond a bound of 3.
    let claims = vec![
        member(1, T0, released.clone()),
        member(2, T0, released.clone()),
        member(3, T1, released.clone()),
        member(4, T1, released.clone()),
        member(5, T0, released.clone()),
    ];
    let mut known = Known::default();
    known.0.insert(
        "Deployment/web-uid".into(),
        Presence::Exists { replicas: None },
    );
    let deleted = |plan: &Plan| -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    claim,
                    why:
                        Why::SetShrunk {
                            members: 5,
                            bound: 3,
                        },
                    ..
                } => Some(claim.clone()),
                _ => None,
            })
            .collect()
    };
    // Unbounded (bound unknown): nothing is surplus.
    assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
    known.1.insert("Deployment/web-uid".into(), 3);
    // Within the grace after release: kept, with a wake-up planned.
    let plan = run(&claims, &[], &known, T1, &policy());
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert!(plan.wake_in.is_some());
    let plan = run(&claims, &[], &known, T3, &policy());
    assert_eq!(deleted(&plan), vec!["10-0-0-3", "10-0-0-4"], "{plan:?}");
    // At or under the bound nothing goes.
    known.1.insert("Deployment/web-uid".into(), 5);
    assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
    // Scaled to zero: the whole set is kept.
    known.1.insert("Deployment/web-uid".into(), 0);
    assert!(run(&claims, &[], &known, T3, &policy()).actions.is_empty());
    // Released by a version that did not record when: kept until its next release.
    known.1.insert("Deployment/web-uid".into(), 3);
    let mut unstamped = claims.clone();
    for c in &mut unstamped {
        c.released_at = None;
    }
    assert!(
        run(&unstamped, &[], &known, T3, &policy())
            .actions
            .is_empty()
    );
    // Held members are never surplus; only Released ones are counted as candidates.
    known.1.insert("Deployment/web-uid".into(), 1);
    let mut held = claims.clone();
    for c in held.iter_mut().take(4) {
        c.phase = ClaimPhase::Bound;
        c.pod = Some(PodRef {
            name: format!("p-{}", c.name),
            uid: format!("u-{}", c.name),
            ..Default::default()
        });
    }
    let pods: Vec<PodInfo> = Vec::new();
    let plan = run(&held, &pods, &known, T3, &policy());
    assert!(
        plan.actions.iter().all(|a| match a {
            Action::Delete {
                claim,
                why: Why::SetShrunk { .. },
                ..
            } => claim == "10-0-0-5",
            _ => true,
        }),
        "{plan:?}"
    );
}

#[test]
fn workload_gone_deletes_retained_claims() {
    let released = claim(
        "10-0-0-10",
        "10.0.0.10/24",
        sts_owner(0),
        "ordinal",
        json!({
        "metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
        "status": {"phase": "Released"}}),
    );
    let mut known = Known::default();
    assert_eq!(
        run(std::slice::from_ref(&released), &[], &known, T1, &policy())
            .lookups
            .len(),
        1,
        "unknown workloads are looked up"
    );
    assert!(
        run(std::slice::from_ref(&released), &[], &known, T1, &policy())
            .actions
            .is_empty(),
        "never deleted on an unknown"
    );
    known.0.insert(
        "StatefulSet/sts-uid".into(),
        Presence::Exists { replicas: Some(3) },
    );
    assert!(
        run(std::slice::from_ref(&released), &[], &known, T1, &policy())
            .actions
            .is_empty()
    );
    known.0.insert("StatefulSet/sts-uid".into(), Presence::Gone);
    let plan = run(&[released], &[], &known, T1, &policy());
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Delete {
                why: Why::WorkloadGone(_),
                ..
            }]
        ),
        "{plan:?}"
    );
    // A claim that never recorded its workload is judged by the owner's kind and name.
    let bare = claim(
        "10-0-0-11",
        "10.0.0.11/24",
        sts_owner(1),
        "ordinal",
        json!({"status": {"phase": "Released"}}),
    );
    known.0.insert("StatefulSet/db".into(), Presence::Gone);
    let plan = run(&[bare], &[], &known, T1, &policy());
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Delete {
                why: Why::WorkloadGone(_),
                ..
            }]
        ),
        "{plan:?}"
    );
}

#[test]
fn reserved_claim_without_pod_waits_for_grace() {
    let none = claim(
        "10-0-0-12",
        "10.0.0.12/24",
        pod_owner("q"),
        "none",
        json!({"spec": {"pod": {"name": "q"}}}),
    );
    let plan = run(
        std::slice::from_ref(&none),
        &[],
        &Known::default(),
        T1,
        &policy(),
    );
    assert!(plan.actions.is_empty());
    assert_eq!(plan.wake_in, Some(Duration::from_secs(60)));
    let plan = run(&[none], &[], &Known::default(), T3, &policy());
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Delete {
                why: Why::NeverAppeared,
                ..
            }]
        ),
        "{plan:?}"
    );
    // Retained and a member of its workload's set (bound before, then handed to a pod
    // that never appeared): Released, its pod name cleared.
    let kept = claim(
        "10-0-0-13",
        "10.0.0.13/24",
        sts_owner(4),
        "ordinal",
        json!({"metadata": {"annotations": {WORKLOAD_ANNOTATION: r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"sts-uid"}"#}},
            "spec": {"pod": {"name": "db-4"}}}),
    );
    let plan = run(&[kept], &[], &Known::default(), T3, &policy());
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Release {
                clear_spec: true,
                why: Why::NeverAppeared,
                ..
            }]
        ),
        "{plan:?}"
    );
    // Retained but never bound (its pod was refused after /mutate): not promoted to a
    // member, deleted.
    let orphan = claim(
        "10-0-0-20",
        "10.0.0.20/24",
        sts_owner(6),
        "app",
        json!({"spec": {"pod": {"generateName": "web-abc-"}}}),
    );
    let plan = run(&[orphan], &[], &Known::default(), T3, &policy());
    assert!(
        matches!(
            &plan.actions[..],
            [Action::Delete {
                why: Why::NeverAppeared,
                ..
            }]
        ),
        "{plan:?}"
    );
    // Grace counts from reservedAt when a retained claim was taken again.
    let taken = claim(
        "10-0-0-14",
        "10.0.0.14/24",
        sts_owner(5),
        "app",
        json!({"spec": {"pod": {"name": "x", "reservedAt": "2030-01-01T00:02:30Z"}},
            "status": {"phase": "Released"}}),
    );
    let plan = run(&[taken], &[], &Known::default(), T3, &policy());
    assert!(plan.actions.is_empty());
    assert_eq!(plan.wake_in, Some(Duration::from_secs(90)));
}

#[test]
fn conflicts_are_reported_never_reassigned() {
    let c = claim(
        "10-0-0-15",
        "10.0.0.15/24",
        pod_owner("a"),
        "none",
        json!({
        "spec": {"pod": {"name": "a", "uid": "ua"}, "node": "n"}, "status": {"phase": "Bound"}}),
    );
    let a = pod("a", "ua", "", Some("n"), &[("10-0-0-15", "10.0.0.15/24")]);
    // Wrong address for the claim it names.
    let b = pod("b", "ub", "", Some("n"), &[("10-0-0-15", "10.0.0.99/24")]);
    // Right address, other owner.
    let d = pod("d", "ud", "", Some("n"), &[("10-0-0-15", "10.0.0.15/24")]);
    // A claim that does not exist (old enough to count).
    let e = pod("e", "ue", "", Some("n"), &[("10-0-0-16", "10.0.0.16/24")]);
    let plan = run(&[c], &[a, b, d, e], &Known::default(), T1, &policy());
    assert!(plan.actions.is_empty(), "{plan:?}");
    let got: Vec<(&str, &str)> = plan
        .conflicts
        .iter()
        .map(|c| (c.pod.name.as_str(), c.reason.metric_label()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("b", "mismatch"),
            ("d", "not_holder"),
            ("e", "missing_claim")
        ]
    );
    assert_eq!(
        plan.conflicts[1].to_string(),
        "pinip.io/allocation names 10.0.0.15/24, but IPClaim 10-0-0-15 is held by pod ns/a"
    );
}

#[test]
fn two_live_pods_of_one_owner_one_claim() {
    // The claim stays with the pod it is bound to; the other pod is a conflict.
    let owner = json!({"kind": "Deployment", "namespace": "ns", "name": "web"});
    let c = claim(
        "10-0-0-17",
        "10.0.0.17/24",
        owner,
        "none",
        json!({
        "spec": {"pod": {"name": "web-abc-2", "uid": "u2"}, "node": "n"}, "status": {"phase": "Bound"}}),
    );
    let older = pod(
        "web-abc-1",
        "u1",
        "web",
        Some("n"),
        &[("10-0-0-17", "10.0.0.17/24")],
    );
    let holder = pod(
        "web-abc-2",
        "u2",
        "web",
        Some("n"),
        &[("10-0-0-17", "10.0.0.17/24")],
    );
    let plan = run(&[c], &[older, holder], &Known::default(), T1, &policy());
    assert!(plan.actions.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].pod.name, "web-abc-1");
    assert_eq!(
        plan.conflicts[0].reason,
        ConflictReason::NotHolder {
            holder: "pod ns/web-abc-2".into()
        }
    );
}

#[test]
fn fresh_pod_naming_missing_claim_is_not_yet_a_conflict() {
    let mut p = pod("young", "uy", "", None, &[("10-0-0-18", "10.0.0.18/24")]);
    p.created = Some(ts("2030-01-01T00:00:55Z"));
    let plan = run(&[], &[p], &Known::default(), T1, &policy());
    assert!(plan.conflicts.is_empty());
    assert_eq!(plan.wake_in, Some(Duration::from_secs(5)));
}

#[test]
fn in_flight_claims_wait_for_the_watch() {
    let c = claim(
        "10-0-0-19",
        "10.0.0.19/24",
        pod_owner("a"),
        "none",
        json!({"spec": {"pod": {"name": "a"}}}),
    );
    let p = pod("a", "u1", "", None, &[("10-0-0-19", "10.0.0.19/24")]);
    let in_flight: HashSet<String> = ["10-0-0-19".to_string()].into();
    let plan = plan(
        &World {
            claims: &[Arc::new(c)],
            unreadable: &HashSet::new(),
            exists: &|_| false,
            pods: &[p],
            workloads: &Known::default(),
            in_flight: &in_flight,
            now: ts(T1),
        },
        &policy(),
    );
    assert_eq!(plan, Plan::default());
}

/// A reconcile of what changed holds some claims only: a pod naming one outside them is
/// not missing it; a claim that exists nowhere is.
#[test]
fn a_claim_outside_the_scope_is_not_missing() {
    let p = pod(
        "a",
        "u1",
        "",
        None,
        &[("10-0-0-20", "10.0.0.20/24"), ("10-0-0-21", "10.0.0.21/24")],
    );
    let decide = |exists: &dyn Fn(&str) -> bool| {
        plan(
            &World {
                claims: &[],
                unreadable: &HashSet::new(),
                exists,
                pods: std::slice::from_ref(&p),
                workloads: &Known::default(),
                in_flight: &HashSet::new(),
                now: ts(T1),
            },
            &policy(),
        )
    };
    let missing: Vec<String> = decide(&|n| n == "10-0-0-20")
        .conflicts
        .into_iter()
        .map(|c| c.claim)
        .collect();
    assert_eq!(missing, ["10-0-0-21"]);
    assert_eq!(decide(&|_| true).conflicts, []);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let bad: IPClaim = serde_json::from_value(json!({
        "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim", "metadata": {"name": "x"},
        "spec": {"pool": "p", "address": "not-an-ip", "owner": {"kind": "Pod", "namespace": "n", "name": "a"}}}))
    .unwrap();
    assert!(ClaimInfo::read(&bad).unwrap_err().contains("not-an-ip"));
    let bad_label: IPClaim = serde_json::from_value(json!({
        "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
        "metadata": {"name": "x", "labels": {RETAIN_LABEL: "forever"}},
        "spec": {"pool": "p", "address": "10.0.0.1/24", "owner": {"kind": "Pod", "namespace": "n", "name": "a"}}}))
    .unwrap();
    assert!(ClaimInfo::read(&bad_label).is_err());
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "annotations": {ALLOCATION: "{garbage"}}}))
    .unwrap();
    assert!(PodInfo::read(&p, &TestControllers).is_err());
    let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
    assert_eq!(PodInfo::read(&plain, &TestControllers), Ok(None));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Random claims (bound or not, to live or gone pods) and pods naming them.
    fn world() -> impl Strategy<Value = (Vec<ClaimInfo>, Vec<PodInfo>, u64)> {
        let claim_s = (0u8..8, prop::option::of(0u8..6), prop::bool::ANY, 0u8..3);
        let pod_s = (
            0u8..6,
            prop::collection::vec(0u8..8, 0..3),
            prop::bool::ANY,
            0u8..3,
        );
        (
            prop::collection::vec(claim_s, 0..8),
            prop::collection::vec(pod_s, 0..6),
            0u64..400,
        )
            .prop_map(|(cs, ps, secs)| {
                let mut seen = HashSet::new();
                let claims = cs
                    .into_iter()
                    .filter(|(n, ..)| seen.insert(*n))
                    .map(|(n, bound, scheduled, retain)| {
                        let retain = ["none", "ordinal", "app"][retain as usize];
                        let extra = match bound {
                            Some(p) if scheduled => json!({"spec": {"pod": {"name": format!("p{p}"), "uid": format!("u{p}")},
                                "node": "n"}}),
                            // Handed over by the webhook: a name, no uid yet.
                            Some(p) => json!({"spec": {"pod": {"name": format!("p{p}")}}}),
                            None => json!({}),
                        };
                        claim(&format!("10-0-0-{n}"), &format!("10.0.0.{n}/24"), pod_owner("p0"), retain, extra)
                    })
                    .collect();
                let mut seen = HashSet::new();
                let pods = ps
                    .into_iter()
                    .filter(|(n, ..)| seen.insert(*n))
                    .map(|(n, names, scheduled, addr_skew)| {
                        let ips: Vec<(String, String)> = names
                            .iter()
                            .map(|c| (format!("10-0-0-{c}"), format!("10.0.0.{}/24", c + addr_skew / 2)))
                            .collect();
                        let ips: Vec<(&str, &str)> = ips.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                        pod(&format!("p{n}"), &format!("u{n}"), "", scheduled.then_some("n"), &ips)
                    })
                    .collect();
                (claims, pods, secs)
            })
    }

    proptest! {
        #[test]
        fn invariants((claims, pods, secs) in world()) {
            let now = after(ts(T0), Duration::from_secs(secs)).unwrap();
            let claims: Vec<Arc<ClaimInfo>> = claims.into_iter().map(Arc::new).collect();
            let plan = plan(
                &World {
                    claims: &claims,
                    unreadable: &HashSet::new(),
                    exists: &|_| false,
                    pods: &pods,
                    workloads: &Known::default(),
                    in_flight: &HashSet::new(),
                            now,
                },
                &policy(),
            );
            for a in &plan.actions {
                let c = claims.iter().find(|c| c.name == a.claim()).unwrap();
                match a {
                    Action::Bind(b) => {
                        // Binds only to a live pod that names exactly this claim's address,
                        // and only to the holder the claim records.
                        let p = pods.iter().find(|p| p.key == b.pod).unwrap();
                        prop_assert!(!p.terminal);
                        prop_assert!(p.ips.iter().any(|ip| ip.claim == c.name && ip.address == c.address));
                        match c.pod.as_ref() {
                            Some(r) => {
                                prop_assert_eq!(&r.name, &p.key.name);
                                prop_assert!(r.uid.is_empty() || r.uid == p.key.uid);
                            }
                            // A reservation of an older webhook that recorded no pod.
                            None => prop_assert_eq!(c.phase, ClaimPhase::Reserved),
                        }
                    }
                    Action::Release { .. } | Action::Delete { .. } => {
                        // Never takes an address from a live pod that names it, holder or not.
                        let named = pods.iter().any(|p| !p.terminal
                            && p.ips.iter().any(|ip| ip.claim == c.name && ip.address == c.address && ip.pool == c.pool));
                        prop_assert!(!named, "{a:?}");
                        // A reservation no pod took is reclaimed only after the grace period.
                        if a.why() == Some(&Why::NeverAppeared) && c.phase == ClaimPhase::Reserved {
                            prop_assert!(now >= after(c.since.unwrap(), GRACE).unwrap());
                        }
                    }
                }
                // Deletes never hit retained members unless their workload is gone
                // (a retained claim that was never bound is no member yet).
                if let Action::Delete { why, .. } = a {
                    prop_assert!(c.retain == Retain::None
                        || matches!(why, Why::WorkloadGone(_))
                        || (*why == Why::NeverAppeared && c.workload.is_none()));
                }
            }
            // At most one action per claim.
            let names: HashSet<&str> = plan.actions.iter().map(Action::claim).collect();
            prop_assert_eq!(names.len(), plan.actions.len());
        }
    }
}
