//! The API-read path through the real `kube` client, against loopback endpoints this test
//! owns: a closed port, a port that never answers, and a minimal HTTP responder that plays the
//! API server's part for one GET. (The end-to-end test against a real kube-apiserver belongs
//! to the integration test bed; see the README.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pinip_cni::error::CniError;
use pinip_cni::pod::{KubeApi, KubeTarget, PodApi, PodRef};

mod common;

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: test-token
contexts:
- name: ctx
  context:
    cluster: c
    user: u
current-context: ctx
"
        ),
    )
    .unwrap();
    path
}

fn target(path: PathBuf, secs: f64) -> KubeTarget {
    KubeTarget {
        kubeconfig: Some(path),
        timeout: Duration::from_secs_f64(secs),
        timeout_secs: secs,
    }
}

fn web0() -> PodRef {
    PodRef {
        namespace: "db".into(),
        name: "web-0".into(),
    }
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Serve one HTTP request with `status` and `body`; send back the request line.
fn respond_once(status: &'static str, body: String) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            headers.push(line.trim_end().to_ascii_lowercase());
        }
        let mut stream: TcpStream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream.flush().unwrap();
        let auth = headers
            .iter()
            .find(|h| h.starts_with("authorization:"))
            .cloned()
            .unwrap_or_default();
        tx.send(format!("{} | {auth}", request_line.trim_end()))
            .unwrap();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    (port, rx)
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
    .to_string()
}

#[test]
fn closed_port_is_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let e = KubeApi.get_pod(&target(kc, 5.0), &web0()).unwrap_err();
    assert_eq!(e.code(), 11, "{e:?}");
    assert_eq!(
        e.msg(),
        format!(
            "cannot reach the Kubernetes API server https://127.0.0.1:{port}/ to read pod db/web-0"
        )
    );
    let details = e.details();
    assert!(details.contains("Connection refused"), "{details}");
    assert!(details.ends_with("try again later"), "{details}");
}

#[test]
fn silent_server_times_out_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel completes the handshake) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let start = std::time::Instant::now();
    let e = KubeApi.get_pod(&target(kc, 0.3), &web0()).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        e.to_json("1.0.0"),
        format!(
            r#"{{"cniVersion":"1.0.0","code":11,"msg":"no answer from the Kubernetes API server https://127.0.0.1:{port}/ within 0.3s reading pod db/web-0","details":"the read is bounded by the ipam \"timeout\" (0.3s); check that this node can reach the API server, then try again later"}}"#
        )
    );
    drop(silent);
}

#[test]
fn missing_kubeconfig_file_is_invalid_config() {
    let e = KubeApi
        .get_pod(
            &target("/nonexistent/pinip.kubeconfig".into(), 5.0),
            &web0(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_json("1.0.0"),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"cannot load the Kubernetes client configuration (kubeconfig /nonexistent/pinip.kubeconfig)","details":"failed to read kubeconfig from '\"/nonexistent/pinip.kubeconfig\"': No such file or directory (os error 2); set \"kubeconfig\" in the ipam config to a readable kubeconfig file, or declare the io.kubernetes.cri.pod-annotations capability so that no API read is needed"}"#
    );
}

#[test]
fn unparseable_kubeconfig_is_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kc");
    std::fs::write(&path, "clusters: [").unwrap();
    let e = KubeApi
        .get_pod(&target(path.clone(), 5.0), &web0())
        .unwrap_err();
    assert_eq!(e.code(), 7);
    assert_eq!(
        e.msg(),
        format!(
            "cannot load the Kubernetes client configuration (kubeconfig {})",
            path.display()
        )
    );
    assert!(
        e.details().starts_with("failed to parse kubeconfig YAML"),
        "{}",
        e.details()
    );

    std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    let e = KubeApi.get_pod(&target(path, 5.0), &web0()).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(
        e.details()
            .starts_with("failed to determine current context"),
        "{}",
        e.details()
    );
}

#[test]
fn one_get_of_the_pod_metadata() {
    let alloc = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","pool":"blue","claim":"10-20-0-5"}]}]}"#;
    let body = serde_json::json!({
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "web-0", "namespace": "db", "uid": "uid-1",
                     "annotations": {"pinip.io/allocation": alloc, "other": "x"}}
    })
    .to_string();
    let (port, rx) = respond_once("200 OK", body);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
    let meta = KubeApi.get_pod(&target(kc, 5.0), &web0()).unwrap();
    assert_eq!(meta.uid.as_deref(), Some("uid-1"));
    assert_eq!(
        meta.annotations
            .get("pinip.io/allocation")
            .map(String::as_str),
        Some(alloc)
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "GET /api/v1/namespaces/db/pods/web-0 HTTP/1.1 | authorization: bearer test-token"
    );
}

