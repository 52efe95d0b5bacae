//! Conformance: Debian's reference `bridge` and `macvlan` plugins delegate IPAM to the built
//! `pinip` binary, executed exactly as containerd executes a chain (environment variables,
//! request config on stdin derived from a conflist with the pod-annotations capability), in
//! network namespaces this test creates and always removes.
//!
//! Needs root, `ip` (iproute2) and Debian's plugins in /usr/lib/cni
//! (`apt-get install -y containernetworking-plugins iproute2`); it fails, saying what is
//! missing, when they are not there.
//!
//! The root network namespace is never touched: each case makes a "host" namespace (where the
//! runtime and the plugins run, via `ip netns exec`) and a "container" namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value, json};

const DEBIAN_CNI: &str = "/usr/lib/cni";
const PINIP: &str = env!("CARGO_BIN_EXE_pinip");

mod common;

const ALLOCATION: &str = r#"{"version":1,"interfaces":[{"name":"eth0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1","pool":"blue","claim":"10-20-0-5"},{"address":"fd00:20::5/64","pool":"blue6","claim":"fd00-0020-0000-0000-0000-0000-0000-0005"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"},{"dst":"10.99.0.0/16","gw":"10.20.0.254"}],"dns":{"nameservers":["10.96.0.10"],"search":["db.svc.cluster.local"]}}]}"#;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Fail (not skip) when the machine cannot run this test, naming what is missing.
fn preflight() {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_string());
    }
    for p in ["bridge", "macvlan", "host-local"] {
        if !Path::new(DEBIAN_CNI).join(p).exists() {
            missing.push(format!(
                "{DEBIAN_CNI}/{p} (apt-get install -y containernetworking-plugins)"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("the ip command (apt-get install -y iproute2)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the CNI conformance test cannot run; missing: {}",
        missing.join("; ")
    );
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted when dropped (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn sysctl(&self, key: &str, value: &str) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .output()
            .expect("run sysctl");
        assert!(
            out.status.success(),
            "sysctl {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A CNI_PATH directory of symlinks: every Debian plugin, and a build of `pinip`.
struct CniPath {
    dir: tempfile::TempDir,
}

impl CniPath {
    fn new() -> CniPath {
        CniPath::with(Path::new(PINIP))
    }

    fn with(pinip: &Path) -> CniPath {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(DEBIAN_CNI).expect("read /usr/lib/cni") {
            let entry = entry.expect("dir entry");
            std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name()))
                .expect("symlink plugin");
        }
        std::os::unix::fs::symlink(pinip, dir.path().join("pinip")).expect("symlink pinip");
        CniPath { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Find a plugin binary the way a runtime does: by `type` in CNI_PATH.
    fn find(&self, plugin_type: &str) -> PathBuf {
        let p = self.path().join(plugin_type);
        assert!(p.exists(), "plugin {plugin_type} not in CNI_PATH");
        p
    }
}

/// One pod sandbox's attachment parameters.
struct Attachment {
    container_id: String,
    netns: String,
    ifname: String,
    call: usize,
}

impl Attachment {
    /// CNI_ARGS as containerd builds them: the key order changes from call to call.
    fn cni_args(&mut self) -> String {
        let mut items = [
            "K8S_POD_NAME=web-0".to_string(),
            format!("K8S_POD_INFRA_CONTAINER_ID={}", self.container_id),
            "K8S_POD_UID=6b1c7f7e-0000-4000-8000-000000000001".to_string(),
            "IgnoreUnknown=1".to_string(),
            "K8S_POD_NAMESPACE=db".to_string(),
        ];
        let n = items.len();
        items.rotate_left(self.call % n);
        self.call += 1;
        items.join(";")
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// The request configuration a runtime derives for plugin `idx` of `list` (spec section 3):
/// the plugin object plus `cniVersion` and `name`, `capabilities` removed, `runtimeConfig`
/// holding the declared capabilities the runtime has arguments for, and `prevResult`.
fn request_config(list: &Value, idx: usize, cap_args: &Value, prev: Option<&Value>) -> Value {
    let mut plugin: Map<String, Value> = list["plugins"][idx].as_object().unwrap().clone();
    let caps = plugin.remove("capabilities").unwrap_or(json!({}));
    plugin.insert("cniVersion".into(), list["cniVersion"].clone());
    plugin.insert("name".into(), list["name"].clone());
    let mut rc = Map::new();
    for (k, v) in cap_args.as_object().unwrap() {
        if caps.get(k) == Some(&Value::Bool(true)) {
            rc.insert(k.clone(), v.clone());
        }
    }
    if !rc.is_empty() {
        plugin.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(p) = prev {
        plugin.insert("prevResult".into(), p.clone());
    }
    Value::Object(plugin)
}

/// Execute a plugin as a runtime does, in the "host" namespace `host`.
#[allow(clippy::too_many_arguments)]
fn exec(
    host: &Netns,
    cni_path: &CniPath,
    binary: &Path,
    command: &str,
    att: &mut Attachment,
    netns: Option<&str>,
    stdin: &Value,
) -> Run {
    let netns = netns.unwrap_or(&att.netns).to_string();
    let args = att.cni_args();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(binary)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &att.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", &att.ifname)
        .env("CNI_PATH", cni_path.path())
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes())
        .expect("write stdin");
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for plugin");
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Main {
    Bridge,
    Macvlan,
}

/// The conflist for `main` with pinip as IPAM, logging to `log`.
fn conflist(main: Main, version: &str, log: &Path) -> Value {
    let ipam = json!({"type": "pinip", "logFile": log, "logLevel": "debug"});
    let caps = json!({"io.kubernetes.cri.pod-annotations": true, "portMappings": true});
    let plugin = match main {
        Main::Bridge => json!({
            "type": "bridge", "bridge": "pinipbr0", "isGateway": false, "ipMasq": false,
            "capabilities": caps, "ipam": ipam
        }),
        Main::Macvlan => json!({
            "type": "macvlan", "master": "pinipvm0", "mode": "bridge",
            "capabilities": caps, "ipam": ipam
        }),
    };
    json!({"cniVersion": version, "name": "blue-net", "plugins": [plugin]})
}

fn capability_args(allocation: Option<&str>) -> Value {
    let mut annotations = json!({"kubernetes.io/config.source": "api", "other/annotation": "yes"});
    if let Some(a) = allocation {
        annotations["pinip.io/allocation"] = json!(a);
    }
    json!({
        "io.kubernetes.cri.pod-annotations": annotations,
        "portMappings": [],
        "bandwidth": {"IngressRate": 1}
    })
}

/// A host namespace set up for `main`, and a container namespace.
fn namespaces(main: Main) -> (Netns, Netns) {
    let host = Netns::new("pinip-host");
    if main == Main::Macvlan {
        host.ip(&[
            "link", "add", "pinipvm0", "type", "veth", "peer", "name", "pinipvp0",
        ]);
        host.ip(&["link", "set", "pinipvm0", "up"]);
        host.ip(&["link", "set", "pinipvp0", "up"]);
    }
    let container = Netns::new("pinip-ctr");
    // No duplicate address detection in the container: IPv6 addresses are usable at once.
    container.sysctl("net.ipv6.conf.default.accept_dad", "0");
    container.sysctl("net.ipv6.conf.all.accept_dad", "0");
    (host, container)
}

fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected {needle:?} in:\n{haystack}"
    );
}

/// The full sandbox lifecycle as containerd drives it, for one main plugin and version.
fn lifecycle(main: Main, version: &str) {
    lifecycle_of(Path::new(PINIP), main, version);
}

fn lifecycle_of(pinip: &Path, main: Main, version: &str) {
    preflight();
    let cni_path = CniPath::with(pinip);
    let log = cni_path.path().join("pinip.log");
    let (host, container) = namespaces(main);
    let list = conflist(main, version, &log);
    let caps = capability_args(Some(ALLOCATION));
    let binary = cni_path.find(list["plugins"][0]["type"].as_str().unwrap());
    let mut att = Attachment {
        container_id: format!(
            "{:x}cafe{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ),
        netns: container.path(),
        ifname: "eth0".into(),
        call: 0,
    };
    let ctx = format!(
        "{main_name} {version}",
        main_name = list["plugins"][0]["type"]
    );

    // ADD (RunPodSandbox).
    let add = exec(
        &host,
        &cni_path,
        &binary,
        "ADD",
        &mut att,
        None,
        &request_config(&list, 0, &caps, None),
    );
    assert!(add.ok, "{ctx}: ADD failed: {} {}", add.stdout, add.stderr);
    let result = add.json();
    assert_eq!(result["cniVersion"], json!(version), "{ctx}: {result}");
    let ips = result["ips"].as_array().expect("ips");
    let v4 = ips
        .iter()
        .find(|i| i["address"] == json!("10.20.0.5/24"))
        .unwrap_or_else(|| panic!("{ctx}: no 10.20.0.5/24 in {result}"));
    assert_eq!(v4["gateway"], json!("10.20.0.1"), "{ctx}");
    assert!(
        ips.iter().any(|i| i["address"] == json!("fd00:20::5/64")),
        "{ctx}: {result}"
    );
    if version.starts_with("0.") {
        assert_eq!(v4["version"], json!("4"), "{ctx}: {result}");
    } else {
        assert!(v4.get("version").is_none(), "{ctx}: {result}");
    }
    assert!(
        result["interfaces"].is_array(),
        "{ctx}: the main plugin reports interfaces"
    );

    // What the kernel has in the container.
    let addrs = container.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert_contains(&addrs, "inet 10.20.0.5/24", &ctx);
    assert_contains(&addrs, "inet6 fd00:20::5/64", &ctx);
    let routes = container.ip(&["route", "show"]);
    assert_contains(&routes, "default via 10.20.0.1 dev eth0", &ctx);
    assert_contains(&routes, "10.99.0.0/16 via 10.20.0.254 dev eth0", &ctx);
    assert_contains(&routes, "10.20.0.0/24 dev eth0", &ctx);

    // pinip logged to its logFile, never to stdout (the main plugin parsed its result).
    let logged = std::fs::read_to_string(&log).expect("pinip log file");
    assert_contains(&logged, "10.20.0.5/24 gw 10.20.0.1", &ctx);
    assert_contains(&logged, "from runtimeConfig pod annotations", &ctx);

    // CHECK (0.4.0 and later): passes with the right prevResult, fails with a wrong one.
    if version != "0.3.0" && version != "0.3.1" {
        let check = exec(
            &host,
            &cni_path,
            &binary,
            "CHECK",
            &mut att,
            None,
            &request_config(&list, 0, &caps, Some(&result)),
        );
        assert!(
            check.ok,
            "{ctx}: CHECK failed: {} {}",
            check.stdout, check.stderr
        );
        assert_eq!(check.stdout, "", "{ctx}: CHECK prints nothing on success");

        let mut wrong = result.clone();
        for ip in wrong["ips"].as_array_mut().unwrap() {
            if ip["address"] == json!("10.20.0.5/24") {
                ip["address"] = json!("10.20.0.99/24");
            }
        }
        let bad = exec(
            &host,
            &cni_path,
            &binary,
            "CHECK",
            &mut att,
            None,
            &request_config(&list, 0, &caps, Some(&wrong)),
        );
        assert!(!bad.ok, "{ctx}: CHECK with a wrong prevResult passed");
        let err = bad.json();
        assert_eq!(err["code"], json!(105), "{ctx}: {err}");
        assert_contains(
            err["msg"].as_str().unwrap_or(""),
            "CHECK failed: the addresses of eth0 differ from pinip.io/allocation of pod db/web-0",
            &ctx,
        );
        assert_contains(
            err["details"].as_str().unwrap_or(""),
            "prevResult has [10.20.0.99/24 gw 10.20.0.1",
            &ctx,
        );
    }

    // DEL 1 (StopPodSandbox): netns set, prevResult.
    let del1 = exec(
        &host,
        &cni_path,
        &binary,
        "DEL",
        &mut att,
        None,
        &request_config(&list, 0, &caps, Some(&result)),
    );
    assert!(
        del1.ok,
        "{ctx}: first DEL failed: {} {}",
        del1.stdout, del1.stderr
    );
    let links = container.ip(&["-o", "link", "show"]);
    assert!(
        !links.contains("eth0"),
        "{ctx}: eth0 still there after DEL:\n{links}"
    );

    // DEL 2 (RemovePodSandbox): empty CNI_NETNS, no prevResult; and once more.
    for round in 0..2 {
        let del2 = exec(
            &host,
            &cni_path,
            &binary,
            "DEL",
            &mut att,
            Some(""),
            &request_config(&list, 0, &caps, None),
        );
        assert!(
            del2.ok,
            "{ctx}: DEL with empty netns (round {round}) failed: {} {}",
            del2.stdout, del2.stderr
        );
    }
}

#[test]
fn static_build_bridge_1_0_0() {
    if let Some(pinip) = common::static_pinip() {
        lifecycle_of(&pinip, Main::Bridge, "1.0.0");
    }
}

#[test]
fn bridge_0_3_0() {
    lifecycle(Main::Bridge, "0.3.0");
}

#[test]
fn bridge_0_3_1() {
    lifecycle(Main::Bridge, "0.3.1");
}

#[test]
fn bridge_0_4_0() {
    lifecycle(Main::Bridge, "0.4.0");
}

#[test]
fn bridge_1_0_0() {
    lifecycle(Main::Bridge, "1.0.0");
}

#[test]
fn macvlan_0_3_0() {
    lifecycle(Main::Macvlan, "0.3.0");
}

#[test]
fn macvlan_0_3_1() {
    lifecycle(Main::Macvlan, "0.3.1");
}

#[test]
fn macvlan_0_4_0() {
    lifecycle(Main::Macvlan, "0.4.0");
}

#[test]
fn macvlan_1_0_0() {
    lifecycle(Main::Macvlan, "1.0.0");
}

/// A pod without an allocation: the main plugin's ADD fails with pinip's message (what
/// containerd shows in RunPodSandbox's error), and the DELs containerd then makes succeed.
#[test]
fn add_without_allocation_fails_cleanly_through_bridge() {
    preflight();
    let cni_path = CniPath::new();
    let log = cni_path.path().join("pinip.log");
    let (host, container) = namespaces(Main::Bridge);
    let list = conflist(Main::Bridge, "1.0.0", &log);
    let caps = capability_args(None);
    let binary = cni_path.find("bridge");
    let mut att = Attachment {
        container_id: format!(
            "{:x}dead{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ),
        netns: container.path(),
        ifname: "eth0".into(),
        call: 0,
    };
    let add = exec(
        &host,
        &cni_path,
        &binary,
        "ADD",
        &mut att,
        None,
        &request_config(&list, 0, &caps, None),
    );
    assert!(
        !add.ok,
        "ADD without an allocation succeeded: {}",
        add.stdout
    );
    let err = add.json();
    assert_eq!(err["code"], json!(100), "{err}");
    assert_eq!(
        err["msg"],
        json!(
            "pod db/web-0 has no pinip.io/allocation annotation: namespace not enabled for pinip, or the webhook was unreachable when the pod was created"
        ),
    );
    let del = exec(
        &host,
        &cni_path,
        &binary,
        "DEL",
        &mut att,
        None,
        &request_config(&list, 0, &caps, None),
    );
    assert!(
        del.ok,
        "DEL after a failed ADD: {} {}",
        del.stdout, del.stderr
    );
    let del = exec(
        &host,
        &cni_path,
        &binary,
        "DEL",
        &mut att,
        Some(""),
        &request_config(&list, 0, &caps, None),
    );
    assert!(
        del.ok,
        "DEL with empty netns after a failed ADD: {} {}",
        del.stdout, del.stderr
    );
}

/// CNI 1.1.0: Debian's plugins (1.1.1) speak up to 1.0.0, so the runtime-side protocol is
/// exercised on `pinip` itself, executed as a 1.1.0 main plugin would delegate to it: ADD,
/// CHECK, both DELs, GC and STATUS, plus VERSION.
#[test]
fn pinip_direct_1_1_0() {
    preflight();
    let cni_path = CniPath::new();
    let log = cni_path.path().join("pinip.log");
    let (host, container) = namespaces(Main::Bridge);
    let list = conflist(Main::Bridge, "1.1.0", &log);
    let caps = capability_args(Some(ALLOCATION));
    let pinip = cni_path.find("pinip");
    let mut att = Attachment {
        container_id: format!(
            "{:x}beef{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ),
        netns: container.path(),
        ifname: "eth0".into(),
        call: 0,
    };
    let request = |prev: Option<&Value>| request_config(&list, 0, &caps, prev);

    let add = exec(
        &host,
        &cni_path,
        &pinip,
        "ADD",
        &mut att,
        None,
        &request(None),
    );
    assert!(add.ok, "ADD: {} {}", add.stdout, add.stderr);
    assert_eq!(
        add.stdout,
        r#"{"cniVersion":"1.1.0","ips":[{"address":"10.20.0.5/24","gateway":"10.20.0.1"},{"address":"fd00:20::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.20.0.1"},{"dst":"10.99.0.0/16","gw":"10.20.0.254"}],"dns":{"nameservers":["10.96.0.10"],"search":["db.svc.cluster.local"]}}"#
    );
    // The main plugin's result built on it, as prevResult.
    let mut main_result = add.json();
    main_result["interfaces"] = json!([{"name": "pinipbr0"}, {"name": "veth0"}, {"name": "eth0", "sandbox": container.path()}]);
    for ip in main_result["ips"].as_array_mut().unwrap() {
        ip["interface"] = json!(2);
    }
    let check = exec(
        &host,
        &cni_path,
        &pinip,
        "CHECK",
        &mut att,
        None,
        &request(Some(&main_result)),
    );
    assert!(
        check.ok && check.stdout.is_empty(),
        "CHECK: {} {}",
        check.stdout,
        check.stderr
    );
    let mut wrong = main_result.clone();
    wrong["ips"][0]["address"] = json!("10.20.0.6/24");
    let bad = exec(
        &host,
        &cni_path,
        &pinip,
        "CHECK",
        &mut att,
        None,
        &request(Some(&wrong)),
    );
    assert!(!bad.ok);
    assert_eq!(bad.json()["code"], json!(105));

    let del = exec(
        &host,
        &cni_path,
        &pinip,
        "DEL",
        &mut att,
        None,
        &request(Some(&main_result)),
    );
    assert!(
        del.ok && del.stdout.is_empty(),
        "DEL: {} {}",
        del.stdout,
        del.stderr
    );
    let del = exec(
        &host,
        &cni_path,
        &pinip,
        "DEL",
        &mut att,
        Some(""),
        &request(None),
    );
    assert!(
        del.ok && del.stdout.is_empty(),
        "DEL 2: {} {}",
        del.stdout,
        del.stderr
    );

    // GC and STATUS have no attachment parameters.
    let mut gc = request_config(&list, 0, &json!({}), None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": att.container_id, "ifname": "eth0"}]);
    let run = exec(&host, &cni_path, &pinip, "GC", &mut att, Some(""), &gc);
    assert!(
        run.ok && run.stdout.is_empty(),
        "GC: {} {}",
        run.stdout,
        run.stderr
    );
    let run = exec(
        &host,
        &cni_path,
        &pinip,
        "STATUS",
        &mut att,
        Some(""),
        &request_config(&list, 0, &json!({}), None),
    );
    assert!(
        run.ok && run.stdout.is_empty(),
        "STATUS: {} {}",
        run.stdout,
        run.stderr
    );
    let run = exec(
        &host,
        &cni_path,
        &pinip,
        "VERSION",
        &mut att,
        Some(""),
        &json!({"cniVersion": "1.1.0"}),
    );
    assert_eq!(
        run.stdout,
        r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}
