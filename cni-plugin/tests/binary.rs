//! The `pinip` binary as a process: stdout carries exactly one JSON document (result or error)
//! and nothing else, logs go to stderr (or logFile), the exit status tells success.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const PINIP: &str = env!("CARGO_BIN_EXE_pinip");

const ALLOC: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}]}]}"#;

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn pinip(vars: &[(&str, &str)], stdin: &[u8]) -> Ran {
    let mut cmd = Command::new(PINIP);
    cmd.env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn add_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0",
        ),
    ]
}

fn conf(ipam: Value, alloc: Option<&str>) -> Vec<u8> {
    let mut annotations = json!({});
    if let Some(a) = alloc {
        annotations["pinip.io/allocation"] = json!(a);
    }
    json!({
        "cniVersion": "0.4.0", "name": "n", "type": "bridge", "ipam": ipam,
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": annotations}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn debug_logs_go_to_stderr_and_stdout_is_only_the_result() {
    let r = pinip(
        &add_env(),
        &conf(json!({"type": "pinip", "logLevel": "debug"}), Some(ALLOC)),
    );
    assert_eq!(r.code, Some(0), "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "{\"cniVersion\":\"0.4.0\",\"ips\":[{\"version\":\"4\",\"address\":\"10.20.0.5/24\",\"gateway\":\"10.20.0.1\"}]}\n"
    );
    assert!(r.stderr.contains("INFO"), "{}", r.stderr);
    assert!(
        r.stderr.contains("pod db/web-0: 10.20.0.5/24 gw 10.20.0.1"),
        "{}",
        r.stderr
    );
}

#[test]
fn default_level_is_quiet_on_success() {
    let r = pinip(&add_env(), &conf(json!({"type": "pinip"}), Some(ALLOC)));
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stderr, "");
}

#[test]
fn log_level_off_is_silent_even_on_error() {
    let r = pinip(
        &add_env(),
        &conf(json!({"type": "pinip", "logLevel": "off"}), None),
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr, "");
    let err: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(err["code"], json!(100));
    assert_eq!(err["cniVersion"], json!("0.4.0"));
}

#[test]
fn errors_are_json_on_stdout_with_non_zero_exit() {
    let r = pinip(&add_env(), b"garbage");
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stdout,
        "{\"cniVersion\":\"1.1.0\",\"code\":6,\"msg\":\"cannot decode the network configuration on stdin\",\"details\":\"expected value at line 1 column 1; the runtime must send the plugin configuration as a JSON object\"}\n"
    );
    let r = pinip(&[], b"{}");
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stdout,
        "{\"cniVersion\":\"1.1.0\",\"code\":4,\"msg\":\"invalid CNI_COMMAND\",\"details\":\"CNI_COMMAND is not set; it must be one of ADD, DEL, CHECK, GC, STATUS, VERSION\"}\n"
    );
}

#[test]
fn del_prints_nothing_and_succeeds() {
    let r = pinip(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ],
        br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"pinip"}}"#,
    );
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), ""));
}

#[test]
fn version_works_without_stdin() {
    let r = pinip(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.stdout,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
}
