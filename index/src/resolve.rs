//! The verified owner of a pod: [`pinip_api::owner::resolve`] over the watch caches, with one
//! GET for an object the caches do not know (newer than the watch, or a third-party kind).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use pinip_api::owner::{self, Controllers, Looked, Needed, Resolved};

use crate::workloads::Workloads;

#[derive(Clone)]
pub struct Resolver {
    pub client: Client,
    pub workloads: Workloads,
}

/// The caches, then what this resolution fetched.
struct WithFetched<'a> {
    workloads: &'a Workloads,
    fetched: &'a HashMap<Needed, Looked>,
}

impl Controllers for WithFetched<'_> {
    fn look(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Looked {
        match self.workloads.look(api_version, kind, ns, name) {
            Looked::Unknown => self
                .fetched
                .get(&Needed {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    namespace: ns.into(),
                    name: name.into(),
                })
                .cloned()
                .unwrap_or(Looked::Unknown),
            known => known,
        }
    }
}

impl Resolver {
    /// The verified owner of `pod` in `namespace`. An object that cannot be read (no RBAC
    /// for a third-party kind, API errors) does not verify: the pod is then its own owner.
    pub async fn resolve(&self, pod: &Pod, namespace: &str) -> Result<Resolved, kube::Error> {
        let mut fetched = HashMap::new();
        // A pod's chain is at most ReplicaSet → Deployment: two lookups, plus one spare.
        for _ in 0..3 {
            let view = WithFetched {
                workloads: &self.workloads,
                fetched: &fetched,
            };
            match owner::resolve(pod, namespace, &view) {
                Ok(r) => return Ok(r),
                Err(need) => {
                    let seen = self.fetch(&need).await?;
                    fetched.insert(need, seen);
                }
            }
        }
        let view = WithFetched {
            workloads: &self.workloads,
            fetched: &fetched,
        };
        Ok(
            owner::resolve(pod, namespace, &view).unwrap_or_else(|need| Resolved {
                owner: pinip_api::Owner {
                    kind: "Pod".into(),
                    namespace: namespace.into(),
                    name: pod
                        .metadata
                        .name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .or_else(|| pod.metadata.generate_name.clone())
                        .unwrap_or_default(),
                    ordinal: None,
                },
                workload: None,
                unverified: Some(format!(
                    "{} {} could not be looked up",
                    need.kind, need.name
                )),
            }),
        )
    }

    /// One GET (metadata only) of the object a resolution needs.
    async fn fetch(&self, need: &Needed) -> Result<Looked, kube::Error> {
        let api = match crate::dynamic::namespaced_api(
            &self.client,
            &need.api_version,
            &need.kind,
            &need.namespace,
        )
        .await
        {
            Ok(api) => api,
            Err(kube::Error::Discovery(_)) => return Ok(Looked::Absent),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Looked::Absent),
            Err(e) => return Err(e),
        };
        match api.get_metadata_opt(&need.name).await {
            Ok(Some(m)) => Ok(Looked::Found {
                uid: m.metadata.uid.clone().unwrap_or_default(),
                controller: m
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true))
                    .cloned(),
            }),
            Ok(None) => Ok(Looked::Absent),
            // Not allowed to read that kind: it cannot be verified.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(Looked::Absent),
            Err(e) => Err(e),
        }
    }
}
