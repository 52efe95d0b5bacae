//! The committed CRDs load into the real kube-apiserver as they are, their CEL rules reject
//! bad pools with the documented messages, and their printer columns are what the design
//! names.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pinip_api::{IPClaim, IPPool};
use pinip_integration::{Bed, BedOptions};
use serde_json::{Value, json};

const CRD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds");

async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for f in ["ippools.pinip.io.yaml", "ipclaims.pinip.io.yaml"] {
        let text = std::fs::read_to_string(format!("{CRD_DIR}/{f}"))?;
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("pinip-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    let start = Instant::now();
    for name in ["ippools.pinip.io", "ipclaims.pinip.io"] {
        loop {
            let crd = crds.get(name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("{name} not Established after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn pool(name: &str, spec: Value) -> IPPool {
    serde_json::from_value(json!({
        "apiVersion": "pinip.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("pool")
}

async fn rejected(api: &Api<IPPool>, name: &str, spec: Value) -> String {
    match api
        .create(&PostParams::default(), &pool(name, spec.clone()))
        .await
    {
        Ok(_) => panic!("pool {spec} was accepted"),
        Err(kube::Error::Api(s)) => s.message,
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn columns(client: &Client, path: &str) -> Result<Vec<String>> {
    let req = http::Request::get(path)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())?;
    let table: Value = serde_json::from_str(&client.request_text(req).await?)?;
    Ok(table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_uppercase())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_load_validate_and_print() -> Result<()> {
    let bed = Bed::start_or_attach(BedOptions {
        nodes: 0,
        ..Default::default()
    })
    .await?;
    let client = bed.client();
    install_crds(&client).await?;
    let pools: Api<IPPool> = Api::all(client.clone());

    let good = json!({
        "cidr": "10.20.0.0/24", "ranges": ["10.20.0.10-10.20.0.200"],
        "exclude": ["10.20.0.100/30"], "gateway": "10.20.0.1",
        "routes": [{"dst": "0.0.0.0/0"}], "default": true,
        "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "a"}},
    });
    // Unique names, so the test also runs against a long-lived bed (PINIP_BED_DIR).
    let id = std::process::id();
    let created = pools
        .create(&PostParams::default(), &pool(&format!("blue-{id}"), good))
        .await?;
    assert_eq!(created.spec.usable()?.size(), 187);
    pools
        .create(
            &PostParams::default(),
            &pool(&format!("v6-{id}"), json!({"cidr": "fd00:20::/64"})),
        )
        .await?;

    let cases = [
        (json!({"cidr": "10.20.0.300/24"}), "must be a CIDR"),
        (
            json!({"cidr": "10.20.0.5/24"}),
            "must have no host bits set",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "gateway": "10.9.0.1"}),
            "gateway must lie inside cidr",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "gateway": "nope"}),
            "must be an IP address",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "ranges": ["10.20.0.10-10.20.0.x"]}),
            "must be an address or a first-last range",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "ranges": ["10.30.0.1-10.30.0.9"]}),
            "every range must lie inside cidr",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "exclude": ["bad"]}),
            "must be a CIDR, an address or a first-last range",
        ),
        (
            json!({"cidr": "10.20.0.0/24", "network": "Net_1"}),
            "should match",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let msg = rejected(&pools, &format!("bad-{i}"), spec.clone()).await;
        assert!(msg.contains(want), "{spec}: got {msg:?}, want {want:?}");
    }

    assert_eq!(
        columns(&client, "/apis/pinip.io/v1alpha1/ippools").await?,
        ["NAME", "CIDR", "ALLOCATED", "TOTAL", "DEFAULT", "AGE"]
    );
    assert_eq!(
        columns(&client, "/apis/pinip.io/v1alpha1/ipclaims").await?,
        [
            "NAME", "ADDRESS", "POOL", "OWNER", "POD", "NODE", "PHASE", "AGE"
        ]
    );

    // A claim's pool and address never change: the claim's name is its address.
    let claims: Api<IPClaim> = Api::all(client.clone());
    let claim_name = format!("n{id}.10-20-0-5");
    let claim: IPClaim = serde_json::from_value(json!({
        "apiVersion": "pinip.io/v1alpha1", "kind": "IPClaim",
        "metadata": {"name": claim_name},
        "spec": {"pool": "blue", "address": "10.20.0.5/24",
                 "owner": {"kind": "Pod", "namespace": "demo", "name": "web"}},
    }))?;
    claims.create(&PostParams::default(), &claim).await?;
    let mut moved = claims.get(&claim_name).await?;
    moved.spec.address = "10.20.0.6/24".into();
    let err = claims
        .replace(&claim_name, &PostParams::default(), &moved)
        .await
        .expect_err("address change accepted");
    assert!(err.to_string().contains("immutable"), "{err}");

    // Nor a pool's network: claim names carry it, so a pool that moved to another network
    // would see its claimed addresses as free.
    for (from, to) in [
        (None, Some("net1")),
        (Some("net1"), Some("net2")),
        (Some("net1"), None),
    ] {
        let name = format!("net-{id}-{}", from.unwrap_or("primary"));
        let mut spec = json!({"cidr": "10.21.0.0/24"});
        if let Some(n) = from {
            spec["network"] = json!(n);
        }
        if pools.get_opt(&name).await?.is_none() {
            pools
                .create(&PostParams::default(), &pool(&name, spec))
                .await?;
        }
        let err = pools
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"network": to}})),
            )
            .await
            .expect_err("network change accepted");
        assert!(
            err.to_string().contains("network is immutable"),
            "{from:?} -> {to:?}: {err}"
        );
    }
    Ok(())
}
