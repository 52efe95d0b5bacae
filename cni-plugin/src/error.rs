//! Every way the plugin can fail, with its CNI error code, a short message (`msg`, what
//! containerd shows first) and details that tell an operator what to do.

use serde::Serialize;

use crate::version::CniVersion;

/// Plugin-specific codes (100 and up are free for plugins in the CNI spec).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NO_ALLOCATION: u32 = 100;
    pub const NO_INTERFACE_ENTRY: u32 = 101;
    pub const MALFORMED_ALLOCATION: u32 = 102;
    pub const POD_NOT_FOUND: u32 = 103;
    pub const API_REJECTED: u32 = 104;
    pub const CHECK_MISMATCH: u32 = 105;
    pub const API_READER_MISSING: u32 = 106;
    pub const INTERNAL: u32 = 999;
}

const KEYS_ACCEPTED: &str = "type, kubeconfig, timeout, logFile and logLevel";
const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version: {}", describe_requested(requested))]
    IncompatibleVersion { requested: String },

    #[error("config version {version} does not allow {verb}")]
    VerbNotAllowed {
        verb: &'static str,
        version: CniVersion,
    },

    #[error("unsupported field in the ipam config: {key:?}: {value}")]
    UnsupportedField { key: String, value: String },

    #[error("{var} is not set")]
    EnvMissing {
        var: &'static str,
        verb: &'static str,
    },

    #[error("invalid {var}")]
    EnvInvalid { var: &'static str, reason: String },

    #[error("CNI_ARGS lacks {}: cannot tell which pod to read", missing.join(" and "))]
    PodIdentityMissing { missing: Vec<&'static str> },

    #[error("cannot read the network configuration from stdin")]
    Io { reason: String },

    #[error("cannot decode the network configuration on stdin")]
    Decode { reason: String },

    #[error("invalid network configuration: {field}: {reason}")]
    InvalidConfig {
        field: String,
        reason: String,
        hint: String,
    },

    #[error("cannot load the Kubernetes client configuration ({source_desc})")]
    Kubeconfig { source_desc: String, reason: String },

    #[error("cannot reach the Kubernetes API server {server} to read {subject}")]
    ApiUnreachable {
        server: String,
        subject: String,
        reason: String,
    },

    #[error("no answer from the Kubernetes API server {server} within {secs}s reading {subject}")]
    ApiTimeout {
        server: String,
        subject: String,
        secs: String,
    },

    #[error("the Kubernetes API server {server} is not reachable: pinip cannot serve ADD")]
    StatusUnavailable { server: String, reason: String },

    #[error(
        "{subject} has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created"
    )]
    NoAllocation { subject: String },

    #[error(
        "pinip.io/allocation of {subject} has no entry for interface {ifname}{}",
        network_suffix(network)
    )]
    NoInterfaceEntry {
        subject: String,
        ifname: String,
        network: Option<String>,
        present: Vec<String>,
    },

    #[error("{subject}: {reason}")]
    MalformedAllocation { subject: String, reason: String },

    #[error("{subject} not found")]
    PodNotFound { subject: String, server: String },

    #[error("{subject} was deleted and recreated")]
    PodReplaced {
        subject: String,
        expected_uid: String,
        found_uid: String,
    },

    #[error("the Kubernetes API server {server} refused to return {subject}: HTTP {status}")]
    ApiRejected {
        server: String,
        subject: String,
        status: u16,
        reason: String,
    },

    #[error("CHECK failed: the addresses of {ifname} differ from pinip.io/allocation of {subject}")]
    CheckMismatch {
        subject: String,
        ifname: String,
        prev: String,
        allocated: String,
    },

    #[error(
        "pinip cannot serve an ADD that reads the Kubernetes API server: cannot run its API reader {path}"
    )]
    StatusReaderMissing { path: String, reason: String },

    #[error("cannot run {path}, which reads {subject} from the Kubernetes API server")]
    ApiReaderMissing {
        path: String,
        subject: String,
        reason: String,
    },

    #[error("internal error in the pinip CNI plugin")]
    Internal { reason: String },
}

