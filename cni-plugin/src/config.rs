//! The request configuration on stdin: the main plugin's whole network configuration, of which
//! pinip reads `cniVersion`, `name`, `ipam`, `runtimeConfig`, `prevResult` and the GC
//! attachment list. Other keys belong to the main plugin and are ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::{CniVersion, looks_like_semver};

/// The runtimeConfig capability that carries the pod's annotations (containerd's CRI plugin).
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
/// GC's list of still-valid attachments (libcni ≥ 1.2).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
/// GC's list of still-valid attachments as spec 1.1.0 names it.
pub const ATTACHMENTS: &str = "cni.dev/attachments";

/// Default bound on the whole API read, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;
/// Largest accepted `timeout`, in seconds.
pub const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// Decode stdin as a JSON object (code 5/6 on failure).
pub fn decode(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    if stdin.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(CniError::Decode {
            reason: "stdin is empty".into(),
        });
    }
    let value: Value = serde_json::from_slice(stdin).map_err(|e| CniError::Decode {
        reason: e.to_string(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(CniError::Decode {
            reason: format!("expected a JSON object, found {}", kind(&other)),
        }),
    }
}

/// The version to put in an error result: the requested `cniVersion` when stdin has one that
/// looks like a version, else the newest one this plugin speaks.
pub fn echo_version(stdin: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(rename = "cniVersion")]
        cni_version: Option<Value>,
    }
    match serde_json::from_slice::<Versioned>(stdin) {
        Ok(Versioned {
            cni_version: Some(Value::String(v)),
        }) if looks_like_semver(&v) => v,
        _ => CniVersion::LATEST.as_str().to_string(),
    }
}

/// `cniVersion`, which must be one this plugin supports (code 1 otherwise).
pub fn version(map: &Map<String, Value>) -> Result<CniVersion, CniError> {
    match map.get("cniVersion") {
        None | Some(Value::Null) => Err(CniError::IncompatibleVersion {
            requested: String::new(),
        }),
        Some(Value::String(s)) => {
            CniVersion::parse(s).ok_or_else(|| CniError::IncompatibleVersion {
                requested: s.clone(),
            })
        }
        Some(other) => Err(invalid(
            "cniVersion",
            format!("must be a string, found {}", kind(other)),
            "set \"cniVersion\" to a version string such as \"1.0.0\"",
        )),
    }
}

/// The parsed request configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network name (a Multus network's name for secondary interfaces).
    pub name: Option<String>,
    /// The raw `ipam` object; see [`IpamConfig::parse`].
    pub ipam: Option<Value>,
    /// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`, when the runtime passed it.
    pub pod_annotations: Option<Map<String, Value>>,
    /// The previous result (DEL, CHECK; a later plugin's ADD).
    pub prev_result: Option<Map<String, Value>>,
    /// GC's valid attachments, when present.
    pub gc_attachments: Option<Vec<GcAttachment>>,
}

/// One still-valid attachment named by GC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcAttachment {
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Parse the fields pinip reads; `ipam` is kept raw so that DEL can be lenient about it.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let map = decode(stdin)?;
        NetConf::from_map(&map)
    }

    pub fn from_map(map: &Map<String, Value>) -> Result<NetConf, CniError> {
        let cni_version = version(map)?;
        let name = match map.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(invalid(
                    "name",
                    format!("must be a string, found {}", kind(other)),
                    "the runtime sets \"name\" from the network configuration list's name",
                ));
            }
        };
        let pod_annotations = match map.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(rc)) => match rc.get(POD_ANNOTATIONS_CAPABILITY) {
                None | Some(Value::Null) => None,
                Some(Value::Object(a)) => Some(a.clone()),
                Some(other) => {
                    return Err(invalid(
                        &format!("runtimeConfig[{POD_ANNOTATIONS_CAPABILITY:?}]"),
                        format!("must be an object of annotations, found {}", kind(other)),
                        "the runtime passes the pod's annotations as a JSON object",
                    ));
                }
            },
            Some(other) => {
                return Err(invalid(
                    "runtimeConfig",
                    format!("must be an object, found {}", kind(other)),
                    "runtimeConfig is set by the runtime from the declared capabilities",
                ));
            }
        };
        let prev_result = match map.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p.clone()),
            Some(other) => {
                return Err(invalid(
                    "prevResult",
                    format!("must be an object, found {}", kind(other)),
                    "prevResult is the result of the previous plugin, set by the runtime",
                ));
            }
        };
        let gc_attachments = match (map.get(VALID_ATTACHMENTS), map.get(ATTACHMENTS)) {
            (Some(v), _) if !v.is_null() => Some(parse_attachments(VALID_ATTACHMENTS, v)?),
            (_, Some(v)) if !v.is_null() => Some(parse_attachments(ATTACHMENTS, v)?),
            _ => None,
        };
        Ok(NetConf {
            cni_version,
            name,
            ipam: map.get("ipam").cloned(),
            pod_annotations,
            prev_result,
            gc_attachments,
        })
    }
}

