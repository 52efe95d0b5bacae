//! Every manifest is accepted by the real kube-apiserver (server-side dry-run apply): the
//! Kustomize entry point, the example pools, and the Helm chart rendered by a real helm, in
//! both certificate modes; the NetworkPolicies fit the pods they fence.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use pinip_integration::pinip::{self, MANIFESTS, kubectl};
use pinip_integration::{Bed, BedOptions};

fn helm() -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm-build.sh");
    let out = Command::new(&script).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn helm_template(extra: &[&str]) -> Result<String> {
    let out = Command::new(helm()?)
        .args([
            "template",
            "pinip",
            &format!("{MANIFESTS}/helm/pinip"),
            "--namespace",
            "pinip-system",
            "--kube-version",
            "1.37.2",
        ])
        .args(extra)
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl apply --server-side --dry-run=server -f -` with `yaml` on stdin.
fn dry_run(bed: &Bed, yaml: &str) -> Result<String> {
    let mut child =
        Command::new(pinip_integration::controlplane::upstream_bin_dir()?.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&bed.kubeconfig)
            .args(["apply", "--server-side", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "dry-run apply rejected:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl auth can-i --as=<user> <args>` against the bed: whether the manifests' RBAC
/// allows it.
fn can_i(bed: &Bed, user: &str, args: &[&str]) -> Result<bool> {
    let out = Command::new(pinip_integration::controlplane::upstream_bin_dir()?.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["auth", "can-i", &format!("--as={user}")])
        .args(args)
        .output()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {args:?}: {other} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Each component's identity may do what it needs and nothing near it: the network-facing
/// webhook can neither read the CA key nor patch pinip's webhook configurations (pinip-certs
/// can), the binder cannot create claims, the CNI credential only reads pods.
fn least_privilege(bed: &Bed) -> Result<()> {
    use pinip::{BINDER_USER, CERTS_USER, WEBHOOK_USER};
    let cni = "system:serviceaccount:pinip-system:pinip-cni";
    let checks: &[(&str, &[&str], bool)] = &[
        (WEBHOOK_USER, &["create", "ipclaims.pinip.io"], true),
        (WEBHOOK_USER, &["patch", "ipclaims.pinip.io"], true),
        (WEBHOOK_USER, &["get", "pods", "-n", "default"], true),
        (
            WEBHOOK_USER,
            &["get", "secrets/pinip-webhook-tls", "-n", "pinip-system"],
            false,
        ),
        (
            WEBHOOK_USER,
            &["list", "secrets", "-n", "pinip-system"],
            false,
        ),
        (
            WEBHOOK_USER,
            &["patch", "validatingwebhookconfigurations/pinip"],
            false,
        ),
        (
            WEBHOOK_USER,
            &["patch", "mutatingwebhookconfigurations/pinip"],
            false,
        ),
        (WEBHOOK_USER, &["update", "pods", "-n", "default"], false),
        (
            CERTS_USER,
            &["get", "secrets/pinip-webhook-tls", "-n", "pinip-system"],
            true,
        ),
        (
            CERTS_USER,
            &["get", "secrets/other", "-n", "pinip-system"],
            false,
        ),
        (
            CERTS_USER,
            &["patch", "validatingwebhookconfigurations/pinip"],
            true,
        ),
        (
            CERTS_USER,
            &["patch", "validatingwebhookconfigurations/other"],
            false,
        ),
        (CERTS_USER, &["create", "ipclaims.pinip.io"], false),
        (BINDER_USER, &["create", "ipclaims.pinip.io"], false),
        (BINDER_USER, &["delete", "ipclaims.pinip.io"], true),
        (
            BINDER_USER,
            &["get", "secrets", "-n", "pinip-system"],
            false,
        ),
        (cni, &["get", "pods", "-n", "default"], true),
        (cni, &["list", "pods", "-n", "default"], false),
        (cni, &["get", "ipclaims.pinip.io"], false),
    ];
    for (user, args, want) in checks {
        let got = can_i(bed, user, args)?;
        if got != *want {
            bail!("{user} {args:?}: allowed {got}, the manifests mean {want}");
        }
    }
    Ok(())
}

/// The YAML documents of a multi-document string, as JSON values.
fn docs(yaml: &str) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---") {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        out.push(serde_saphyr::from_str(doc)?);
    }
    Ok(out)
}