fn describe_requested(requested: &str) -> String {
    if requested.is_empty() {
        "the config has no cniVersion".to_string()
    } else {
        format!("config is {requested:?}")
    }
}

fn network_suffix(network: &Option<String>) -> String {
    match network {
        Some(n) => format!(" or network {n:?}"),
        None => String::new(),
    }
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        use codes::*;
        match self {
            CniError::IncompatibleVersion { .. } | CniError::VerbNotAllowed { .. } => {
                INCOMPATIBLE_VERSION
            }
            CniError::UnsupportedField { .. } => UNSUPPORTED_FIELD,
            CniError::EnvMissing { .. }
            | CniError::EnvInvalid { .. }
            | CniError::PodIdentityMissing { .. } => INVALID_ENV,
            CniError::Io { .. } => IO,
            CniError::Decode { .. } => DECODE,
            CniError::InvalidConfig { .. } | CniError::Kubeconfig { .. } => INVALID_CONFIG,
            CniError::ApiUnreachable { .. } | CniError::ApiTimeout { .. } => TRY_AGAIN_LATER,
            CniError::StatusUnavailable { .. } | CniError::StatusReaderMissing { .. } => {
                NOT_AVAILABLE
            }
            CniError::NoAllocation { .. } => NO_ALLOCATION,
            CniError::NoInterfaceEntry { .. } => NO_INTERFACE_ENTRY,
            CniError::MalformedAllocation { .. } => MALFORMED_ALLOCATION,
            CniError::PodNotFound { .. } | CniError::PodReplaced { .. } => POD_NOT_FOUND,
            CniError::ApiRejected { .. } => API_REJECTED,
            CniError::CheckMismatch { .. } => CHECK_MISMATCH,
            CniError::ApiReaderMissing { .. } => API_READER_MISSING,
            CniError::Internal { .. } => INTERNAL,
        }
    }

    /// The short message (`msg`).
    pub fn msg(&self) -> String {
        self.to_string()
    }

    /// The longer explanation (`details`): the cause and what to do about it.
    pub fn details(&self) -> String {
        match self {
            CniError::IncompatibleVersion { .. } => format!(
                "pinip supports cniVersion {}; set one of them in the network configuration",
                CniVersion::supported_list()
            ),
            CniError::VerbNotAllowed { verb, .. } => format!(
                "{verb} was added in CNI {}; set cniVersion to {} or later in the network configuration",
                CniVersion::minimum_for(verb),
                CniVersion::minimum_for(verb)
            ),
            CniError::UnsupportedField { .. } => format!(
                "the pinip IPAM plugin accepts only {KEYS_ACCEPTED} in \"ipam\"; remove or correct this key"
            ),
            CniError::EnvMissing { var, verb } => {
                format!("the runtime must set {var} for {verb}")
            }
            CniError::EnvInvalid { reason, .. } => reason.clone(),
            CniError::PodIdentityMissing { .. } => format!(
                "the runtime passes the pod's annotations in runtimeConfig only when the network configuration declares \"capabilities\": {{\"{CAPABILITY}\": true}}; declare it, or have the runtime pass K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS"
            ),
            CniError::Io { reason } => reason.clone(),
            CniError::Decode { reason } => format!(
                "{reason}; the runtime must send the plugin configuration as a JSON object"
            ),
            CniError::InvalidConfig { hint, .. } => hint.clone(),
            CniError::Kubeconfig { reason, .. } => format!(
                "{reason}; set \"kubeconfig\" in the ipam config to a readable kubeconfig file, or declare the {CAPABILITY} capability so that no API read is needed"
            ),
            CniError::ApiUnreachable { reason, .. } => {
                format!("{reason}; this is transient if the API server is restarting: try again later")
            }
            CniError::ApiTimeout { secs, .. } => format!(
                "the read is bounded by the ipam \"timeout\" ({secs}s); check that this node can reach the API server, then try again later"
            ),
            CniError::StatusUnavailable { reason, .. } => format!(
                "{reason}; pods whose runtime passes {CAPABILITY} in runtimeConfig do not need the API server"
            ),
            CniError::NoAllocation { .. } => "the pinip webhook writes pinip.io/allocation when a pod is created in a namespace labelled pinip.io/enabled=true; label the namespace (or check that the webhook is running), then delete the pod so that it is created again".to_string(),
            CniError::NoInterfaceEntry { present, .. } => {
                let present = if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                };
                format!(
                    "entries present: {present}; the webhook writes one entry per pod interface (CNI_IFNAME) or Multus network name: request an address for this network, or correct the interface or network name"
                )
            }
            CniError::MalformedAllocation { .. } => "pinip.io/allocation is written only by the pinip webhook; a webhook newer than this plugin, or a manual edit, causes this: upgrade the pinip CNI plugin on this node, or delete the pod so that it is created again".to_string(),
            CniError::PodNotFound { server, .. } => format!(
                "the Kubernetes API server {server} has no such pod; it was deleted before its network was set up"
            ),
            CniError::PodReplaced {
                expected_uid,
                found_uid,
                ..
            } => format!(
                "this sandbox belongs to pod uid {expected_uid}, but the API server now has uid {found_uid} under that name; the old pod's sandbox must not take the new pod's address"
            ),
            CniError::ApiRejected { status, reason, .. } => {
                let hint = match status {
                    401 => "the kubeconfig's credentials were not accepted: renew them",
                    403 => "grant \"get\" on pods to the kubeconfig's user (RBAC)",
                    _ => "see the API server's message",
                };
                if reason.is_empty() {
                    hint.to_string()
                } else {
                    format!("{reason}; {hint}")
                }
            }
            CniError::CheckMismatch {
                prev, allocated, ..
            } => format!(
                "prevResult has [{prev}], the allocation has [{allocated}]; the pod's network no longer matches its decided address: delete the pod so that it is created again"
            ),
            CniError::StatusReaderMissing { reason, .. } => format!(
                "{reason}; install pinip-kube in the same directory as pinip (both come from the pinip-cni package)"
            ),
            CniError::ApiReaderMissing { reason, .. } => format!(
                "{reason}; install pinip-kube in the same directory as pinip (both come from the pinip-cni package), or declare the io.kubernetes.cri.pod-annotations capability so that no API read is needed"
            ),
            CniError::Internal { reason } => format!("{reason}; please report this as a bug"),
        }
    }

    /// The error result JSON of the CNI spec, for the given protocol version.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct ErrorResult<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: String,
            details: String,
        }
        let body = ErrorResult {
            cni_version,
            code: self.code(),
            msg: self.msg(),
            details: self.details(),
        };
        serde_json::to_string(&body).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"1.1.0","code":{},"msg":"internal error"}}"#,
                codes::INTERNAL
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let e = CniError::Io {
            reason: "broken pipe".into(),
        };
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":5,"msg":"cannot read the network configuration from stdin","details":"broken pipe"}"#
        );
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let cases: Vec<(CniError, u32)> = vec![
            (
                CniError::IncompatibleVersion {
                    requested: "0.2.0".into(),
                },
                1,
            ),
            (
                CniError::ApiTimeout {
                    server: "s".into(),
                    subject: "pod a/b".into(),
                    secs: "1".into(),
                },
                11,
            ),
            (
                CniError::StatusUnavailable {
                    server: "s".into(),
                    reason: "r".into(),
                },
                50,
            ),
            (
                CniError::ApiReaderMissing {
                    path: "/opt/cni/bin/pinip-kube".into(),
                    subject: "pod a/b".into(),
                    reason: "No such file or directory".into(),
                },
                106,
            ),
            (CniError::Internal { reason: "x".into() }, 999),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn api_rejected_hints() {
        let e = |status| CniError::ApiRejected {
            server: "https://k:6443".into(),
            subject: "pod a/b".into(),
            status,
            reason: String::new(),
        };
        assert_eq!(
            e(403).details(),
            "grant \"get\" on pods to the kubeconfig's user (RBAC)"
        );
        assert_eq!(
            e(401).details(),
            "the kubeconfig's credentials were not accepted: renew them"
        );
        assert_eq!(e(418).details(), "see the API server's message");
    }
}
