//! Who holds a claim, and when it may change hands: the one rule the webhook (before handing
//! an existing claim to a new pod) and the binder (before releasing or deleting a claim)
//! both apply. The claim's `spec.pod` is the record; the API server, read right before the
//! write, says whether the recorded holder still lives. A matching owner identity never
//! enters into it.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::annotations::{ALLOCATION, Allocation};
use crate::{ClaimPhase, IPClaim, PodRef};

/// The holder a claim records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// Released and recording no pod: nobody holds it.
    Free,
    /// Reserved for, or bound to, the pod of this name (uid once the binder bound it).
    Pod { name: &'a str, uid: Option<&'a str> },
    /// Reserved for a pod the API server had not named yet (`generateName`).
    Prefix { generate_name: &'a str },
    /// Reserved or bound without any pod recorded (an interrupted release): the namespace's
    /// pods must be asked.
    Unknown,
}

/// What the holder rule reads of a claim: implemented by the API object and by the parsed
/// [`crate::ClaimInfo`] the ledger keeps, so the rule is written once for both.
pub trait ClaimHolder {
    fn claim_name(&self) -> &str;
    /// `spec.pod`, as recorded.
    fn holder_pod(&self) -> Option<&PodRef>;
    fn claim_phase(&self) -> ClaimPhase;
    /// The namespace of every pod that may hold this claim (its owner's).
    fn holder_namespace(&self) -> &str;
    /// When the current reservation was made: the holder record's `reservedAt`, else the
    /// status' (older claims), else the claim's creation.
    fn reserved_since(&self) -> Option<Timestamp>;

    /// The holder this claim records. A recorded pod wins over the phase: the webhook hands
    /// a Released claim over by writing its new holder, and the binder sets the phase later.
    fn record(&self) -> Record<'_> {
        let pod = self.holder_pod();
        if let Some(p) = pod.filter(|p| !p.name.is_empty()) {
            return Record::Pod {
                name: &p.name,
                uid: Some(p.uid.as_str()).filter(|u| !u.is_empty()),
            };
        }
        if let Some(p) = pod.filter(|p| !p.generate_name.is_empty()) {
            return Record::Prefix {
                generate_name: &p.generate_name,
            };
        }
        match self.claim_phase() {
            ClaimPhase::Released => Record::Free,
            _ => Record::Unknown,
        }
    }

    /// Whether a reservation without a uid is old enough that its pod, if it had been
    /// created, would exist by now (admission of that pod is over).
    fn reservation_settled(&self, now: Timestamp, hold: Duration) -> bool {
        self.reserved_since()
            .and_then(|t| t.checked_add(hold).ok())
            .is_none_or(|due| due <= now)
    }
}

impl ClaimHolder for IPClaim {
    fn claim_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    fn holder_pod(&self) -> Option<&PodRef> {
        self.spec.pod.as_ref()
    }

    fn claim_phase(&self) -> ClaimPhase {
        self.phase()
    }

    fn holder_namespace(&self) -> &str {
        &self.spec.owner.namespace
    }

    fn reserved_since(&self) -> Option<Timestamp> {
        self.spec
            .pod
            .as_ref()
            .and_then(|p| p.reserved_at.as_ref())
            .or(self.status.as_ref().and_then(|s| s.reserved_at.as_ref()))
            .or(self.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
    }
}

/// Whether `pod`'s allocation names claim `claim`. An allocation this version cannot read (a
/// newer format during an upgrade) names every claim whose name it contains: unknown never
/// means free.
pub fn names_claim(pod: &Pod, claim: &str) -> bool {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOCATION))
    else {
        return false;
    };
    match raw.parse::<Allocation>() {
        Ok(a) => a
            .interfaces
            .iter()
            .flat_map(|i| &i.ips)
            .any(|ip| ip.claim == claim),
        Err(_) => raw.contains(&format!("\"{claim}\"")),
    }
}

