//! Reading a pod from the Kubernetes API (one GET of its metadata), and STATUS's reachability
//! probe. Everything here is bounded by the ipam `timeout` as a whole.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::time::Instant;

use crate::config::IpamConfig;
use crate::error::CniError;

/// Where and how long to talk to the API server.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeTarget {
    /// The kubeconfig named in the ipam config; `None` infers (`$KUBECONFIG`, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The bound on the whole operation.
    pub timeout: Duration,
    /// The same, as the operator wrote it (for messages).
    pub timeout_secs: f64,
}

impl KubeTarget {
    pub fn from_ipam(ipam: &IpamConfig) -> KubeTarget {
        KubeTarget {
            kubeconfig: ipam.kubeconfig.clone(),
            timeout: ipam.timeout,
            timeout_secs: ipam.timeout_secs,
        }
    }

    fn source_desc(&self) -> String {
        match &self.kubeconfig {
            Some(p) => format!("kubeconfig {}", p.display()),
            None => "no ipam.kubeconfig: tried $KUBECONFIG, ~/.kube/config and in-cluster".into(),
        }
    }
}

/// A pod named by `K8S_POD_NAMESPACE` and `K8S_POD_NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// `pod NS/NAME`, for messages.
    pub fn label(&self) -> String {
        format!("pod {}/{}", self.namespace, self.name)
    }
}

/// What pinip needs of a pod: its uid and annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Access to the API server; a trait so that the verbs can be tested without one.
pub trait PodApi {
    /// One GET of the pod's metadata.
    fn get_pod(&self, target: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError>;
    /// Whether the API server answers (STATUS).
    fn probe(&self, target: &KubeTarget) -> Result<(), CniError>;
}

/// The real API server, through `kube` on a current-thread tokio runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubeApi;

impl PodApi for KubeApi {
    fn get_pod(&self, target: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError> {
        let subject = pod.label();
        block_on(async {
            let deadline = Instant::now() + target.timeout;
            let (client, server) = connect(target, deadline, &subject).await?;
            let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
            match tokio::time::timeout_at(deadline, api.get_metadata(&pod.name)).await {
                Err(_) => Err(timeout_error(target, &server, &subject)),
                Ok(Err(e)) => Err(classify(e, &server, &subject)),
                Ok(Ok(meta)) => Ok(PodMeta {
                    uid: meta.metadata.uid,
                    annotations: meta.metadata.annotations.unwrap_or_default(),
                }),
            }
        })
    }

    fn probe(&self, target: &KubeTarget) -> Result<(), CniError> {
        block_on(async {
            let deadline = Instant::now() + target.timeout;
            let subject = "the API server version";
            let unavailable = |server: &str, reason: String| CniError::StatusUnavailable {
                server: server.to_string(),
                reason,
            };
            let (client, server) = match connect(target, deadline, subject).await {
                Ok(c) => c,
                Err(e @ CniError::ApiTimeout { .. }) => {
                    return Err(unavailable("(unknown)", e.msg()));
                }
                Err(e) => return Err(e),
            };
            match tokio::time::timeout_at(deadline, client.apiserver_version()).await {
                Err(_) => Err(unavailable(
                    &server,
                    format!("no answer within {}s", target.timeout_secs),
                )),
                Ok(Err(e)) => Err(unavailable(&server, error_chain(&e))),
                Ok(Ok(_)) => Ok(()),
            }
        })
    }
}

fn block_on<T>(f: impl Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    // ring is the workspace's one rustls provider; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::Internal {
            reason: format!("cannot start the async runtime: {e}"),
        })?;
    rt.block_on(f)
}

/// Load the client configuration and build a client, within `deadline`.
async fn connect(
    target: &KubeTarget,
    deadline: Instant,
    subject: &str,
) -> Result<(Client, String), CniError> {
    let mut config = match tokio::time::timeout_at(deadline, load_config(target)).await {
        Err(_) => return Err(timeout_error(target, "(not yet known)", subject)),
        Ok(r) => r?,
    };
    let server = config.cluster_url.to_string();
    // The deadline bounds connect, TLS and the response as a whole; kube's own per-phase
    // timeouts are longer and never fire first.
    // The runtime retries a failed ADD (code 11); retrying here would only hide the cause
    // behind a timeout.
    config.default_retry = false;
    let client = Client::try_from(config).map_err(|e| CniError::Kubeconfig {
        source_desc: target.source_desc(),
        reason: error_chain(&e),
    })?;
    Ok((client, server))
}

