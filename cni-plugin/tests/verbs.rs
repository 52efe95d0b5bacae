//! Every verb through `Plugin::run`, with a fake API server, asserting the exact output.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsString;

use pinip_cni::args::Env;
use pinip_cni::error::CniError;
use pinip_cni::log::DefaultSink;
use pinip_cni::pod::{KubeTarget, PodApi, PodMeta, PodRef};
use pinip_cni::verbs::{Output, Plugin};
use serde_json::{Value, json};

const ALLOC: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"},{"address":"fd00::5/64","gateway":"fd00::1","pool":"blue6","claim":"fd00-0000-0000-0000-0000-0000-0000-0005"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"}],"dns":{"nameservers":["10.96.0.10"],"search":["db.svc.cluster.local"]}}]}"#;

const NO_ALLOC_DETAILS: &str = "the pinip webhook writes pinip.io/allocation when a pod is created in a namespace labelled pinip.io/enabled=true; label the namespace (or check that the webhook is running), then delete the pod so that it is created again";

/// A fake API server: counts calls, answers `pod` for GET and `probe` for STATUS.
struct FakeApi {
    pod: Result<PodMeta, CniError>,
    probe: Result<(), CniError>,
    gets: Cell<usize>,
    probes: Cell<usize>,
}

impl FakeApi {
    fn with_pod(pod: Result<PodMeta, CniError>) -> FakeApi {
        FakeApi {
            pod,
            probe: Ok(()),
            gets: Cell::new(0),
            probes: Cell::new(0),
        }
    }

    fn unused() -> FakeApi {
        FakeApi::with_pod(Err(CniError::Internal {
            reason: "the API must not be called".into(),
        }))
    }

    fn calls(&self) -> usize {
        self.gets.get() + self.probes.get()
    }
}

impl PodApi for FakeApi {
    fn get_pod(&self, _: &KubeTarget, pod: &PodRef) -> Result<PodMeta, CniError> {
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("db", "web-0"));
        self.gets.set(self.gets.get() + 1);
        self.pod.clone()
    }
    fn probe(&self, _: &KubeTarget) -> Result<(), CniError> {
        self.probes.set(self.probes.get() + 1);
        self.probe.clone()
    }
}

fn env(vars: &[(&str, &str)]) -> Env {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    Env::from_lookup(|k| map.get(k).cloned())
}

/// The environment containerd sets for `verb` (CNI_ARGS keys in a shuffled order).
fn cri_env(verb: &str) -> Env {
    env(&[
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", "f00dcafe01"),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=f00dcafe01;K8S_POD_UID=uid-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=db",
        ),
    ])
}

fn with_env(verb: &str, overrides: &[(&str, Option<&str>)]) -> Env {
    let mut e = cri_env(verb);
    for (k, v) in overrides {
        let v = v.map(str::to_string);
        match *k {
            "CNI_CONTAINERID" => e.container_id = v,
            "CNI_NETNS" => e.netns = v,
            "CNI_IFNAME" => e.ifname = v,
            "CNI_ARGS" => e.args = v,
            "CNI_COMMAND" => e.command = v,
            _ => panic!("unknown {k}"),
        }
    }
    e
}

/// A bridge config as containerd passes it, with the annotations capability.
fn conf(version: &str, annotations: Option<Value>) -> Value {
    let mut c = json!({
        "bridge": "cni0",
        "cniVersion": version,
        "ipam": {"type": "pinip"},
        "name": "blue-net",
        "type": "bridge"
    });
    if let Some(a) = annotations {
        c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": a});
    }
    c
}

fn with_alloc(version: &str) -> Value {
    conf(
        version,
        Some(json!({"pinip.io/allocation": ALLOC, "other": "x"})),
    )
}

fn run(api: &FakeApi, env: &Env, stdin: &Value) -> Result<String, String> {
    run_raw(api, env, stdin.to_string().as_bytes())
}

fn run_raw(api: &FakeApi, env: &Env, stdin: &[u8]) -> Result<String, String> {
    let plugin = Plugin {
        api,
        log_sink: DefaultSink::Discard,
    };
    match plugin.run(env, stdin) {
        Ok(Output::Stdout(s)) => Ok(s),
        Ok(Output::Nothing) => Ok(String::new()),
        Err(f) => Err(f.to_json()),
    }
}

