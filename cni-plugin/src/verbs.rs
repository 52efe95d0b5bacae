//! The CNI verbs: ADD, DEL, CHECK, GC, STATUS and VERSION.

use serde::Serialize;
use tracing::{error, info, warn};

use crate::annotations_source::{allocation_annotation, interface_entry};
use crate::args::{Attachment, CniArgs, Command, Env};
use crate::config::{self, IpamConfig, NetConf};
use crate::error::CniError;
use crate::log::{DefaultSink, dispatch};
use crate::pod::{KubeTarget, PodApi};
use crate::result::{IpamResult, describe, prev_result_ips};
use crate::version::CniVersion;

/// What a successful invocation prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A JSON document for stdout (ADD, VERSION).
    Stdout(String),
    /// Nothing (DEL, CHECK, GC, STATUS).
    Nothing,
}

/// A failed invocation: the error and the protocol version to report it in.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub cni_version: String,
    pub error: Box<CniError>,
}

impl Failure {
    pub fn new(cni_version: impl Into<String>, error: CniError) -> Failure {
        Failure {
            cni_version: cni_version.into(),
            error: Box::new(error),
        }
    }

    /// The spec's error JSON.
    pub fn to_json(&self) -> String {
        self.error.to_json(&self.cni_version)
    }
}

/// The plugin, with its access to the API server and where logs go by default.
pub struct Plugin<'a> {
    pub api: &'a dyn PodApi,
    pub log_sink: DefaultSink,
}