/// Whether a pod may still have its sandbox (and so its address): not Succeeded or Failed,
/// and in any phase while it is being deleted (its object goes only once the node tore the
/// sandbox down; a terminal phase can be reported before that).
pub fn is_live(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Why a claim may not change hands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// A live pod's allocation names it.
    ByPod { pod: String },
    /// Reserved moments ago for a pod that is still being admitted.
    InAdmission { pod: String },
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::ByPod { pod } => write!(f, "live pod {pod}"),
            Held::InAdmission { pod } => write!(f, "pod {pod}, which is still being created"),
        }
    }
}

/// What the API server says about the pods that could hold a claim, read right before a
/// write that needs the claim free.
#[derive(Clone, Debug)]
pub enum Observed<'a> {
    /// For [`Record::Pod`]: the pod of the recorded name, if it exists.
    Named(Option<&'a Pod>),
    /// For [`Record::Prefix`] and [`Record::Unknown`]: the pods of the holder's namespace.
    Namespace(&'a [Pod]),
}

/// Whether `claim` is free to change hands (or be released), given what the API server said
/// and whether its reservation is settled (see [`ClaimHolder::reservation_settled`]). Free means:
/// Released with no holder, or the recorded holder verifiably gone — not found, another pod of
/// that name, Succeeded/Failed, or never created once admission is over — and no live pod's
/// allocation naming the claim among those asked.
///
/// `for_pod`: the name of the pod the claim would go to, when known. A reservation for that
/// same name whose pod does not exist is an earlier attempt to create this very pod (a later
/// admission step refused it, and its controller retries): pod names are unique in a
/// namespace, so at most one of the attempts can ever exist.
pub fn check_free(
    claim: &impl ClaimHolder,
    observed: &Observed<'_>,
    settled: bool,
    for_pod: Option<&str>,
) -> Result<(), Held> {
    let name = claim.claim_name();
    let ns = claim.holder_namespace();
    let shown = |pod: &str| format!("{ns}/{pod}");
    match (claim.record(), observed) {
        (Record::Free, _) => Ok(()),
        (Record::Pod { name: pod, uid }, Observed::Named(found)) => match found {
            Some(p) if is_live(p) && names_claim(p, name) => Err(Held::ByPod { pod: shown(pod) }),
            // Not created (yet), or a pod of that name that does not use the claim: the
            // reserved pod is gone once it was bound (uid known) or its admission is over.
            _ if uid.is_some() || settled || for_pod == Some(pod) => Ok(()),
            _ => Err(Held::InAdmission { pod: shown(pod) }),
        },
        (Record::Prefix { .. } | Record::Unknown, Observed::Namespace(pods)) => {
            if let Some(p) = pods.iter().find(|p| is_live(p) && names_claim(p, name)) {
                return Err(Held::ByPod {
                    pod: shown(p.metadata.name.as_deref().unwrap_or_default()),
                });
            }
            match claim.record() {
                _ if settled => Ok(()),
                Record::Prefix { generate_name } => Err(Held::InAdmission {
                    pod: shown(&format!("{generate_name}*")),
                }),
                _ => Err(Held::InAdmission {
                    pod: shown("<unnamed>"),
                }),
            }
        }
        // Asked the wrong question: never free on a mismatch.
        (Record::Pod { name: pod, .. }, Observed::Namespace(_)) => {
            Err(Held::ByPod { pod: shown(pod) })
        }
        (_, Observed::Named(_)) => Err(Held::InAdmission {
            pod: shown("<unnamed>"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claim(pod: Value, phase: Option<&str>) -> IPClaim {
        let mut v = json!({"apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
            "metadata": {"name": "10-0-0-5", "creationTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"pool": "p", "address": "10.0.0.5/24",
                "owner": {"kind": "Pod", "namespace": "ns", "name": "a"}}});
        if !pod.is_null() {
            v["spec"]["pod"] = pod;
        }
        if let Some(ph) = phase {
            v["status"] = json!({"phase": ph});
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, claim: &str, phase: &str) -> Pod {
        let alloc = json!({"version": 1, "interfaces": [{"name": "eth0", "ips": [
            {"address": "10.0.0.5/24", "pool": "p", "claim": claim}]}]});
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "annotations": {ALLOCATION: alloc.to_string()}}, "status": {"phase": phase}}))
        .unwrap()
    }

    #[test]
    fn records() {
        assert_eq!(claim(Value::Null, Some("Released")).record(), Record::Free);
        assert_eq!(claim(Value::Null, None).record(), Record::Unknown);
        assert_eq!(
            claim(json!({"name": "a"}), Some("Released")).record(),
            Record::Pod {
                name: "a",
                uid: None
            },
            "a recorded pod wins over Released: the webhook handed it over"
        );
        assert_eq!(
            claim(json!({"generateName": "web-"}), None).record(),
            Record::Prefix {
                generate_name: "web-"
            }
        );
    }

    #[test]
    fn a_live_pod_naming_the_claim_always_holds_it() {
        let live = pod("a", "10-0-0-5", "Running");
        for rec in [json!({"name": "a", "uid": "u1"}), json!({"name": "a"})] {
            let c = claim(rec, Some("Bound"));
            assert!(check_free(&c, &Observed::Named(Some(&live)), true, Some("a")).is_err());
        }
        let c = claim(json!({"generateName": "a"}), None);
        let pods = [live.clone()];
        assert_eq!(
            check_free(&c, &Observed::Namespace(&pods), true, None),
            Err(Held::ByPod { pod: "ns/a".into() })
        );
    }

    #[test]
    fn deleting_pods_and_unreadable_allocations_hold() {
        let bound = claim(json!({"name": "a", "uid": "u1"}), Some("Bound"));
        let mut failing = pod("a", "10-0-0-5", "Failed");
        failing.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2030-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert!(check_free(&bound, &Observed::Named(Some(&failing)), true, None).is_err());
        let mut newer = pod("a", "10-0-0-5", "Running");
        newer.metadata.annotations = Some(
            [(
                ALLOCATION.to_string(),
                r#"{"version":2,"interfaces":[{"ips":[{"claim":"10-0-0-5"}]}]}"#.to_string(),
            )]
            .into(),
        );
        assert!(names_claim(&newer, "10-0-0-5"));
        assert!(!names_claim(&newer, "10-0-0-50"));
    }

    #[test]
    fn gone_holders_free_the_claim() {
        let bound = claim(json!({"name": "a", "uid": "u1"}), Some("Bound"));
        assert_eq!(
            check_free(&bound, &Observed::Named(None), false, None),
            Ok(())
        );
        let done = pod("a", "10-0-0-5", "Succeeded");
        assert_eq!(
            check_free(&bound, &Observed::Named(Some(&done)), false, None),
            Ok(())
        );
        let other = pod("a", "10-9-9-9", "Running");
        assert_eq!(
            check_free(&bound, &Observed::Named(Some(&other)), false, None),
            Ok(())
        );
    }

    #[test]
    fn fresh_reservations_wait_for_admission_to_end() {
        let reserved = claim(json!({"name": "a"}), None);
        assert!(matches!(
            check_free(&reserved, &Observed::Named(None), false, Some("b")),
            Err(Held::InAdmission { .. })
        ));
        assert_eq!(
            check_free(&reserved, &Observed::Named(None), true, None),
            Ok(())
        );
        // An earlier attempt to create the same pod (refused after /mutate) does not block it.
        assert_eq!(
            check_free(&reserved, &Observed::Named(None), false, Some("a")),
            Ok(())
        );
        let prefix = claim(json!({"generateName": "web-"}), None);
        assert!(check_free(&prefix, &Observed::Namespace(&[]), false, None).is_err());
        assert_eq!(
            check_free(&prefix, &Observed::Namespace(&[]), true, None),
            Ok(())
        );
        // Asking the wrong question never frees a claim.
        assert!(check_free(&reserved, &Observed::Namespace(&[]), true, None).is_err());
    }

    #[test]
    fn settled_counts_from_the_holder_record() {
        let now: Timestamp = "2030-01-01T00:01:00Z".parse().unwrap();
        let c = claim(
            json!({"name": "a", "reservedAt": "2030-01-01T00:00:50Z"}),
            None,
        );
        assert!(!c.reservation_settled(now, Duration::from_secs(30)));
        assert!(c.reservation_settled(now, Duration::from_secs(10)));
        let old = claim(json!({"name": "a"}), None);
        assert!(old.reservation_settled(now, Duration::from_secs(30)));
    }
}