/// Each NetworkPolicy selects one of the rendered Deployments' pods and opens only ports that
/// Deployment's containers serve; the webhook's admission port (8443) admits no pod peer
/// (kube-apiserver is named by address), and the probes' port is one the policy opens.
fn network_policies_fit(yaml: &str) -> Result<()> {
    use serde_json::Value;
    let all = docs(yaml)?;
    let deployments: Vec<&Value> = all.iter().filter(|d| d["kind"] == "Deployment").collect();
    let policies: Vec<&Value> = all
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    for name in ["pinip-webhook", "pinip-binder"] {
        let np = policies
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .with_context(|| format!("no NetworkPolicy {name}"))?;
        let sel = np["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .context("matchLabels")?;
        let dep = deployments
            .iter()
            .find(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                sel.iter().all(|(k, v)| &labels[k] == v)
            })
            .with_context(|| format!("NetworkPolicy {name} selects no Deployment's pods"))?;
        let container = &dep["spec"]["template"]["spec"]["containers"][0];
        let served: Vec<(String, u64)> = container["ports"]
            .as_array()
            .context("containerPorts")?
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["containerPort"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let mut opened = Vec::new();
        for rule in np["spec"]["ingress"].as_array().context("ingress")? {
            for port in rule["ports"].as_array().context("ports")? {
                let n = port["port"].as_u64().context("numeric port")?;
                assert!(
                    served.iter().any(|(_, p)| *p == n),
                    "{name}: NetworkPolicy opens {n}, not served"
                );
                opened.push(n);
                if n == 8443 {
                    let from = rule["from"].as_array().context("from")?;
                    assert!(!from.is_empty(), "{name}: an empty `from` admits everyone");
                    for peer in from {
                        assert!(
                            peer.get("ipBlock").is_some(),
                            "{name}: the admission port admits a pod peer: {peer}"
                        );
                    }
                }
            }
        }
        let probe_port = &container["readinessProbe"]["httpGet"]["port"];
        let probe = served
            .iter()
            .find(|(pname, p)| probe_port == pname.as_str() || probe_port.as_u64() == Some(*p))
            .with_context(|| format!("{name}: probe port {probe_port} not served"))?;
        assert!(
            opened.contains(&probe.1),
            "{name}: probes on {} blocked",
            probe.1
        );
        assert!(
            container["readinessProbe"]["httpGet"]["scheme"].is_null(),
            "{name}: probes are plain HTTP on the metrics port"
        );
    }
    Ok(())
}

fn count_kinds(yaml: &str) -> usize {
    yaml.lines().filter(|l| l.starts_with("kind: ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_chart_pass_server_side_dry_run() -> Result<()> {
    let bed = Bed::start(BedOptions {
        nodes: 0,
        ..Default::default()
    })
    .await?;
    // The namespace and CRDs must exist for namespaced objects and pools to dry-run.
    pinip::install(&bed)?;

    least_privilege(&bed)?;

    let kustomized = kubectl(&bed, &["kustomize", MANIFESTS])?;
    let out = dry_run(&bed, &kustomized)?;
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("(server dry run)"))
            .count(),
        count_kinds(&kustomized),
        "{out}"
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "DaemonSet",
        "PodDisruptionBudget",
    ] {
        assert!(
            kustomized.contains(&format!("kind: {kind}")),
            "kustomization lacks {kind}"
        );
    }

    network_policies_fit(&kustomized)?;

    let pools = std::fs::read_to_string(format!("{MANIFESTS}/examples/ippools.yaml"))?;
    dry_run(&bed, &pools)?;

    // The chart refuses to render until the operator chooses how admission clients are
    // authenticated, and refuses an empty peer list for the admission port.
    let refused = helm_template(&[]).expect_err("rendered without a client-auth choice");
    assert!(
        refused.to_string().contains("webhook.clientAuth"),
        "{refused}"
    );
    let refused = helm_template(&[
        "--set",
        "webhook.clientAuth.allowUnauthenticated=true",
        "--set",
        "networkPolicy.apiServerCIDRs=null",
    ])
    .expect_err("rendered with an empty peer list");
    assert!(refused.to_string().contains("apiServerCIDRs"), "{refused}");
    let chart = helm_template(&["--set", "webhook.clientAuth.allowUnauthenticated=true"])?;
    let out = dry_run(&bed, &chart)?;
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("(server dry run)"))
            .count(),
        count_kinds(&chart),
        "{out}"
    );

    network_policies_fit(&chart)?;

    // Admission clients authenticated, pod networks excluded from the admission port.
    let fenced = helm_template(&[
        "--set",
        "webhook.clientAuth.caConfigMap=apiserver-admission-ca",
        "--set",
        "webhook.clientAuth.names={kube-apiserver-webhook-client}",
        "--set",
        "networkPolicy.podCIDRs={10.0.0.0/8,fd00::/8}",
    ])?;
    // A narrowed control-plane block gets no except (it would have to lie inside it).
    let narrowed = helm_template(&[
        "--set",
        "webhook.clientAuth.allowUnauthenticated=true",
        "--set",
        "networkPolicy.apiServerCIDRs={192.168.0.0/24}",
        "--set",
        "networkPolicy.podCIDRs={10.244.0.0/16}",
    ])?;
    assert!(!narrowed.contains("10.244.0.0/16"));
    network_policies_fit(&narrowed)?;
    dry_run(&bed, &narrowed)?;
    assert!(fenced.contains("- --client-ca=/etc/pinip/client-ca/ca.crt"));
    assert!(fenced.contains("- \"--client-name=kube-apiserver-webhook-client\""));
    assert!(fenced.contains("name: apiserver-admission-ca"));
    assert!(fenced.contains("- 10.0.0.0/8") && fenced.contains("- fd00::/8"));
    network_policies_fit(&fenced)?;
    dry_run(&bed, &fenced)?;

    // cert-manager mode: no pinip-certs containers, injection annotations, a Certificate. The
    // cert-manager kinds are not installed on the bed, so only the rest is dry-run.
    let cm = helm_template(&[
        "--set",
        "certs.mode=cert-manager",
        "--set",
        "webhook.clientAuth.allowUnauthenticated=true",
    ])?;
    assert!(cm.contains("cert-manager.io/inject-ca-from: pinip-system/pinip-webhook"));
    assert!(cm.contains("kind: Certificate") && !cm.contains("pinip-certs:"));
    let without_cm: Vec<&str> = cm
        .split("\n---")
        .filter(|d| !d.contains("apiVersion: cert-manager.io/"))
        .collect();
    dry_run(&bed, &without_cm.join("\n---"))?;
    Ok(())
}

/// The chart's RBAC is the same as the Kustomize base's (the chart only templates names and
/// namespaces), so the two install paths grant exactly the same rights.
#[test]
fn chart_rbac_matches_base() -> Result<()> {
    use serde_json::Value;
    fn rbac(yaml: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for v in docs(yaml)? {
            let kind = v["kind"].as_str().unwrap_or_default();
            if kind.starts_with("Cluster")
                || kind == "Role"
                || kind == "RoleBinding"
                || kind == "ServiceAccount"
            {
                out.push(
                    serde_json::json!({"kind": kind, "name": v["metadata"]["name"],
                    "rules": v["rules"], "roleRef": v["roleRef"], "subjects": v["subjects"]}),
                );
            }
        }
        out.sort_by_key(|v| v.to_string());
        Ok(out)
    }
    let base = std::fs::read_to_string(format!("{MANIFESTS}/base/rbac.yaml"))?;
    let chart = helm_template(&[
        "--show-only",
        "templates/rbac.yaml",
        "--set",
        "webhook.clientAuth.allowUnauthenticated=true",
    ])?;
    assert_eq!(rbac(&chart)?, rbac(&base)?);
    Ok(())
}