#[test]
fn api_statuses_map_to_codes() {
    let cases: [(&str, u16, &str, u32); 3] = [
        ("404 Not Found", 404, "NotFound", 103),
        ("403 Forbidden", 403, "Forbidden", 104),
        ("503 Service Unavailable", 503, "ServiceUnavailable", 11),
    ];
    for (status, code, reason, cni_code) in cases {
        let (port, _rx) = respond_once(status, status_body(code, reason, "the message"));
        let dir = tempfile::tempdir().unwrap();
        let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
        let e: CniError = KubeApi.get_pod(&target(kc, 5.0), &web0()).unwrap_err();
        assert_eq!(e.code(), cni_code, "{status}: {e:?}");
    }
}

#[test]
fn status_probe_reports_unreachable_as_50() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let e = KubeApi.probe(&target(kc, 5.0)).unwrap_err();
    assert_eq!(e.code(), 50);
    assert_eq!(
        e.msg(),
        format!(
            "the Kubernetes API server https://127.0.0.1:{port}/ is not reachable: pinip cannot serve ADD"
        )
    );
    assert!(
        e.details().contains("Connection refused"),
        "{}",
        e.details()
    );

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let e = KubeApi.probe(&target(kc, 0.3)).unwrap_err();
    assert_eq!(
        e.to_json("1.1.0"),
        format!(
            r#"{{"cniVersion":"1.1.0","code":50,"msg":"the Kubernetes API server https://127.0.0.1:{port}/ is not reachable: pinip cannot serve ADD","details":"no answer within 0.3s; pods whose runtime passes io.kubernetes.cri.pod-annotations in runtimeConfig do not need the API server"}}"#
        )
    );
}

#[test]
fn status_probe_succeeds_when_the_server_answers() {
    let body = serde_json::json!({
        "major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "x",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
        "compiler": "gc", "platform": "linux/amd64"
    })
    .to_string();
    let (port, rx) = respond_once("200 OK", body);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
    KubeApi.probe(&target(kc, 5.0)).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .starts_with("GET /version HTTP/1.1")
    );
}

/// Run the `pinip` binary (the one without a client) as the runtime does: ADD or STATUS,
/// config on stdin. Returns the exit status and stdout.
fn run_plugin(binary: &Path, verb: &str, kubeconfig: &Path) -> (Option<i32>, serde_json::Value) {
    use std::process::{Command, Stdio};
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "n", "type": "bridge",
        "ipam": {"type": "pinip", "kubeconfig": kubeconfig, "timeout": 5},
    });
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{verb}: stdout is not JSON ({e}): {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn the_plugin_hands_an_api_read_to_pinip_kube() {
    hand_off(Path::new(env!("CARGO_BIN_EXE_pinip")));
}

#[test]
fn the_static_build_hands_an_api_read_to_pinip_kube() {
    // A static `pinip` execs the dynamically linked reader beside it, as on a node.
    let Some(pinip) = common::static_pinip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&pinip, dir.path().join("pinip")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_pinip-kube"),
        dir.path().join("pinip-kube"),
    )
    .unwrap();
    hand_off(&dir.path().join("pinip"));
}

/// The GET through `pinip` (which hands it to `pinip-kube`; that it cannot do it alone is
/// shown by the tests below): the answer needs the request on stdin to have reached the
/// reader whole.
fn hand_off(pinip: &Path) {
    let body = serde_json::json!({
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "web-0", "namespace": "db", "uid": "uid-1",
                     "annotations": {"pinip.io/allocation": r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"}]}]}"#}}
    })
    .to_string();
    let (port, rx) = respond_once("200 OK", body);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
    let (code, out) = run_plugin(pinip, "ADD", &kc);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        serde_json::json!({"cniVersion": "1.1.0",
                           "ips": [{"address": "10.20.0.5/24", "gateway": "10.20.0.1"}]})
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "GET /api/v1/namespaces/db/pods/web-0 HTTP/1.1 | authorization: bearer test-token"
    );

    // STATUS with a kubeconfig is an API call too.
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{}", closed_port()));
    let (code, out) = run_plugin(pinip, "STATUS", &kc);
    assert_eq!(
        (code, out["code"].clone()),
        (Some(1), serde_json::json!(50)),
        "{out}"
    );
}

