//! Where the pod's `pinip.io/allocation` comes from — the runtime's
//! `io.kubernetes.cri.pod-annotations` capability when present (no API call), else one GET of
//! the pod named in `CNI_ARGS` — and picking the entry for this interface.

use pinip_api::annotations::{ALLOCATION, Allocation, InterfaceAllocation};
use serde_json::Value;

use crate::args::{CNI_ARGS, CniArgs, K8S_POD_NAME, K8S_POD_NAMESPACE};
use crate::config::{NetConf, kind};
use crate::error::CniError;
use crate::pod::{KubeTarget, PodApi, PodRef};

/// Where the annotations were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    RuntimeConfig,
    Api,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::RuntimeConfig => "runtimeConfig pod annotations",
            Origin::Api => "the Kubernetes API",
        }
    }
}

/// The pod named by `K8S_POD_NAMESPACE` and `K8S_POD_NAME` (code 4 when either is missing).
pub fn pod_ref(args: &CniArgs) -> Result<PodRef, CniError> {
    match (args.pod_namespace(), args.pod_name()) {
        (Some(ns), Some(name)) => {
            if !pinip_api::names::is_dns1123_label(ns) {
                return Err(bad_name(K8S_POD_NAMESPACE, ns, "namespace", "label"));
            }
            if !pinip_api::names::is_dns1123_subdomain(name) {
                return Err(bad_name(K8S_POD_NAME, name, "pod name", "subdomain"));
            }
            Ok(PodRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
        (ns, name) => {
            let mut missing = Vec::new();
            if ns.is_none() {
                missing.push(K8S_POD_NAMESPACE);
            }
            if name.is_none() {
                missing.push(K8S_POD_NAME);
            }
            Err(CniError::PodIdentityMissing { missing })
        }
    }
}

fn bad_name(key: &str, value: &str, what: &str, form: &str) -> CniError {
    CniError::EnvInvalid {
        var: CNI_ARGS,
        reason: format!(
            "CNI_ARGS {key}={value:?} is not a valid {what} (a lowercase RFC 1123 {form})"
        ),
    }
}

/// The raw `pinip.io/allocation` value (`None` when the pod has none) and where it was read.
/// `target` is used only when the runtime did not pass the annotations.
pub fn allocation_annotation(
    conf: &NetConf,
    args: &CniArgs,
    target: &KubeTarget,
    api: &dyn PodApi,
    subject: &str,
) -> Result<(Option<String>, Origin), CniError> {
    if let Some(annotations) = &conf.pod_annotations {
        return match annotations.get(ALLOCATION) {
            None | Some(Value::Null) => Ok((None, Origin::RuntimeConfig)),
            Some(Value::String(s)) => Ok((Some(s.clone()), Origin::RuntimeConfig)),
            Some(other) => Err(CniError::MalformedAllocation {
                subject: subject.to_string(),
                reason: format!("{ALLOCATION}: must be a string, found {}", kind(other)),
            }),
        };
    }
    let pod = pod_ref(args)?;
    let meta = api.get_pod(target, &pod)?;
    if let (Some(want), Some(found)) = (args.pod_uid(), meta.uid.as_deref())
        && want != found
    {
        return Err(CniError::PodReplaced {
            subject: pod.label(),
            expected_uid: want.to_string(),
            found_uid: found.to_string(),
        });
    }
    Ok((meta.annotations.get(ALLOCATION).cloned(), Origin::Api))
}

/// The allocation entry for `ifname`, or else for the network `network` (Multus secondary
/// networks are named by network).
pub fn interface_entry(
    raw: Option<&str>,
    subject: &str,
    ifname: &str,
    network: Option<&str>,
) -> Result<InterfaceAllocation, CniError> {
    let raw = raw.ok_or_else(|| CniError::NoAllocation {
        subject: subject.to_string(),
    })?;
    let allocation: Allocation =
        raw.parse()
            .map_err(|e: pinip_api::annotations::AnnotationError| {
                CniError::MalformedAllocation {
                    subject: subject.to_string(),
                    reason: e.to_string(),
                }
            })?;
    let entry = allocation
        .interface(ifname)
        .or_else(|| network.and_then(|n| allocation.interface(n)));
    match entry {
        Some(e) if e.ips.is_empty() => Err(CniError::MalformedAllocation {
            subject: subject.to_string(),
            reason: format!(
                "{ALLOCATION}: the entry for {:?} lists no addresses",
                e.name
            ),
        }),
        Some(e) => Ok(e.clone()),
        None => Err(CniError::NoInterfaceEntry {
            subject: subject.to_string(),
            ifname: ifname.to_string(),
            network: network.filter(|n| *n != ifname).map(str::to_string),
            present: allocation
                .interfaces
                .iter()
                .map(|i| i.name.clone())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::PodMeta;
    use serde_json::json;
    use std::cell::RefCell;
    use std::time::Duration;

    const ALLOC: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}]},{"name":"macvlan-net","ips":[{"address":"10.30.0.7/24","pool":"green","claim":"10-30-0-7"}]}]}"#;

    struct FakeApi {
        answer: Result<PodMeta, CniError>,
        calls: RefCell<Vec<PodRef>>,
    }

    impl PodApi for FakeApi {
        fn get_pod(&self, _t: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError> {
            self.calls.borrow_mut().push(pod.clone());
            self.answer.clone()
        }
        fn probe(&self, _t: &KubeTarget) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn fake(answer: Result<PodMeta, CniError>) -> FakeApi {
        FakeApi {
            answer,
            calls: RefCell::new(Vec::new()),
        }
    }

    fn target() -> KubeTarget {
        KubeTarget {
            kubeconfig: None,
            timeout: Duration::from_secs(1),
            timeout_secs: 1.0,
        }
    }

    fn netconf(v: serde_json::Value) -> NetConf {
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    fn meta(uid: &str, alloc: Option<&str>) -> PodMeta {
        PodMeta {
            uid: Some(uid.into()),
            annotations: alloc
                .map(|a| [(ALLOCATION.to_string(), a.to_string())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn runtime_config_wins_without_api_call() {
        let conf = netconf(json!({
            "cniVersion": "1.0.0",
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {ALLOCATION: ALLOC}}
        }));
        let api = fake(Ok(meta("u", None)));
        let args = CniArgs::parse("K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0").unwrap();
        let (raw, origin) =
            allocation_annotation(&conf, &args, &target(), &api, "pod db/web-0").unwrap();
        assert_eq!(raw.as_deref(), Some(ALLOC));
        assert_eq!(origin, Origin::RuntimeConfig);
        assert!(api.calls.borrow().is_empty());
        // Annotations present but no allocation: no fallback to the API either.
        let conf = netconf(json!({
            "cniVersion": "1.0.0",
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"other": "x"}}
        }));
        let (raw, _) =
            allocation_annotation(&conf, &args, &target(), &api, "pod db/web-0").unwrap();
        assert_eq!(raw, None);
        assert!(api.calls.borrow().is_empty());
    }

    #[test]
    fn runtime_config_non_string_allocation() {
        let conf = netconf(json!({
            "cniVersion": "1.0.0",
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {ALLOCATION: {"version": 1}}}
        }));
        let api = fake(Ok(meta("u", None)));
        let e = allocation_annotation(&conf, &CniArgs::default(), &target(), &api, "pod db/web-0")
            .unwrap_err();
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: must be a string, found an object","details":"pinip.io/allocation is written only by the pinip webhook; a webhook newer than this plugin, or a manual edit, causes this: upgrade the pinip CNI plugin on this node, or delete the pod so that it is created again"}"#
        );
    }

    #[test]
    fn api_path_reads_once_and_checks_uid() {
        let conf = netconf(json!({"cniVersion": "1.0.0"}));
        let api = fake(Ok(meta("uid-1", Some(ALLOC))));
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_UID=uid-1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=db",
        )
        .unwrap();
        let (raw, origin) =
            allocation_annotation(&conf, &args, &target(), &api, "pod db/web-0").unwrap();
        assert_eq!(raw.as_deref(), Some(ALLOC));
        assert_eq!(origin, Origin::Api);
        assert_eq!(
            *api.calls.borrow(),
            vec![PodRef {
                namespace: "db".into(),
                name: "web-0".into()
            }]
        );
        let replaced = fake(Ok(meta("uid-2", Some(ALLOC))));
        let e =
            allocation_annotation(&conf, &args, &target(), &replaced, "pod db/web-0").unwrap_err();
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":103,"msg":"pod db/web-0 was deleted and recreated","details":"this sandbox belongs to pod uid uid-1, but the API server now has uid uid-2 under that name; the old pod's sandbox must not take the new pod's address"}"#
        );
    }

    #[test]
    fn api_path_needs_pod_identity() {
        let conf = netconf(json!({"cniVersion": "1.0.0"}));
        let api = fake(Ok(meta("u", None)));
        let e = allocation_annotation(
            &conf,
            &CniArgs::parse("K8S_POD_NAME=web-0").unwrap(),
            &target(),
            &api,
            "container c1",
        )
        .unwrap_err();
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_ARGS lacks K8S_POD_NAMESPACE: cannot tell which pod to read","details":"the runtime passes the pod's annotations in runtimeConfig only when the network configuration declares \"capabilities\": {\"io.kubernetes.cri.pod-annotations\": true}; declare it, or have the runtime pass K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS"}"#
        );
        let e = pod_ref(&CniArgs::default()).unwrap_err();
        assert_eq!(
            e.msg(),
            "CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME: cannot tell which pod to read"
        );
        assert!(api.calls.borrow().is_empty());
    }

    #[test]
    fn pod_names_are_validated_before_any_request() {
        let j = |a: &str| {
            pod_ref(&CniArgs::parse(a).unwrap())
                .unwrap_err()
                .to_json("1.0.0")
        };
        assert_eq!(
            j("K8S_POD_NAMESPACE=db;K8S_POD_NAME=../../secrets/x"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS K8S_POD_NAME=\"../../secrets/x\" is not a valid pod name (a lowercase RFC 1123 subdomain)"}"#
        );
        assert_eq!(
            j("K8S_POD_NAMESPACE=kube.system;K8S_POD_NAME=web-0"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS K8S_POD_NAMESPACE=\"kube.system\" is not a valid namespace (a lowercase RFC 1123 label)"}"#
        );
        let ok =
            pod_ref(&CniArgs::parse("K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0.x").unwrap()).unwrap();
        assert_eq!(ok.label(), "pod db/web-0.x");
    }

    #[test]
    fn api_errors_pass_through() {
        let conf = netconf(json!({"cniVersion": "1.0.0"}));
        let api = fake(Err(CniError::PodNotFound {
            subject: "pod db/web-0".into(),
            server: "https://k/".into(),
        }));
        let args = CniArgs::parse("K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=db").unwrap();
        let e = allocation_annotation(&conf, &args, &target(), &api, "pod db/web-0").unwrap_err();
        assert_eq!(e.code(), 103);
    }

    #[test]
    fn entry_by_ifname_then_network() {
        let e = interface_entry(Some(ALLOC), "pod db/web-0", "eth0", Some("blue-net")).unwrap();
        assert_eq!(e.name, "eth0");
        let e = interface_entry(Some(ALLOC), "pod db/web-0", "net1", Some("macvlan-net")).unwrap();
        assert_eq!(e.name, "macvlan-net");
    }

    #[test]
    fn entry_errors() {
        let j = |e: CniError| e.to_json("0.4.0");
        assert_eq!(
            j(interface_entry(None, "pod db/web-0", "eth0", None).unwrap_err()),
            r#"{"cniVersion":"0.4.0","code":100,"msg":"pod db/web-0 has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created","details":"the pinip webhook writes pinip.io/allocation when a pod is created in a namespace labelled pinip.io/enabled=true; label the namespace (or check that the webhook is running), then delete the pod so that it is created again"}"#
        );
        assert_eq!(
            j(
                interface_entry(Some(ALLOC), "pod db/web-0", "net2", Some("other-net"))
                    .unwrap_err()
            ),
            r#"{"cniVersion":"0.4.0","code":101,"msg":"pinip.io/allocation of pod db/web-0 has no entry for interface net2 or network \"other-net\"","details":"entries present: eth0, macvlan-net; the webhook writes one entry per pod interface (CNI_IFNAME) or Multus network name: request an address for this network, or correct the interface or network name"}"#
        );
        assert_eq!(
            j(interface_entry(
                Some(r#"{"version":1,"interfaces":[]}"#),
                "pod db/web-0",
                "eth0",
                Some("eth0")
            )
            .unwrap_err()),
            r#"{"cniVersion":"0.4.0","code":101,"msg":"pinip.io/allocation of pod db/web-0 has no entry for interface eth0","details":"entries present: none; the webhook writes one entry per pod interface (CNI_IFNAME) or Multus network name: request an address for this network, or correct the interface or network name"}"#
        );
        let details = "pinip.io/allocation is written only by the pinip webhook; a webhook newer than this plugin, or a manual edit, causes this: upgrade the pinip CNI plugin on this node, or delete the pod so that it is created again";
        assert_eq!(
            j(interface_entry(Some("{"), "pod db/web-0", "eth0", None).unwrap_err()),
            format!(
                r#"{{"cniVersion":"0.4.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: not valid JSON for version 1: EOF while parsing an object at line 1 column 1","details":"{details}"}}"#
            )
        );
        assert_eq!(
            j(interface_entry(
                Some(r#"{"version":2,"interfaces":[]}"#),
                "pod db/web-0",
                "eth0",
                None
            )
            .unwrap_err()),
            format!(
                r#"{{"cniVersion":"0.4.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: version 2 is not supported (this build reads version 1)","details":"{details}"}}"#
            )
        );
        assert_eq!(
            j(interface_entry(Some(""), "pod db/web-0", "eth0", None).unwrap_err()),
            format!(
                r#"{{"cniVersion":"0.4.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: value is empty","details":"{details}"}}"#
            )
        );
        assert_eq!(
            j(interface_entry(
                Some(r#"{"version":1,"interfaces":[{"name":"eth0","ips":[]}]}"#),
                "pod db/web-0",
                "eth0",
                None
            )
            .unwrap_err()),
            format!(
                r#"{{"cniVersion":"0.4.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: the entry for \"eth0\" lists no addresses","details":"{details}"}}"#
            )
        );
    }
}