fn pod(uid: &str, alloc: Option<&str>) -> PodMeta {
    PodMeta {
        uid: Some(uid.into()),
        annotations: alloc
            .map(|a| [("pinip.io/allocation".to_string(), a.to_string())].into())
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------- VERSION

#[test]
fn version_reports_supported_versions() {
    let api = FakeApi::unused();
    let all = r#""supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#;
    let e = env(&[("CNI_COMMAND", "VERSION")]);
    assert_eq!(
        run(&api, &e, &json!({"cniVersion": "1.0.0"})).unwrap(),
        format!(r#"{{"cniVersion":"1.0.0",{all}"#)
    );
    assert_eq!(
        run_raw(&api, &e, b"").unwrap(),
        format!(r#"{{"cniVersion":"1.1.0",{all}"#)
    );
    assert_eq!(
        run_raw(&api, &e, b"not json").unwrap(),
        format!(r#"{{"cniVersion":"1.1.0",{all}"#)
    );
    assert_eq!(api.calls(), 0);
}

// ---------------------------------------------------------------- ADD

#[test]
fn add_from_runtime_config_in_every_version() {
    let api = FakeApi::unused();
    for v in ["0.3.0", "0.3.1", "0.4.0"] {
        assert_eq!(
            run(&api, &cri_env("ADD"), &with_alloc(v)).unwrap(),
            format!(
                r#"{{"cniVersion":"{v}","ips":[{{"version":"4","address":"10.20.0.5/24","gateway":"10.20.0.1"}},{{"version":"6","address":"fd00::5/64","gateway":"fd00::1"}}],"routes":[{{"dst":"0.0.0.0/0","gw":"10.20.0.1"}}],"dns":{{"nameservers":["10.96.0.10"],"search":["db.svc.cluster.local"]}}}}"#
            )
        );
    }
    for v in ["1.0.0", "1.1.0"] {
        assert_eq!(
            run(&api, &cri_env("ADD"), &with_alloc(v)).unwrap(),
            format!(
                r#"{{"cniVersion":"{v}","ips":[{{"address":"10.20.0.5/24","gateway":"10.20.0.1"}},{{"address":"fd00::5/64","gateway":"fd00::1"}}],"routes":[{{"dst":"0.0.0.0/0","gw":"10.20.0.1"}}],"dns":{{"nameservers":["10.96.0.10"],"search":["db.svc.cluster.local"]}}}}"#
            )
        );
    }
    assert_eq!(
        api.calls(),
        0,
        "the annotations capability path never calls the API"
    );
}

#[test]
fn add_multus_network_name_fallback() {
    let api = FakeApi::unused();
    let alloc = r#"{"version":1,"interfaces":[{"name":"blue-net","ips":[{"address":"10.30.0.7/24","pool":"green","claim":"10-30-0-7"}]}]}"#;
    let c = conf("1.0.0", Some(json!({"pinip.io/allocation": alloc})));
    let e = with_env("ADD", &[("CNI_IFNAME", Some("net1"))]);
    assert_eq!(
        run(&api, &e, &c).unwrap(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.30.0.7/24"}]}"#
    );
}

#[test]
fn add_from_the_api_reads_the_pod_once() {
    let api = FakeApi::with_pod(Ok(pod("uid-1", Some(ALLOC))));
    let out = run(&api, &cri_env("ADD"), &conf("1.0.0", None)).unwrap();
    assert!(
        out.starts_with(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.20.0.5/24""#),
        "{out}"
    );
    assert_eq!(api.gets.get(), 1);
}

#[test]
fn add_pod_without_allocation() {
    // From runtimeConfig.
    let api = FakeApi::unused();
    assert_eq!(
        run(
            &api,
            &cri_env("ADD"),
            &conf("1.0.0", Some(json!({"other": "x"})))
        )
        .unwrap_err(),
        format!(
            r#"{{"cniVersion":"1.0.0","code":100,"msg":"pod db/web-0 has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created","details":"{NO_ALLOC_DETAILS}"}}"#
        )
    );
    // From the API.
    let api = FakeApi::with_pod(Ok(pod("uid-1", None)));
    assert_eq!(
        run(&api, &cri_env("ADD"), &conf("0.4.0", None)).unwrap_err(),
        format!(
            r#"{{"cniVersion":"0.4.0","code":100,"msg":"pod db/web-0 has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created","details":"{NO_ALLOC_DETAILS}"}}"#
        )
    );
    // Without pod names in CNI_ARGS, the container is named instead.
    let api = FakeApi::unused();
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_ARGS", Some("IgnoreUnknown=1"))]),
            &conf("1.0.0", Some(json!({})))
        )
        .unwrap_err(),
        format!(
            r#"{{"cniVersion":"1.0.0","code":100,"msg":"the pod of container f00dcafe01 has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created","details":"{NO_ALLOC_DETAILS}"}}"#
        )
    );
}

#[test]
fn add_no_entry_for_interface() {
    let api = FakeApi::unused();
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_IFNAME", Some("net1"))]),
            &with_alloc("1.0.0")
        )
        .unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":101,"msg":"pinip.io/allocation of pod db/web-0 has no entry for interface net1 or network \"blue-net\"","details":"entries present: eth0; the webhook writes one entry per pod interface (CNI_IFNAME) or Multus network name: request an address for this network, or correct the interface or network name"}"#
    );
}

#[test]
fn add_malformed_allocation() {
    let api = FakeApi::unused();
    let c = conf(
        "1.0.0",
        Some(
            json!({"pinip.io/allocation": "{\"version\":1,\"interfaces\":[{\"name\":\"eth0\"}]}"}),
        ),
    );
    assert_eq!(
        run(&api, &cri_env("ADD"), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":102,"msg":"pod db/web-0: pinip.io/allocation: not valid JSON for version 1: missing field `ips` at line 1 column 42","details":"pinip.io/allocation is written only by the pinip webhook; a webhook newer than this plugin, or a manual edit, causes this: upgrade the pinip CNI plugin on this node, or delete the pod so that it is created again"}"#
    );
}

#[test]
fn add_api_errors() {
    let api = FakeApi::with_pod(Err(CniError::PodNotFound {
        subject: "pod db/web-0".into(),
        server: "https://10.0.0.1:6443/".into(),
    }));
    assert_eq!(
        run(&api, &cri_env("ADD"), &conf("1.0.0", None)).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":103,"msg":"pod db/web-0 not found","details":"the Kubernetes API server https://10.0.0.1:6443/ has no such pod; it was deleted before its network was set up"}"#
    );
    let api = FakeApi::with_pod(Err(CniError::ApiUnreachable {
        server: "https://10.0.0.1:6443/".into(),
        subject: "pod db/web-0".into(),
        reason: "client error (Connect): Connection refused (os error 111)".into(),
    }));
    assert_eq!(
        run(&api, &cri_env("ADD"), &conf("1.0.0", None)).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":11,"msg":"cannot reach the Kubernetes API server https://10.0.0.1:6443/ to read pod db/web-0","details":"client error (Connect): Connection refused (os error 111); this is transient if the API server is restarting: try again later"}"#
    );
    let api = FakeApi::with_pod(Ok(pod("uid-OTHER", Some(ALLOC))));
    assert_eq!(
        run(&api, &cri_env("ADD"), &conf("1.0.0", None)).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":103,"msg":"pod db/web-0 was deleted and recreated","details":"this sandbox belongs to pod uid uid-1, but the API server now has uid uid-OTHER under that name; the old pod's sandbox must not take the new pod's address"}"#
    );
}

#[test]
fn add_api_path_needs_pod_names() {
    let api = FakeApi::unused();
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_ARGS", None)]),
            &conf("1.0.0", None)
        )
        .unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME: cannot tell which pod to read","details":"the runtime passes the pod's annotations in runtimeConfig only when the network configuration declares \"capabilities\": {\"io.kubernetes.cri.pod-annotations\": true}; declare it, or have the runtime pass K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS"}"#
    );
    assert_eq!(api.calls(), 0);
}

#[test]
fn add_environment_errors() {
    let api = FakeApi::unused();
    let c = with_alloc("1.0.0");
    assert_eq!(
        run(&api, &with_env("ADD", &[("CNI_NETNS", None)]), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS is not set","details":"the runtime must set CNI_NETNS for ADD"}"#
    );
    assert_eq!(
        run(&api, &with_env("ADD", &[("CNI_CONTAINERID", Some(""))]), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_CONTAINERID is not set","details":"the runtime must set CNI_CONTAINERID for ADD"}"#
    );
    assert_eq!(
        run(&api, &with_env("ADD", &[("CNI_IFNAME", Some("a/b"))]), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_IFNAME","details":"CNI_IFNAME=\"a/b\" contains '/', ':' or whitespace"}"#
    );
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_ARGS", Some("K8S_POD_NAME"))]),
            &c
        )
        .unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS item \"K8S_POD_NAME\" is not a KEY=VALUE pair (CNI_ARGS is KEY=VALUE pairs separated by ';')"}"#
    );
    // A bad CNI_COMMAND is reported in the requested version.
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_COMMAND", Some("ATTACH"))]),
            &conf("0.4.0", None)
        )
        .unwrap_err(),
        r#"{"cniVersion":"0.4.0","code":4,"msg":"invalid CNI_COMMAND","details":"CNI_COMMAND=\"ATTACH\" is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"}"#
    );
    assert_eq!(
        run(
            &api,
            &with_env("ADD", &[("CNI_COMMAND", None)]),
            &conf("0.4.0", None)
        )
        .unwrap_err(),
        r#"{"cniVersion":"0.4.0","code":4,"msg":"invalid CNI_COMMAND","details":"CNI_COMMAND is not set; it must be one of ADD, DEL, CHECK, GC, STATUS, VERSION"}"#
    );
}