impl Plugin<'_> {
    /// Run one invocation: `env` is the protocol environment, `stdin` the request config.
    pub fn run(&self, env: &Env, stdin: &[u8]) -> Result<Output, Failure> {
        let early = |error| Failure::new(config::echo_version(stdin), error);
        let cmd = env.command().map_err(early)?;
        if cmd == Command::Version {
            return Ok(Output::Stdout(version_result(stdin)));
        }
        let conf = NetConf::parse(stdin).map_err(early)?;
        let fail = |error| Failure::new(conf.cni_version.as_str(), error);
        if conf.cni_version < CniVersion::minimum_for(cmd.as_str()) {
            return Err(fail(CniError::VerbNotAllowed {
                verb: cmd.as_str(),
                version: conf.cni_version,
            }));
        }
        match cmd {
            Command::Add => self.add(env, &conf),
            Command::Check => self.check(env, &conf),
            Command::Del => self.del(env, &conf),
            Command::Gc => self.gc(&conf),
            Command::Status => self.status(&conf),
            Command::Version => Ok(Output::Stdout(version_result(stdin))),
        }
        .map_err(fail)
    }

    /// Run `f` with logging set up from `ipam`; log its error, if any.
    fn logged(
        &self,
        ipam: &IpamConfig,
        verb: Command,
        f: impl FnOnce() -> Result<Output, CniError>,
    ) -> Result<Output, CniError> {
        let d = dispatch(ipam, self.log_sink);
        tracing::dispatcher::with_default(&d, || {
            let r = f();
            if let Err(e) = &r {
                error!(
                    code = e.code(),
                    "{} failed: {}; {}",
                    verb.as_str(),
                    e.msg(),
                    e.details()
                );
            }
            r
        })
    }

    fn add(&self, env: &Env, conf: &NetConf) -> Result<Output, CniError> {
        let att = env.attachment(Command::Add)?;
        let args = env.cni_args()?;
        let ipam = IpamConfig::parse(conf.ipam.as_ref())?;
        self.logged(&ipam, Command::Add, || {
            let result = self.lookup(conf, &att, &args, &ipam)?;
            Ok(Output::Stdout(result.render(conf.cni_version)))
        })
    }

    fn check(&self, env: &Env, conf: &NetConf) -> Result<Output, CniError> {
        let att = env.attachment(Command::Check)?;
        let args = env.cni_args()?;
        let ipam = IpamConfig::parse(conf.ipam.as_ref())?;
        self.logged(&ipam, Command::Check, || {
            let prev = conf
                .prev_result
                .as_ref()
                .ok_or_else(|| CniError::InvalidConfig {
                    field: "prevResult".into(),
                    reason: "missing".into(),
                    hint: "the runtime must pass the result of ADD as prevResult on CHECK".into(),
                })?;
            let mut have = prev_result_ips(prev, &att.ifname)?;
            let mut want = self.lookup(conf, &att, &args, &ipam)?.ips;
            have.sort();
            want.sort();
            if have != want {
                return Err(CniError::CheckMismatch {
                    subject: subject(&args, &att),
                    ifname: att.ifname.clone(),
                    prev: describe(&have),
                    allocated: describe(&want),
                });
            }
            info!(container = %att.container_id, ifname = %att.ifname, "CHECK ok: {}", describe(&have));
            Ok(Output::Nothing)
        })
    }

    /// The IPAM result for this attachment, from the pod's allocation.
    fn lookup(
        &self,
        conf: &NetConf,
        att: &Attachment,
        args: &CniArgs,
        ipam: &IpamConfig,
    ) -> Result<IpamResult, CniError> {
        let subject = subject(args, att);
        let target = KubeTarget::from_ipam(ipam);
        let (raw, origin) = allocation_annotation(conf, args, &target, self.api, &subject)?;
        let entry = interface_entry(raw.as_deref(), &subject, &att.ifname, conf.name.as_deref())?;
        let result = IpamResult::from_allocation(&entry);
        info!(
            container = %att.container_id,
            ifname = %att.ifname,
            "{subject}: {} (entry {:?}, from {})",
            describe(&result.ips),
            entry.name,
            origin.describe()
        );
        Ok(result)
    }

    /// DEL releases nothing (the binder releases addresses) and never calls the API, so it
    /// succeeds for a missing pod, a missing or empty netns, no prevResult, and repeats. It is
    /// lenient about the ipam config too, so that a broken config never blocks a pod's removal.
    fn del(&self, env: &Env, conf: &NetConf) -> Result<Output, CniError> {
        let att = env.attachment(Command::Del)?;
        let (ipam, ipam_error) = lenient_ipam(conf);
        self.logged(&ipam, Command::Del, || {
            if let Some(e) = ipam_error {
                warn!("ignoring an invalid ipam config on DEL: {}", e.msg());
            }
            info!(
                container = %att.container_id,
                ifname = %att.ifname,
                netns = %att.netns,
                "DEL: nothing to release here (the binder releases addresses)"
            );
            Ok(Output::Nothing)
        })
    }

    /// GC: nothing is held on the node, so there is nothing to collect.
    fn gc(&self, conf: &NetConf) -> Result<Output, CniError> {
        let (ipam, _) = lenient_ipam(conf);
        self.logged(&ipam, Command::Gc, || {
            let n = conf.gc_attachments.as_ref().map_or(0, Vec::len);
            info!("GC: {n} valid attachments; nothing is held on the node");
            Ok(Output::Nothing)
        })
    }

    /// STATUS: with a kubeconfig, whether the API server answers (code 50 if not).
    fn status(&self, conf: &NetConf) -> Result<Output, CniError> {
        let ipam = IpamConfig::parse(conf.ipam.as_ref())?;
        self.logged(&ipam, Command::Status, || {
            if ipam.kubeconfig.is_some() {
                self.api.probe(&KubeTarget::from_ipam(&ipam))?;
                info!("STATUS: the API server answers");
            }
            Ok(Output::Nothing)
        })
    }
}

fn lenient_ipam(conf: &NetConf) -> (IpamConfig, Option<CniError>) {
    match IpamConfig::parse(conf.ipam.as_ref()) {
        Ok(i) => (i, None),
        Err(e) => (IpamConfig::default(), Some(e)),
    }
}

/// `pod NS/NAME` when CNI_ARGS names it, else the container.
fn subject(args: &CniArgs, att: &Attachment) -> String {
    args.pod_label()
        .unwrap_or_else(|| format!("the pod of container {}", att.container_id))
}

/// VERSION's result: the requested `cniVersion` and every supported version.
pub fn version_result(stdin: &[u8]) -> String {
    #[derive(Serialize)]
    struct VersionResult {
        #[serde(rename = "cniVersion")]
        cni_version: String,
        #[serde(rename = "supportedVersions")]
        supported_versions: Vec<&'static str>,
    }
    let r = VersionResult {
        cni_version: config::echo_version(stdin),
        supported_versions: CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect(),
    };
    serde_json::to_string(&r).unwrap_or_default()
}
