//! Certificates end to end: pinip-certs bootstraps one CA and serving certificate into the
//! shared Secret and injects the caBundle; the webhook serves it from a kubelet-style Secret
//! volume; a CA rotation is picked up by the running webhook without restart while
//! kube-apiserver keeps admitting pods; a run with nothing due changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use pinip_integration::pinip::{self, CERTS_USER};
use pinip_integration::wait::wait_for;
use pinip_integration::{Bed, BedOptions, secret_volume};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

const SECRET: &str = "pinip-webhook-tls";

/// The certificate a TLS server at 127.0.0.1:`port` presents, checked against `bundle`;
/// the client presents kube-apiserver's admission certificate, as the webhook requires.
fn served_cert(bed: &Bed, port: u16, bundle: &str) -> Result<Vec<u8>> {
    let id = &bed
        .cp
        .as_ref()
        .context("a bed this test started")?
        .admission_client;
    let cfg = pinip::tls_client_config(bundle, Some(id))?;
    Ok(pinip::tls_request(port, cfg, "GET", "/healthz", b"")?.peer_cert)
}

fn der_of(pem: &str) -> Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
}

async fn secret_field(client: &Client, key: &str) -> Result<String> {
    let s = Api::<Secret>::namespaced(client.clone(), "pinip-system")
        .get(SECRET)
        .await?;
    let data = s.data.unwrap_or_default();
    Ok(String::from_utf8(
        data.get(key).context("missing key")?.0.clone(),
    )?)
}

fn certs_cmd(bed: &Bed, kubeconfig: &std::path::Path, extra: &[&str]) -> Result<String> {
    let bin = pinip::bin_dir()?.join("pinip-certs");
    let out = std::process::Command::new(bin)
        .arg("ensure")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--dns-name=localhost"])
        .args(extra)
        .env("PINIP_LOG", "info")
        .output()?;
    if !out.status.success() {
        bail!(
            "pinip-certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = bed;
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_inject_rotate_while_admitting() -> Result<()> {
    let bed = Bed::start(BedOptions {
        nodes: 0,
        ..Default::default()
    })
    .await?;
    let client = bed.client();
    pinip::install(&bed)?;
    pinip::apply_pool(
        &client,
        "p",
        json!({"cidr": "10.85.0.0/20", "default": true}),
    )
    .await?;

    // pinip-certs runs with its own identity, as its Deployment does.
    let kubeconfig =
        bed.identity_kubeconfig(&bed.dir.join("certs.kubeconfig"), CERTS_USER, None)?;
    certs_cmd(&bed, &kubeconfig, &[])?;
    let tls_dir = bed.dir.join("webhook-tls-volume");
    let _projector = secret_volume::project(
        client.clone(),
        "pinip-system",
        SECRET,
        &["tls.crt", "tls.key"],
        tls_dir.clone(),
        Duration::from_millis(500),
    );
    wait_for("the Secret volume", Duration::from_secs(10), || async {
        Ok(tls_dir.join("tls.key").exists().then_some(()))
    })
    .await?;
    let hooks = pinip::start_webhooks_with_tls(&bed, 2, &[], &tls_dir).await?;
    pinip::register(&client, &hooks, "pinip").await?;
    // The configurations were applied without a caBundle; pinip-certs injects it.
    certs_cmd(&bed, &kubeconfig, &[])?;
    let bundle = secret_field(&client, "ca-bundle.crt").await?;
    assert_eq!(
        served_cert(&bed, hooks.ports[0], &bundle)?,
        der_of(&secret_field(&client, "tls.crt").await?)?
    );

    // Pods keep being admitted, through both replicas, while the CA rotates.
    let ns = bed
        .temp_namespace("rot", json!({"pinip.io/enabled": "true"}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for("first admission", Duration::from_secs(20), || async {
        let p: Pod = serde_json::from_value(json!({"metadata": {"generateName": "warm-"},
            "spec": {"containers": [{"name": "a", "image": "none"}]}}))?;
        match pods.create(&PostParams::default(), &p).await {
            Ok(_) => Ok(Some(())),
            Err(e) => {
                eprintln!("not admitted yet: {e}");
                Ok(None)
            }
        }
    })
    .await?;
    let admitted = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (pods, admitted, failures, stop) = (
            pods.clone(),
            admitted.clone(),
            failures.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let p: Pod = serde_json::from_value(json!({"metadata": {"generateName": "rot-"},
                    "spec": {"containers": [{"name": "a", "image": "none"}]}}))
                .unwrap();
                match pods.create(&PostParams::default(), &p).await {
                    Ok(p) if p.annotations().contains_key("pinip.io/allocation") => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(p) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} without allocation", p.name_any())),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_cert = secret_field(&client, "tls.crt").await?;
    let old_ca = secret_field(&client, "ca.crt").await?;
    // Renewing at 0 % of the lifetime makes everything due: the CA rotates.
    let log = certs_cmd(&bed, &kubeconfig, &["--renew-at=0"])?;
    assert!(log.contains("RotateCa"), "{log}");
    let new_cert = secret_field(&client, "tls.crt").await?;
    let new_ca = secret_field(&client, "ca.crt").await?;
    let bundle = secret_field(&client, "ca-bundle.crt").await?;
    assert_ne!(new_cert, old_cert);
    assert_ne!(new_ca, old_ca);
    assert!(
        bundle.contains(new_ca.trim()) && bundle.contains(old_ca.trim()),
        "bundle holds both CAs"
    );
    for port in &hooks.ports {
        wait_for(
            "the webhook to serve the new certificate",
            Duration::from_secs(15),
            || async {
                Ok((served_cert(&bed, *port, &bundle)? == der_of(&new_cert)?).then_some(()))
            },
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    churn.await?;
    let failures = failures.lock().unwrap().clone();
    let n = admitted.load(Ordering::Relaxed);
    eprintln!("admitted {n} pods during rotation; failures: {failures:?}");
    assert!(
        failures.is_empty(),
        "admissions failed during rotation: {failures:?}"
    );
    assert!(n >= 20, "only {n} pods admitted during rotation");
    assert!(hooks.procs.len() == 2);

    // Nothing due: a second run changes nothing.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "pinip-system");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let rv = (
        secrets.get(SECRET).await?.resource_version(),
        configs.get("pinip").await?.resource_version(),
    );
    let log = certs_cmd(&bed, &kubeconfig, &[])?;
    assert!(log.contains("Keep"), "{log}");
    let rv2 = (
        secrets.get(SECRET).await?.resource_version(),
        configs.get("pinip").await?.resource_version(),
    );
    assert_eq!(rv, rv2, "an idempotent run wrote something");
    Ok(())
}
