//! Property tests: no input to the stdin config parser, the CNI_ARGS parser or a whole
//! invocation panics, and every failure renders as the spec's error JSON.

use std::collections::HashMap;
use std::ffi::OsString;

use pinip_cni::args::{CniArgs, Env};
use pinip_cni::config::{IpamConfig, NetConf, decode, echo_version};
use pinip_cni::error::CniError;
use pinip_cni::log::DefaultSink;
use pinip_cni::pod::{KubeTarget, PodApi, PodMeta, PodRef};
use pinip_cni::verbs::{Output, Plugin};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("pinip"),
            Just("1.0.0"),
            Just("0.3.1"),
            Just("10.20.0.5/24"),
            Just("eth0"),
            Just("{\"version\":1,\"interfaces\":[]}"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Keys the parser looks at, and some it does not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cniVersion".to_string()),
        Just("name".to_string()),
        Just("ipam".to_string()),
        Just("type".to_string()),
        Just("kubeconfig".to_string()),
        Just("timeout".to_string()),
        Just("logLevel".to_string()),
        Just("runtimeConfig".to_string()),
        Just("io.kubernetes.cri.pod-annotations".to_string()),
        Just("pinip.io/allocation".to_string()),
        Just("prevResult".to_string()),
        Just("ips".to_string()),
        Just("address".to_string()),
        Just("gateway".to_string()),
        Just("interface".to_string()),
        Just("interfaces".to_string()),
        Just("cni.dev/valid-attachments".to_string()),
        Just("cni.dev/attachments".to_string()),
        Just("containerID".to_string()),
        Just("ifname".to_string()),
        "[a-zA-Z./-]{0,10}",
    ]
}

/// A config that is mostly well-formed, with arbitrary values in the places pinip reads.
fn config_value() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("0.3.0")),
            Just(json!("0.4.0")),
            Just(json!("1.0.0")),
            Just(json!("1.1.0")),
            json_value()
        ],
        json_value(),
        prop_oneof![Just(json!({"type": "pinip"})), json_value()],
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(v, name, ipam, rc, prev, att)| {
            json!({
                "cniVersion": v, "name": name, "ipam": ipam,
                "runtimeConfig": {"io.kubernetes.cri.pod-annotations": rc},
                "prevResult": prev, "cni.dev/valid-attachments": att
            })
        })
}

fn cni_args_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        "[A-Za-z0-9_=;]{0,64}",
        prop::collection::vec(
            (
                prop_oneof![
                    Just("K8S_POD_NAMESPACE"),
                    Just("K8S_POD_NAME"),
                    Just("K8S_POD_UID"),
                    Just("IgnoreUnknown"),
                    Just(""),
                ],
                "[a-z0-9=-]{0,10}"
            ),
            0..6
        )
        .prop_map(|pairs| pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")),
    ]
}

struct NoApi;

impl PodApi for NoApi {
    fn get_pod(&self, _: &KubeTarget, _: &PodRef) -> Result<PodMeta, CniError> {
        Ok(PodMeta::default())
    }
    fn probe(&self, _: &KubeTarget) -> Result<(), CniError> {
        Ok(())
    }
}

fn env_from(vars: Vec<(&'static str, String)>) -> Env {
    let map: HashMap<&str, OsString> = vars.into_iter().map(|(k, v)| (k, v.into())).collect();
    Env::from_lookup(|k| map.get(k).cloned())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stdin_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = NetConf::parse(&bytes);
        let _ = echo_version(&bytes);
    }

    #[test]
    fn stdin_text_never_panics(text in ".{0,200}") {
        let _ = NetConf::parse(text.as_bytes());
    }

    #[test]
    fn json_configs_never_panic(v in config_value()) {
        let bytes = v.to_string();
        if let Ok(conf) = NetConf::parse(bytes.as_bytes()) {
            let _ = IpamConfig::parse(conf.ipam.as_ref());
        }
    }

    #[test]
    fn ipam_objects_never_panic(v in json_value()) {
        let _ = IpamConfig::parse(Some(&v));
    }

    #[test]
    fn cni_args_never_panic(text in cni_args_text()) {
        if let Ok(a) = CniArgs::parse(&text) {
            let _ = a.pod_label();
            let _ = a.pod_uid();
        }
    }

    #[test]
    fn whole_invocations_never_panic(
        verb in prop_oneof![
            prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]).prop_map(str::to_string),
            ".{0,6}",
        ],
        container in prop_oneof![Just("f00d".to_string()), ".{0,8}"],
        ifname in prop_oneof![Just("eth0".to_string()), ".{0,17}"],
        netns in prop_oneof![Just("/var/run/netns/x".to_string()), Just(String::new())],
        args in cni_args_text(),
        conf in config_value(),
    ) {
        let env = env_from(vec![
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", container),
            ("CNI_IFNAME", ifname),
            ("CNI_NETNS", netns),
            ("CNI_ARGS", args),
        ]);
        let plugin = Plugin { api: &NoApi, log_sink: DefaultSink::Discard };
        match plugin.run(&env, conf.to_string().as_bytes()) {
            Ok(Output::Stdout(s)) => {
                let v: Value = serde_json::from_str(&s).unwrap();
                prop_assert!(v.get("cniVersion").is_some());
            }
            Ok(Output::Nothing) => {}
            Err(f) => {
                let v: Value = serde_json::from_str(&f.to_json()).unwrap();
                prop_assert!(v["code"].as_u64().is_some());
                prop_assert!(!v["msg"].as_str().unwrap_or("").is_empty());
                prop_assert!(v["cniVersion"].is_string());
            }
        }
    }
}
