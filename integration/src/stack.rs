//! pinip installed on a bed as the manifests configure it: CRDs and RBAC, webhook replicas
//! registered by URL with the manifests' webhook configurations, and binder replicas. Shared
//! by the end-to-end tests, the torture run and `testbed up --with-pinip`.

use std::time::Duration;

use anyhow::Result;
use kube::Client;

use crate::bed::{Bed, BedOptions, Ipam};
use crate::binders::{Binders, start_binders};
use crate::pinip::{self, Webhooks};
use crate::wait::wait_for;

pub struct StackOptions {
    pub bed: BedOptions,
    pub webhooks: usize,
    pub webhook_args: Vec<String>,
    pub binders: usize,
    pub binder_args: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            bed: BedOptions::default(),
            webhooks: 2,
            webhook_args: Vec::new(),
            binders: 2,
            binder_args: Vec::new(),
        }
    }
}

/// Fields drop in order: pinip's processes stop before the bed under them.
pub struct Stack {
    pub hooks: Webhooks,
    pub binders: Binders,
    pub client: Client,
    pub bed: Bed,
}

impl Stack {
    /// Starts a bed whose nodes delegate IPAM to the pinip plugin, installs pinip, and
    /// starts its replicas.
    pub async fn start(mut opts: StackOptions) -> Result<Stack> {
        opts.bed.ipam = Ipam::Pinip {
            bin_dir: pinip::bin_dir()?,
        };
        let bed = Bed::start(opts.bed).await?;
        pinip::install(&bed)?;
        let client = bed.client();
        let args: Vec<&str> = opts.webhook_args.iter().map(String::as_str).collect();
        let hooks = pinip::start_webhooks(&bed, opts.webhooks, &args).await?;
        pinip::register(&client, &hooks, "pinip").await?;
        let args: Vec<&str> = opts.binder_args.iter().map(String::as_str).collect();
        let binders = start_binders(&bed, opts.binders, &args).await?;
        Ok(Stack {
            bed,
            hooks,
            binders,
            client,
        })
    }

    /// Applies IPPool `name` and waits until every webhook replica knows it.
    pub async fn pool(&self, name: &str, spec: serde_json::Value) -> Result<()> {
        pinip::apply_pool(&self.client, name, spec).await?;
        let needle = format!("pool=\"{name}\"");
        wait_for(
            &format!("pool {name} in every webhook's metrics"),
            Duration::from_secs(20),
            || async {
                for port in &self.hooks.metrics_ports {
                    if !pinip::webhook_get(*port, "/metrics")
                        .await?
                        .contains(&needle)
                    {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
        .await
    }
}

impl Stack {
    /// A client for a tenant who may edit everything in namespace `ns` (ClusterRole `edit`),
    /// and nothing else: how an attacker with ordinary rights reaches the API server.
    pub async fn tenant(&self, ns: &str) -> Result<Client> {
        use k8s_openapi::api::rbac::v1::RoleBinding;
        use kube::api::{Api, PostParams};
        let user = format!("tenant-{ns}");
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), ns);
        bindings
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "tenant"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
                }))?,
            )
            .await?;
        let path = self.bed.identity_kubeconfig(
            &self.bed.dir.join(format!("{user}.kubeconfig")),
            &user,
            None,
        )?;
        let kc = kube::config::Kubeconfig::read_from(&path)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(Client::try_from(config)?)
    }
}