fn parse_attachments(key: &str, v: &Value) -> Result<Vec<GcAttachment>, CniError> {
    let hint = "each attachment is {\"containerID\": \"…\", \"ifname\": \"…\"}";
    let Value::Array(items) = v else {
        return Err(invalid(
            key,
            format!("must be an array, found {}", kind(v)),
            hint,
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| match item.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(invalid(
                &format!("{key}[{i}].{name}"),
                "must be a string".into(),
                hint,
            )),
        };
        out.push(GcAttachment {
            container_id: field("containerID")?,
            ifname: field("ifname")?,
        });
    }
    Ok(out)
}

/// How much the plugin logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const DEFAULT: LogLevel = LogLevel::Warn;

    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" => Some(LogLevel::Off),
            "error" => Some(LogLevel::Error),
            "warn" | "warning" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            "trace" => Some(LogLevel::Trace),
            _ => None,
        }
    }
}

/// The `ipam` object: `type`, `kubeconfig`, `timeout`, `logFile`, `logLevel`.
#[derive(Clone, Debug, PartialEq)]
pub struct IpamConfig {
    pub plugin_type: String,
    pub kubeconfig: Option<PathBuf>,
    pub timeout: Duration,
    /// `timeout` as the operator wrote it, in seconds (for messages).
    pub timeout_secs: f64,
    pub log_file: Option<PathBuf>,
    pub log_level: LogLevel,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            plugin_type: "pinip".into(),
            kubeconfig: None,
            timeout: Duration::from_secs(10),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            log_file: None,
            log_level: LogLevel::DEFAULT,
        }
    }
}

impl IpamConfig {
    /// Parse and validate the `ipam` object; unknown keys are refused (code 2) so that a typo
    /// such as `kubeConfig` does not go unnoticed.
    pub fn parse(ipam: Option<&Value>) -> Result<IpamConfig, CniError> {
        let obj = match ipam {
            None | Some(Value::Null) => {
                return Err(invalid(
                    "ipam",
                    "missing".into(),
                    "the main plugin's configuration needs \"ipam\": {\"type\": \"pinip\"}",
                ));
            }
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(invalid(
                    "ipam",
                    format!("must be an object, found {}", kind(other)),
                    "write \"ipam\": {\"type\": \"pinip\"}",
                ));
            }
        };
        let mut conf = IpamConfig::default();
        let mut saw_type = false;
        for (key, value) in obj {
            match key.as_str() {
                "type" => {
                    conf.plugin_type = non_empty_string("ipam.type", value, "set it to \"pinip\"")?;
                    saw_type = true;
                }
                "kubeconfig" => {
                    conf.kubeconfig = Some(PathBuf::from(non_empty_string(
                        "ipam.kubeconfig",
                        value,
                        "give the path of a kubeconfig file, or leave the key out to use the in-cluster configuration",
                    )?));
                }
                "timeout" => {
                    let (secs, d) = timeout(value)?;
                    conf.timeout_secs = secs;
                    conf.timeout = d;
                }
                "logFile" => {
                    conf.log_file = Some(PathBuf::from(non_empty_string(
                        "ipam.logFile",
                        value,
                        "give a file path, or leave the key out to log to stderr",
                    )?));
                }
                "logLevel" => {
                    let hint = "use one of off, error, warn, info, debug, trace";
                    let s = non_empty_string("ipam.logLevel", value, hint)?;
                    conf.log_level = LogLevel::parse(&s).ok_or_else(|| {
                        invalid("ipam.logLevel", format!("{s:?} is not a log level"), hint)
                    })?;
                }
                _ => {
                    return Err(CniError::UnsupportedField {
                        key: key.clone(),
                        value: compact(value),
                    });
                }
            }
        }
        if !saw_type {
            return Err(invalid(
                "ipam.type",
                "missing".into(),
                "set it to \"pinip\"",
            ));
        }
        Ok(conf)
    }
}

fn timeout(value: &Value) -> Result<(f64, Duration), CniError> {
    let hint = format!(
        "give the number of seconds (default {DEFAULT_TIMEOUT_SECS}), greater than 0 and at most {MAX_TIMEOUT_SECS}"
    );
    let secs = value.as_f64().ok_or_else(|| {
        invalid(
            "ipam.timeout",
            format!("must be a number, found {}", compact(value)),
            &hint,
        )
    })?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(invalid(
            "ipam.timeout",
            format!("{} is out of range", compact(value)),
            &hint,
        ));
    }
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|e| invalid("ipam.timeout", e.to_string(), &hint))?;
    Ok((secs, d))
}