async fn load_config(target: &KubeTarget) -> Result<Config, CniError> {
    let fail = |reason: String| CniError::Kubeconfig {
        source_desc: target.source_desc(),
        reason,
    };
    match &target.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| fail(error_chain(&e)))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| fail(error_chain(&e)))
        }
        None => Config::infer().await.map_err(|e| fail(error_chain(&e))),
    }
}

fn timeout_error(target: &KubeTarget, server: &str, subject: &str) -> CniError {
    CniError::ApiTimeout {
        server: server.to_string(),
        subject: subject.to_string(),
        secs: target.timeout_secs.to_string(),
    }
}

/// Map a client error to the CNI error an operator can act on.
pub fn classify(e: kube::Error, server: &str, subject: &str) -> CniError {
    match &e {
        kube::Error::Api(status) => match status.code {
            404 => CniError::PodNotFound {
                subject: subject.to_string(),
                server: server.to_string(),
            },
            429 | 500..=599 => CniError::ApiUnreachable {
                server: server.to_string(),
                subject: subject.to_string(),
                reason: format!("HTTP {}: {}", status.code, status.message),
            },
            code => CniError::ApiRejected {
                server: server.to_string(),
                subject: subject.to_string(),
                status: code,
                reason: status.message.clone(),
            },
        },
        kube::Error::Auth(_) | kube::Error::RustlsTls(_) | kube::Error::InferKubeconfig(_) => {
            CniError::Kubeconfig {
                source_desc: format!("credentials for {server}"),
                reason: error_chain(&e),
            }
        }
        other => CniError::ApiUnreachable {
            server: server.to_string(),
            subject: subject.to_string(),
            reason: error_chain(other),
        },
    }
}

/// An error and its sources as one line, skipping repeated messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> kube::Error {
        let mut s = Status::failure(message, "Reason");
        s.code = code;
        kube::Error::Api(Box::new(s))
    }

    fn json(e: CniError) -> String {
        e.to_json("1.0.0")
    }

    #[test]
    fn classify_api_statuses() {
        let srv = "https://10.0.0.1:6443/";
        assert_eq!(
            json(classify(
                api_error(404, "pods \"web-0\" not found"),
                srv,
                "pod db/web-0"
            )),
            r#"{"cniVersion":"1.0.0","code":103,"msg":"pod db/web-0 not found","details":"the Kubernetes API server https://10.0.0.1:6443/ has no such pod; it was deleted before its network was set up"}"#
        );
        assert_eq!(
            json(classify(
                api_error(
                    403,
                    "pods \"web-0\" is forbidden: User \"node\" cannot get resource \"pods\""
                ),
                srv,
                "pod db/web-0"
            )),
            r#"{"cniVersion":"1.0.0","code":104,"msg":"the Kubernetes API server https://10.0.0.1:6443/ refused to return pod db/web-0: HTTP 403","details":"pods \"web-0\" is forbidden: User \"node\" cannot get resource \"pods\"; grant \"get\" on pods to the kubeconfig's user (RBAC)"}"#
        );
        assert_eq!(
            json(classify(
                api_error(503, "etcdserver: leader changed"),
                srv,
                "pod db/web-0"
            )),
            r#"{"cniVersion":"1.0.0","code":11,"msg":"cannot reach the Kubernetes API server https://10.0.0.1:6443/ to read pod db/web-0","details":"HTTP 503: etcdserver: leader changed; this is transient if the API server is restarting: try again later"}"#
        );
        assert_eq!(
            classify(api_error(429, "too many requests"), srv, "pod a/b").code(),
            11
        );
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            error_chain(&e),
            "client error (Connect): Connection refused (os error 111)"
        );
    }

    #[test]
    fn target_from_ipam() {
        let ipam = IpamConfig {
            kubeconfig: Some("/k".into()),
            ..IpamConfig::default()
        };
        let t = KubeTarget::from_ipam(&ipam);
        assert_eq!(t.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.source_desc(), "kubeconfig /k");
    }
}