#[test]
fn the_plugin_without_its_api_reader_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("pinip");
    std::fs::copy(env!("CARGO_BIN_EXE_pinip"), &lone).unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{}", closed_port()));
    let reader = dir.path().join("pinip-kube").display().to_string();
    let (code, out) = run_plugin(&lone, "ADD", &kc);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out["code"], serde_json::json!(106), "{out}");
    assert_eq!(
        out["msg"],
        serde_json::json!(format!(
            "cannot run {reader}, which reads pod db/web-0 from the Kubernetes API server"
        ))
    );
    let details = out["details"].as_str().unwrap();
    assert!(
        details.starts_with("No such file or directory") && details.contains("install pinip-kube"),
        "{details}"
    );

    // STATUS: the node cannot serve ADDs that need the API (50, not 106).
    let (code, out) = run_plugin(&lone, "STATUS", &kc);
    assert_eq!(
        (code, out["code"].clone()),
        (Some(1), serde_json::json!(50)),
        "{out}"
    );
    assert_eq!(
        out["msg"],
        serde_json::json!(format!(
            "pinip cannot serve an ADD that reads the Kubernetes API server: cannot run its API reader {reader}"
        ))
    );
}

#[test]
fn a_copy_of_the_plugin_as_its_reader_does_not_exec_forever() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pinip", "pinip-kube"] {
        std::fs::copy(env!("CARGO_BIN_EXE_pinip"), dir.path().join(name)).unwrap();
    }
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{}", closed_port()));
    let (code, out) = run_plugin(&dir.path().join("pinip"), "ADD", &kc);
    assert_eq!(
        (code, out["code"].clone()),
        (Some(1), serde_json::json!(106)),
        "{out}"
    );
    assert!(
        out["details"]
            .as_str()
            .unwrap()
            .starts_with("it is not the API reader: it is pinip itself"),
        "{out}"
    );
}

#[test]
fn the_plugin_links_no_kubernetes_client() {
    // What keeps `pinip`'s start-up short: the client's crates are in `pinip-kube` only.
    // Counted over defined symbols other than file names (`nm`, from binutils with the C
    // toolchain), so that a crate's object-file name alone does not count.
    let symbols = |bin: &str| {
        let out = std::process::Command::new("nm")
            .args(["--defined-only", "--demangle", bin])
            .output()
            .expect("nm (binutils) runs");
        assert!(out.status.success(), "nm {bin}: {:?}", out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains(" f ") && !l.contains(" F "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (lean, full) = (
        symbols(env!("CARGO_BIN_EXE_pinip")),
        symbols(env!("CARGO_BIN_EXE_pinip-kube")),
    );
    for krate in ["rustls::", "hyper::", "tokio::", "kube_client::"] {
        assert!(
            full.iter().any(|l| l.contains(krate)),
            "pinip-kube has no {krate} symbol: the check is blind"
        );
        let found: Vec<_> = lean.iter().filter(|l| l.contains(krate)).take(3).collect();
        assert!(found.is_empty(), "pinip links {krate}: {found:?}");
    }
}

#[test]
fn the_static_build_loads_nothing_at_start() {
    // What its start-up saves: no program interpreter (ld.so, libc.so) and, as a
    // position-dependent executable (ELF type EXEC, not DYN), no relocations to apply.
    let Some(pinip) = common::static_pinip() else {
        return;
    };
    let elf = std::fs::read(&pinip).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "not a 64-bit little-endian ELF file"
    );
    const ET_EXEC: u16 = 2;
    const PT_LOAD: u32 = 1;
    const PT_INTERP: u32 = 3;
    assert_eq!(u16_at(16), ET_EXEC, "e_type: a PIE or a shared object");
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let types: Vec<u32> = (0..phnum as usize)
        .map(|i| u32_at(phoff + i * phentsize))
        .collect();
    assert!(
        types.contains(&PT_LOAD),
        "no PT_LOAD: the headers were misread: {types:?}"
    );
    assert!(
        !types.contains(&PT_INTERP),
        "it names a program interpreter: {types:?}"
    );
}