fn non_empty_string(field: &str, value: &Value, hint: &str) -> Result<String, CniError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(invalid(field, "is empty".into(), hint)),
        other => Err(invalid(
            field,
            format!("must be a string, found {}", kind(other)),
            hint,
        )),
    }
}

fn invalid(field: &str, reason: String, hint: &str) -> CniError {
    CniError::InvalidConfig {
        field: field.to_string(),
        reason,
        hint: hint.to_string(),
    }
}

/// A JSON value as compact text, cut to a readable length.
pub fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The JSON type of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_json(e: CniError) -> String {
        e.to_json("1.0.0")
    }

    fn conf(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn ipam(v: Value) -> Result<IpamConfig, CniError> {
        IpamConfig::parse(Some(&v))
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            err_json(decode(b"").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":6,"msg":"cannot decode the network configuration on stdin","details":"stdin is empty; the runtime must send the plugin configuration as a JSON object"}"#
        );
        assert_eq!(
            err_json(decode(b"{\"cniVersion\":").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":6,"msg":"cannot decode the network configuration on stdin","details":"EOF while parsing a value at line 1 column 14; the runtime must send the plugin configuration as a JSON object"}"#
        );
        assert_eq!(
            err_json(decode(b"[1]").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":6,"msg":"cannot decode the network configuration on stdin","details":"expected a JSON object, found an array; the runtime must send the plugin configuration as a JSON object"}"#
        );
    }

    #[test]
    fn echo_version_cases() {
        assert_eq!(echo_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(echo_version(br#"{"cniVersion":"0.2.0"}"#), "0.2.0");
        assert_eq!(echo_version(br#"{"cniVersion":"banana"}"#), "1.1.0");
        assert_eq!(echo_version(br#"{"cniVersion":1}"#), "1.1.0");
        assert_eq!(echo_version(b"garbage"), "1.1.0");
        assert_eq!(echo_version(b""), "1.1.0");
    }

    #[test]
    fn version_errors() {
        assert_eq!(
            err_json(conf(json!({"name": "n"})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":1,"msg":"incompatible CNI version: the config has no cniVersion","details":"pinip supports cniVersion \"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"; set one of them in the network configuration"}"#
        );
        assert_eq!(
            err_json(conf(json!({"cniVersion": "0.2.0"})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":1,"msg":"incompatible CNI version: config is \"0.2.0\"","details":"pinip supports cniVersion \"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"; set one of them in the network configuration"}"#
        );
        assert_eq!(
            err_json(conf(json!({"cniVersion": 1})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: cniVersion: must be a string, found a number","details":"set \"cniVersion\" to a version string such as \"1.0.0\""}"#
        );
    }

    #[test]
    fn full_config_parses() {
        let c = conf(json!({
            "cniVersion": "1.0.0",
            "name": "blue-net",
            "type": "bridge",
            "bridge": "cni0",
            "ipam": {"type": "pinip"},
            "runtimeConfig": {
                "io.kubernetes.cri.pod-annotations": {"pinip.io/allocation": "{}"},
                "portMappings": []
            },
            "prevResult": {"ips": []},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name.as_deref(), Some("blue-net"));
        assert_eq!(
            c.pod_annotations.unwrap().get("pinip.io/allocation"),
            Some(&json!("{}"))
        );
        assert!(c.prev_result.is_some());
        assert_eq!(
            c.gc_attachments.unwrap(),
            vec![GcAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        let minimal = conf(json!({"cniVersion": "0.3.1"})).unwrap();
        assert_eq!(minimal.name, None);
        assert_eq!(minimal.pod_annotations, None);
        assert_eq!(minimal.gc_attachments, None);
        let old = conf(json!({"cniVersion": "1.1.0", "cni.dev/attachments": []})).unwrap();
        assert_eq!(old.gc_attachments, Some(vec![]));
    }

    #[test]
    fn netconf_field_errors() {
        assert_eq!(
            err_json(conf(json!({"cniVersion": "1.0.0", "name": 3})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: name: must be a string, found a number","details":"the runtime sets \"name\" from the network configuration list's name"}"#
        );
        assert_eq!(
            err_json(conf(json!({"cniVersion": "1.0.0", "runtimeConfig": []})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: runtimeConfig: must be an object, found an array","details":"runtimeConfig is set by the runtime from the declared capabilities"}"#
        );
        assert_eq!(
            err_json(
                conf(json!({"cniVersion": "1.0.0", "runtimeConfig": {"io.kubernetes.cri.pod-annotations": "x"}}))
                    .unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: runtimeConfig[\"io.kubernetes.cri.pod-annotations\"]: must be an object of annotations, found a string","details":"the runtime passes the pod's annotations as a JSON object"}"#
        );
        assert_eq!(
            err_json(conf(json!({"cniVersion": "1.0.0", "prevResult": "x"})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult: must be an object, found a string","details":"prevResult is the result of the previous plugin, set by the runtime"}"#
        );
        assert_eq!(
            err_json(
                conf(json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": {}})).unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: cni.dev/valid-attachments: must be an array, found an object","details":"each attachment is {\"containerID\": \"…\", \"ifname\": \"…\"}"}"#
        );
        assert_eq!(
            err_json(
                conf(json!({"cniVersion": "1.1.0", "cni.dev/attachments": [{"containerID": "a"}]}))
                    .unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: cni.dev/attachments[0].ifname: must be a string","details":"each attachment is {\"containerID\": \"…\", \"ifname\": \"…\"}"}"#
        );
    }

    #[test]
    fn ipam_config_parses() {
        let c = ipam(json!({
            "type": "pinip",
            "kubeconfig": "/etc/cni/net.d/pinip.kubeconfig",
            "timeout": 2.5,
            "logFile": "/var/log/pinip.log",
            "logLevel": "DEBUG"
        }))
        .unwrap();
        assert_eq!(c.plugin_type, "pinip");
        assert_eq!(
            c.kubeconfig,
            Some(PathBuf::from("/etc/cni/net.d/pinip.kubeconfig"))
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/pinip.log")));
        assert_eq!(c.log_level, LogLevel::Debug);
        let d = ipam(json!({"type": "pinip"})).unwrap();
        assert_eq!(d, IpamConfig::default());
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(
            ipam(json!({"type": "pinip", "timeout": 3}))
                .unwrap()
                .timeout,
            Duration::from_secs(3)
        );
        for (s, l) in [
            ("off", LogLevel::Off),
            ("error", LogLevel::Error),
            ("warning", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("trace", LogLevel::Trace),
        ] {
            assert_eq!(
                ipam(json!({"type": "pinip", "logLevel": s}))
                    .unwrap()
                    .log_level,
                l
            );
        }
    }

    #[test]
    fn ipam_config_errors() {
        assert_eq!(
            err_json(IpamConfig::parse(None).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam: missing","details":"the main plugin's configuration needs \"ipam\": {\"type\": \"pinip\"}"}"#
        );
        assert_eq!(
            err_json(ipam(json!("pinip")).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam: must be an object, found a string","details":"write \"ipam\": {\"type\": \"pinip\"}"}"#
        );
        assert_eq!(
            err_json(ipam(json!({})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.type: missing","details":"set it to \"pinip\""}"#
        );
        assert_eq!(
            err_json(ipam(json!({"type": ""})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.type: is empty","details":"set it to \"pinip\""}"#
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "kubeConfig": "/x"})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":2,"msg":"unsupported field in the ipam config: \"kubeConfig\": \"/x\"","details":"the pinip IPAM plugin accepts only type, kubeconfig, timeout, logFile and logLevel in \"ipam\"; remove or correct this key"}"#
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "kubeconfig": 1})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.kubeconfig: must be a string, found a number","details":"give the path of a kubeconfig file, or leave the key out to use the in-cluster configuration"}"#
        );
        let timeout_hint =
            "give the number of seconds (default 10), greater than 0 and at most 3600";
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "timeout": "10s"})).unwrap_err()),
            format!(
                r#"{{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.timeout: must be a number, found \"10s\"","details":"{timeout_hint}"}}"#
            )
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "timeout": 0})).unwrap_err()),
            format!(
                r#"{{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.timeout: 0 is out of range","details":"{timeout_hint}"}}"#
            )
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "timeout": -1})).unwrap_err()),
            format!(
                r#"{{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.timeout: -1 is out of range","details":"{timeout_hint}"}}"#
            )
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "timeout": 1e300})).unwrap_err()),
            format!(
                r#"{{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.timeout: 1e+300 is out of range","details":"{timeout_hint}"}}"#
            )
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "logFile": ""})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.logFile: is empty","details":"give a file path, or leave the key out to log to stderr"}"#
        );
        assert_eq!(
            err_json(ipam(json!({"type": "pinip", "logLevel": "loud"})).unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.logLevel: \"loud\" is not a log level","details":"use one of off, error, warn, info, debug, trace"}"#
        );
    }

    #[test]
    fn compact_cuts_long_values() {
        let long = Value::String("x".repeat(500));
        let c = compact(&long);
        assert_eq!(c.chars().count(), 120);
        assert!(c.ends_with("..."));
    }
}