#[test]
fn add_config_errors() {
    let api = FakeApi::unused();
    let e = cri_env("ADD");
    assert_eq!(
        run_raw(&api, &e, b"{not json").unwrap_err(),
        r#"{"cniVersion":"1.1.0","code":6,"msg":"cannot decode the network configuration on stdin","details":"key must be a string at line 1 column 2; the runtime must send the plugin configuration as a JSON object"}"#
    );
    assert_eq!(
        run(
            &api,
            &e,
            &json!({"cniVersion": "0.2.0", "ipam": {"type": "pinip"}})
        )
        .unwrap_err(),
        r#"{"cniVersion":"0.2.0","code":1,"msg":"incompatible CNI version: config is \"0.2.0\"","details":"pinip supports cniVersion \"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"; set one of them in the network configuration"}"#
    );
    let mut c = with_alloc("1.0.0");
    c.as_object_mut().unwrap().remove("ipam");
    assert_eq!(
        run(&api, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam: missing","details":"the main plugin's configuration needs \"ipam\": {\"type\": \"pinip\"}"}"#
    );
    c["ipam"] = json!({"type": "pinip", "timeout": "soon"});
    assert_eq!(
        run(&api, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: ipam.timeout: must be a number, found \"soon\"","details":"give the number of seconds (default 10), greater than 0 and at most 3600"}"#
    );
    c["ipam"] = json!({"type": "pinip", "subnet": "10.0.0.0/8"});
    assert_eq!(
        run(&api, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":2,"msg":"unsupported field in the ipam config: \"subnet\": \"10.0.0.0/8\"","details":"the pinip IPAM plugin accepts only type, kubeconfig, timeout, logFile and logLevel in \"ipam\"; remove or correct this key"}"#
    );
}

#[test]
fn add_ignores_a_prev_result_and_unknown_top_level_keys() {
    let api = FakeApi::unused();
    let mut c = with_alloc("1.0.0");
    c["prevResult"] = json!({"ips": [{"address": "192.168.0.2/24"}]});
    c["someMainPluginKey"] = json!({"x": [1, 2]});
    let out = run(&api, &cri_env("ADD"), &c).unwrap();
    assert!(
        out.contains("10.20.0.5/24") && !out.contains("192.168"),
        "{out}"
    );
}

#[test]
fn add_logs_to_the_log_file_not_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pinip.log");
    let api = FakeApi::unused();
    let mut c = with_alloc("1.0.0");
    c["ipam"] = json!({"type": "pinip", "logFile": log, "logLevel": "info"});
    let out = run(&api, &cri_env("ADD"), &c).unwrap();
    assert!(out.starts_with(r#"{"cniVersion""#));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("pod db/web-0: 10.20.0.5/24 gw 10.20.0.1, fd00::5/64 gw fd00::1 (entry \"eth0\", from runtimeConfig pod annotations)"),
        "{text}"
    );
    // Errors are logged too.
    let e = with_env("ADD", &[("CNI_IFNAME", Some("net9"))]);
    run(&api, &e, &c).unwrap_err();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "ERROR ADD failed: pinip.io/allocation of pod db/web-0 has no entry for interface net9"
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------- DEL

#[test]
fn del_is_idempotent_and_never_calls_the_api() {
    let api = FakeApi::with_pod(Err(CniError::PodNotFound {
        subject: "pod db/web-0".into(),
        server: "s".into(),
    }));
    // First DEL: netns and prevResult (containerd's StopPodSandbox).
    let mut first = with_alloc("1.0.0");
    first["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.20.0.5/24"}]});
    assert_eq!(run(&api, &cri_env("DEL"), &first).unwrap(), "");
    // Second DEL: empty netns, no prevResult (RemovePodSandbox), repeated.
    let second = with_alloc("1.0.0");
    for _ in 0..3 {
        assert_eq!(
            run(&api, &with_env("DEL", &[("CNI_NETNS", Some(""))]), &second).unwrap(),
            ""
        );
        assert_eq!(
            run(&api, &with_env("DEL", &[("CNI_NETNS", None)]), &second).unwrap(),
            ""
        );
    }
    // A pod without annotations, without runtimeConfig, without CNI_ARGS: still fine.
    assert_eq!(
        run(
            &api,
            &with_env("DEL", &[("CNI_ARGS", None)]),
            &conf("0.3.1", None)
        )
        .unwrap(),
        ""
    );
    // Even a broken ipam config does not block removal.
    let mut broken = conf("1.0.0", None);
    broken["ipam"] = json!({"type": "pinip", "bogus": true});
    assert_eq!(run(&api, &cri_env("DEL"), &broken).unwrap(), "");
    assert_eq!(api.calls(), 0);
}

