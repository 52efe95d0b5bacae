//! The one Secret all webhook replicas share, and the caBundle of the webhook configurations.
//! Writes are guarded: the Secret by create-or-409 and resourceVersion, the caBundle by
//! server-side apply under our own field manager, so concurrent runs converge and a run that
//! changes nothing writes nothing.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::issue::Pem;
use crate::plan::Material;

pub const FIELD_MANAGER: &str = "pinip-certs";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("Secret {0}: key {1} is missing or not UTF-8")]
    Field(String, &'static str),
    #[error("Secret {0} was changed by someone else meanwhile; run again")]
    Conflict(String),
}

/// The Secret as stored, with its resourceVersion for a guarded replace.
pub struct Stored {
    pub material: Option<Material>,
    pub resource_version: Option<String>,
}

fn field(s: &Secret, key: &'static str) -> Result<String, StoreError> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| StoreError::Field(s.name_any(), key))
}

pub async fn read(api: &Api<Secret>, name: &str) -> Result<Stored, StoreError> {
    let Some(s) = api.get_opt(name).await? else {
        return Ok(Stored {
            material: None,
            resource_version: None,
        });
    };
    let material = (|| {
        Ok::<_, StoreError>(Material {
            ca: Pem {
                cert: field(&s, "ca.crt")?,
                key: field(&s, "ca.key")?,
            },
            serving: Pem {
                cert: field(&s, "tls.crt")?,
                key: field(&s, "tls.key")?,
            },
            bundle: field(&s, "ca-bundle.crt")?,
        })
    })();
    Ok(Stored {
        // A Secret missing keys is treated as absent material and rewritten in place.
        material: material.ok(),
        resource_version: s.resource_version(),
    })
}

fn secret(name: &str, m: &Material, rv: Option<String>) -> Secret {
    let b = |s: &str| ByteString(s.as_bytes().to_vec());
    let data: BTreeMap<String, ByteString> = [
        ("tls.crt", b(&m.serving.cert)),
        ("tls.key", b(&m.serving.key)),
        ("ca.crt", b(&m.ca.cert)),
        ("ca.key", b(&m.ca.key)),
        ("ca-bundle.crt", b(&m.bundle)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "pinip",
            "app.kubernetes.io/managed-by": FIELD_MANAGER}},
        "type": "kubernetes.io/tls",
    }))
    .expect("secret");
    s.metadata.resource_version = rv;
    s.data = Some(data);
    s
}

/// Writes the material: create when there was no Secret, else replace guarded by the
/// resourceVersion read. A lost race is a `Conflict`; the caller re-reads and re-plans.
pub async fn write(
    api: &Api<Secret>,
    name: &str,
    m: &Material,
    rv: Option<String>,
) -> Result<(), StoreError> {
    let res = match rv {
        None => api
            .create(&PostParams::default(), &secret(name, m, None))
            .await
            .map(|_| ()),
        Some(rv) => api
            .replace(name, &PostParams::default(), &secret(name, m, Some(rv)))
            .await
            .map(|_| ()),
    };
    match res {
        Err(kube::Error::Api(s)) if s.code == 409 => Err(StoreError::Conflict(name.into())),
        other => Ok(other?),
    }
}

/// Sets `caBundle` on every webhook of the named configurations (those that exist).
pub async fn inject(
    client: &Client,
    mutating: &[String],
    validating: &[String],
    bundle: &str,
) -> Result<Vec<String>, StoreError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(bundle);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut done = Vec::new();
    for (kind, names) in [
        ("MutatingWebhookConfiguration", mutating),
        ("ValidatingWebhookConfiguration", validating),
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let plural = format!("{}s", kind.to_lowercase());
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, &plural),
        );
        for name in names {
            let Some(cfg) = api.get_opt(name).await? else {
                continue;
            };
            // Only our field: each webhook (a map keyed by name) gets the caBundle.
            let hooks: Vec<_> = cfg.data["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["name"].as_str())
                .map(|n| json!({"name": n, "clientConfig": {"caBundle": ca}}))
                .collect();
            let patch = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                "metadata": {"name": name}, "webhooks": hooks});
            api.patch(name, &pp, &Patch::Apply(&patch)).await?;
            done.push(format!("{kind}/{name}"));
        }
    }
    Ok(done)
}
