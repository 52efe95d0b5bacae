//! The workload that keeps a retained claim, recorded on the claim in the annotation
//! [`WORKLOAD_ANNOTATION`] (apiVersion, kind, name, uid) because claims carry no
//! ownerReferences (see [`crate::claim`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::{Deserialize, Serialize};

pub use crate::claim::WORKLOAD_ANNOTATION;

/// A namespaced object that controls pods: StatefulSet, Deployment, ReplicaSet, CloneSet…
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl WorkloadRef {
    pub fn from_owner_ref(namespace: &str, o: &OwnerReference) -> WorkloadRef {
        WorkloadRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: namespace.to_string(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        }
    }

    /// The annotation value (namespace omitted: it is the claim owner's).
    pub fn render(&self) -> String {
        serde_json::json!({
            "apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
        })
        .to_string()
    }

    /// Reads the annotation value of a claim whose owner lives in `namespace`.
    pub fn parse(namespace: &str, value: &str) -> Result<WorkloadRef, String> {
        let mut r: WorkloadRef = serde_json::from_str(value)
            .map_err(|e| format!("{WORKLOAD_ANNOTATION}: {value:?} is not a workload: {e}"))?;
        if r.kind.is_empty() || r.name.is_empty() || r.uid.is_empty() {
            return Err(format!(
                "{WORKLOAD_ANNOTATION}: {value:?} lacks kind, name or uid"
            ));
        }
        r.namespace = namespace.to_string();
        Ok(r)
    }

    /// `group`, `version` of the apiVersion (`apps/v1` → apps, v1; `v1` → "", v1).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        }
    }

    pub fn is_apps_v1(&self, kind: &str) -> bool {
        self.api_version == "apps/v1" && self.kind == kind
    }
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} ({})",
            self.kind, self.namespace, self.name, self.api_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_round_trip() {
        let r = WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            namespace: "db".into(),
            name: "mysql".into(),
            uid: "u-1".into(),
        };
        let v = r.render();
        assert_eq!(
            v,
            r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"mysql","uid":"u-1"}"#
        );
        assert_eq!(WorkloadRef::parse("db", &v), Ok(r.clone()));
        assert_eq!(r.group_version(), ("apps", "v1"));
        assert!(r.is_apps_v1("StatefulSet"));
        assert!(WorkloadRef::parse("db", "{").is_err());
        assert!(
            WorkloadRef::parse(
                "db",
                r#"{"apiVersion":"v1","kind":"","name":"x","uid":"u"}"#
            )
            .is_err()
        );
    }
}