#[test]
fn del_still_needs_the_attachment_identity() {
    let api = FakeApi::unused();
    assert_eq!(
        run(
            &api,
            &with_env("DEL", &[("CNI_IFNAME", None)]),
            &with_alloc("1.0.0")
        )
        .unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_IFNAME is not set","details":"the runtime must set CNI_IFNAME for DEL"}"#
    );
    assert_eq!(
        run(&api, &cri_env("DEL"), &json!({"cniVersion": "9.9.9"})).unwrap_err(),
        r#"{"cniVersion":"9.9.9","code":1,"msg":"incompatible CNI version: config is \"9.9.9\"","details":"pinip supports cniVersion \"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"; set one of them in the network configuration"}"#
    );
}

// ---------------------------------------------------------------- CHECK

fn prev_result(v: &str, addr4: &str) -> Value {
    json!({
        "cniVersion": v,
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth1", "mac": "00:11:22:33:44:56"},
            {"name": "eth0", "mac": "00:11:22:33:44:57", "sandbox": "/var/run/netns/cni-1234"}
        ],
        "ips": [
            {"version": "4", "address": addr4, "gateway": "10.20.0.1", "interface": 2},
            {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.20.0.1"}]
    })
}

#[test]
fn check_passes_when_prev_result_matches() {
    let api = FakeApi::unused();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let mut c = with_alloc(v);
        c["prevResult"] = prev_result(v, "10.20.0.5/24");
        assert_eq!(run(&api, &cri_env("CHECK"), &c).unwrap(), "", "{v}");
    }
    // Through the API as well.
    let api = FakeApi::with_pod(Ok(pod("uid-1", Some(ALLOC))));
    let mut c = conf("1.0.0", None);
    c["prevResult"] = prev_result("1.0.0", "10.20.0.5/24");
    assert_eq!(run(&api, &cri_env("CHECK"), &c).unwrap(), "");
    assert_eq!(api.gets.get(), 1);
}

#[test]
fn check_fails_when_prev_result_differs() {
    let api = FakeApi::unused();
    let mut c = with_alloc("1.0.0");
    c["prevResult"] = prev_result("1.0.0", "10.20.0.9/24");
    assert_eq!(
        run(&api, &cri_env("CHECK"), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":105,"msg":"CHECK failed: the addresses of eth0 differ from pinip.io/allocation of pod db/web-0","details":"prevResult has [10.20.0.9/24 gw 10.20.0.1, fd00::5/64 gw fd00::1], the allocation has [10.20.0.5/24 gw 10.20.0.1, fd00::5/64 gw fd00::1]; the pod's network no longer matches its decided address: delete the pod so that it is created again"}"#
    );
}

#[test]
fn check_errors() {
    let api = FakeApi::unused();
    assert_eq!(
        run(&api, &cri_env("CHECK"), &with_alloc("1.0.0")).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult: missing","details":"the runtime must pass the result of ADD as prevResult on CHECK"}"#
    );
    let mut c = with_alloc("0.3.1");
    c["prevResult"] = prev_result("0.3.1", "10.20.0.5/24");
    assert_eq!(
        run(&api, &cri_env("CHECK"), &c).unwrap_err(),
        r#"{"cniVersion":"0.3.1","code":1,"msg":"config version 0.3.1 does not allow CHECK","details":"CHECK was added in CNI 0.4.0; set cniVersion to 0.4.0 or later in the network configuration"}"#
    );
    let mut c = with_alloc("1.0.0");
    c["prevResult"] = json!({"ips": [{"address": "nope"}]});
    assert_eq!(
        run(&api, &cri_env("CHECK"), &c).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network configuration: prevResult.ips[0].address: must be an address in CIDR notation","details":"prevResult must be the result the runtime received from ADD"}"#
    );
}

// ---------------------------------------------------------------- GC

#[test]
fn gc_accepts_both_attachment_keys() {
    let api = FakeApi::unused();
    let e = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    let att = json!([{"containerID": "f00dcafe01", "ifname": "eth0"}]);
    let mut c = conf("1.1.0", None);
    c["cni.dev/valid-attachments"] = att.clone();
    assert_eq!(run(&api, &e, &c).unwrap(), "");
    let mut c = conf("1.1.0", None);
    c["cni.dev/attachments"] = att;
    assert_eq!(run(&api, &e, &c).unwrap(), "");
    assert_eq!(run(&api, &e, &conf("1.1.0", None)).unwrap(), "");
    assert_eq!(api.calls(), 0);
}

#[test]
fn gc_errors() {
    let api = FakeApi::unused();
    let e = env(&[("CNI_COMMAND", "GC")]);
    assert_eq!(
        run(&api, &e, &conf("1.0.0", None)).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":1,"msg":"config version 1.0.0 does not allow GC","details":"GC was added in CNI 1.1.0; set cniVersion to 1.1.0 or later in the network configuration"}"#
    );
    let mut c = conf("1.1.0", None);
    c["cni.dev/valid-attachments"] = json!([{"containerID": 5, "ifname": "eth0"}]);
    assert_eq!(
        run(&api, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.1.0","code":7,"msg":"invalid network configuration: cni.dev/valid-attachments[0].containerID: must be a string","details":"each attachment is {\"containerID\": \"…\", \"ifname\": \"…\"}"}"#
    );
}

// ---------------------------------------------------------------- STATUS

#[test]
fn status_without_kubeconfig_succeeds_without_probing() {
    let api = FakeApi::unused();
    let e = env(&[("CNI_COMMAND", "STATUS")]);
    assert_eq!(run(&api, &e, &conf("1.1.0", None)).unwrap(), "");
    assert_eq!(api.calls(), 0);
}

#[test]
fn status_with_kubeconfig_probes_the_api() {
    let e = env(&[("CNI_COMMAND", "STATUS")]);
    let mut c = conf("1.1.0", None);
    c["ipam"] = json!({"type": "pinip", "kubeconfig": "/etc/cni/net.d/pinip.kubeconfig"});
    let api = FakeApi::unused();
    let api = FakeApi {
        probe: Ok(()),
        ..api
    };
    assert_eq!(run(&api, &e, &c).unwrap(), "");
    assert_eq!(api.probes.get(), 1);
    let down = FakeApi {
        probe: Err(CniError::StatusUnavailable {
            server: "https://10.0.0.1:6443/".into(),
            reason: "client error (Connect): Connection refused (os error 111)".into(),
        }),
        ..FakeApi::unused()
    };
    assert_eq!(
        run(&down, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.1.0","code":50,"msg":"the Kubernetes API server https://10.0.0.1:6443/ is not reachable: pinip cannot serve ADD","details":"client error (Connect): Connection refused (os error 111); pods whose runtime passes io.kubernetes.cri.pod-annotations in runtimeConfig do not need the API server"}"#
    );
}

#[test]
fn status_errors() {
    let api = FakeApi::unused();
    let e = env(&[("CNI_COMMAND", "STATUS")]);
    assert_eq!(
        run(&api, &e, &conf("1.0.0", None)).unwrap_err(),
        r#"{"cniVersion":"1.0.0","code":1,"msg":"config version 1.0.0 does not allow STATUS","details":"STATUS was added in CNI 1.1.0; set cniVersion to 1.1.0 or later in the network configuration"}"#
    );
    let mut c = conf("1.1.0", None);
    c["ipam"] = json!({"type": "pinip", "kubeconfig": ""});
    assert_eq!(
        run(&api, &e, &c).unwrap_err(),
        r#"{"cniVersion":"1.1.0","code":7,"msg":"invalid network configuration: ipam.kubeconfig: is empty","details":"give the path of a kubeconfig file, or leave the key out to use the in-cluster configuration"}"#
    );
}
