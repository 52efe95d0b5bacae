//! The protocol's environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`, …) and the
//! `CNI_ARGS` key/value list.

use std::ffi::OsString;

use crate::error::CniError;

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_IFNAME: &str = "CNI_IFNAME";
pub const CNI_ARGS: &str = "CNI_ARGS";
pub const CNI_PATH: &str = "CNI_PATH";

pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
pub const K8S_POD_UID: &str = "K8S_POD_UID";

/// Linux `IFNAMSIZ - 1`.
const MAX_IFNAME_LEN: usize = 15;

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    pub fn parse(s: &str) -> Option<Command> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The raw protocol environment, as the runtime set it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
    /// Variables that were set but are not valid UTF-8.
    pub not_utf8: Vec<&'static str>,
}

impl Env {
    /// Read the variables through `lookup` (the process environment in `main`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Env {
        let mut env = Env::default();
        let mut read = |var: &'static str| match lookup(var) {
            None => None,
            Some(v) => match v.into_string() {
                Ok(s) => Some(s),
                Err(_) => {
                    env.not_utf8.push(var);
                    None
                }
            },
        };
        let command = read(CNI_COMMAND);
        let container_id = read(CNI_CONTAINERID);
        let netns = read(CNI_NETNS);
        let ifname = read(CNI_IFNAME);
        let args = read(CNI_ARGS);
        let path = read(CNI_PATH);
        Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
            ..env
        }
    }

    /// The process environment.
    pub fn from_process() -> Env {
        Env::from_lookup(|k| std::env::var_os(k))
    }

    fn check_utf8(&self, var: &'static str) -> Result<(), CniError> {
        if self.not_utf8.contains(&var) {
            return Err(CniError::EnvInvalid {
                var,
                reason: format!("{var} is not valid UTF-8"),
            });
        }
        Ok(())
    }

    /// `CNI_COMMAND`, parsed.
    pub fn command(&self) -> Result<Command, CniError> {
        self.check_utf8(CNI_COMMAND)?;
        let raw = match self.command.as_deref() {
            None | Some("") => {
                return Err(CniError::EnvInvalid {
                    var: CNI_COMMAND,
                    reason: "CNI_COMMAND is not set; it must be one of ADD, DEL, CHECK, GC, STATUS, VERSION".into(),
                });
            }
            Some(raw) => raw,
        };
        Command::parse(raw).ok_or_else(|| CniError::EnvInvalid {
            var: CNI_COMMAND,
            reason: format!(
                "CNI_COMMAND={raw:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
            ),
        })
    }

    fn required(&self, var: &'static str, verb: Command) -> Result<String, CniError> {
        self.check_utf8(var)?;
        let value = match var {
            CNI_CONTAINERID => &self.container_id,
            CNI_NETNS => &self.netns,
            CNI_IFNAME => &self.ifname,
            _ => &None,
        };
        match value.as_deref() {
            None | Some("") => Err(CniError::EnvMissing {
                var,
                verb: verb.as_str(),
            }),
            Some(v) => Ok(v.to_string()),
        }
    }

    /// The attachment parameters that `verb` needs (ADD, DEL, CHECK), validated as the spec
    /// says. DEL does not need `CNI_NETNS` (it is empty on containerd's second DEL).
    pub fn attachment(&self, verb: Command) -> Result<Attachment, CniError> {
        let container_id = self.required(CNI_CONTAINERID, verb)?;
        validate_container_id(&container_id)?;
        let netns = if verb == Command::Del {
            self.check_utf8(CNI_NETNS)?;
            self.netns.clone().unwrap_or_default()
        } else {
            self.required(CNI_NETNS, verb)?
        };
        let ifname = self.required(CNI_IFNAME, verb)?;
        validate_ifname(&ifname)?;
        Ok(Attachment {
            container_id,
            netns,
            ifname,
        })
    }

    /// `CNI_ARGS`, parsed (empty when unset).
    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        self.check_utf8(CNI_ARGS)?;
        CniArgs::parse(self.args.as_deref().unwrap_or(""))
    }
}

/// What identifies one attachment: `(CNI_CONTAINERID, CNI_IFNAME)` and the netns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

/// The spec: "Must start with an alphanumeric character, optionally followed by any
/// combination of one or more alphanumeric characters, underscore, dot or hyphen".
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::EnvInvalid {
            var: CNI_CONTAINERID,
            reason: format!(
                "CNI_CONTAINERID={id:?} has invalid characters: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            ),
        })
    }
}

/// A Linux interface name: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.len() > MAX_IFNAME_LEN {
        Some(format!("is longer than {MAX_IFNAME_LEN} bytes"))
    } else if name == "." || name == ".." {
        Some("is not a valid interface name".to_string())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::EnvInvalid {
            var: CNI_IFNAME,
            reason: format!("CNI_IFNAME={name:?} {p}"),
        }),
    }
}

/// `CNI_ARGS`: `;`-separated `KEY=VALUE` pairs, in any order. Unknown keys are kept but
/// ignored; empty items (a trailing `;`) are skipped; the value is everything after the first
/// `=`. When a key repeats, the last value wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in raw.split(';') {
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    pairs.push((key.to_string(), value.to_string()));
                }
                _ => {
                    return Err(CniError::EnvInvalid {
                        var: CNI_ARGS,
                        reason: format!(
                            "CNI_ARGS item {item:?} is not a KEY=VALUE pair (CNI_ARGS is KEY=VALUE pairs separated by ';')"
                        ),
                    });
                }
            }
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key`; an empty value counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get(K8S_POD_NAMESPACE)
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get(K8S_POD_NAME)
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.get(K8S_POD_UID)
    }

    /// `pod NS/NAME` when the runtime named the pod, for messages.
    pub fn pod_label(&self) -> Option<String> {
        match (self.pod_namespace(), self.pod_name()) {
            (Some(ns), Some(name)) => Some(format!("pod {ns}/{name}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    fn err_json(e: CniError) -> String {
        e.to_json("1.0.0")
    }

    #[test]
    fn cni_args_by_key_in_any_order() {
        let a = CniArgs::parse(
            "K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=db",
        )
        .unwrap();
        assert_eq!(a.pod_namespace(), Some("db"));
        assert_eq!(a.pod_name(), Some("web-0"));
        assert_eq!(a.pod_uid(), Some("u-1"));
        assert_eq!(a.get("IgnoreUnknown"), Some("1"));
        assert_eq!(a.pod_label().as_deref(), Some("pod db/web-0"));
        let b = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0;").unwrap();
        assert_eq!(b.pod_label().as_deref(), Some("pod db/web-0"));
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse(";;").unwrap(), CniArgs::default());
        let a = CniArgs::parse("A=1;A=2;B=x=y;C=").unwrap();
        assert_eq!(a.get("A"), Some("2"));
        assert_eq!(a.get("B"), Some("x=y"));
        assert_eq!(a.get("C"), None);
        assert_eq!(a.get("D"), None);
        assert_eq!(a.pod_label(), None);
    }

    #[test]
    fn cni_args_errors() {
        assert_eq!(
            err_json(CniArgs::parse("K8S_POD_NAME=a;garbage").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS item \"garbage\" is not a KEY=VALUE pair (CNI_ARGS is KEY=VALUE pairs separated by ';')"}"#
        );
        assert_eq!(
            err_json(CniArgs::parse("=v").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS item \"=v\" is not a KEY=VALUE pair (CNI_ARGS is KEY=VALUE pairs separated by ';')"}"#
        );
    }

    #[test]
    fn command_parse_and_errors() {
        for c in Command::ALL {
            assert_eq!(env(&[(CNI_COMMAND, c.as_str())]).command().unwrap(), c);
        }
        assert_eq!(
            err_json(env(&[]).command().unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_COMMAND","details":"CNI_COMMAND is not set; it must be one of ADD, DEL, CHECK, GC, STATUS, VERSION"}"#
        );
        assert_eq!(
            err_json(env(&[(CNI_COMMAND, "add")]).command().unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_COMMAND","details":"CNI_COMMAND=\"add\" is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"}"#
        );
    }

    #[test]
    fn attachment_requirements() {
        let full = [
            (CNI_CONTAINERID, "abc-1"),
            (CNI_NETNS, "/var/run/netns/x"),
            (CNI_IFNAME, "eth0"),
        ];
        let a = env(&full).attachment(Command::Add).unwrap();
        assert_eq!(
            a,
            Attachment {
                container_id: "abc-1".into(),
                netns: "/var/run/netns/x".into(),
                ifname: "eth0".into()
            }
        );
        // DEL without a netns is fine.
        let del = env(&[
            (CNI_CONTAINERID, "abc-1"),
            (CNI_NETNS, ""),
            (CNI_IFNAME, "eth0"),
        ])
        .attachment(Command::Del)
        .unwrap();
        assert_eq!(del.netns, "");
        // ADD and CHECK need one.
        assert_eq!(
            err_json(
                env(&[(CNI_CONTAINERID, "abc-1"), (CNI_IFNAME, "eth0")])
                    .attachment(Command::Check)
                    .unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS is not set","details":"the runtime must set CNI_NETNS for CHECK"}"#
        );
        assert_eq!(
            err_json(
                env(&[(CNI_NETNS, "/x"), (CNI_IFNAME, "eth0")])
                    .attachment(Command::Add)
                    .unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_CONTAINERID is not set","details":"the runtime must set CNI_CONTAINERID for ADD"}"#
        );
        assert_eq!(
            err_json(
                env(&[(CNI_CONTAINERID, "abc"), (CNI_NETNS, "/x")])
                    .attachment(Command::Del)
                    .unwrap_err()
            ),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_IFNAME is not set","details":"the runtime must set CNI_IFNAME for DEL"}"#
        );
    }

    #[test]
    fn container_id_and_ifname_validation() {
        assert!(validate_container_id("a").is_ok());
        assert!(validate_container_id("0abc_def.g-h").is_ok());
        assert_eq!(
            err_json(validate_container_id("-abc").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_CONTAINERID","details":"CNI_CONTAINERID=\"-abc\" has invalid characters: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"}"#
        );
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("net1-abcdefghij").is_ok());
        assert_eq!(
            err_json(validate_ifname("abcdefghijklmnop").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_IFNAME","details":"CNI_IFNAME=\"abcdefghijklmnop\" is longer than 15 bytes"}"#
        );
        assert_eq!(
            err_json(validate_ifname("..").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_IFNAME","details":"CNI_IFNAME=\"..\" is not a valid interface name"}"#
        );
        assert_eq!(
            err_json(validate_ifname("eth 0").unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_IFNAME","details":"CNI_IFNAME=\"eth 0\" contains '/', ':' or whitespace"}"#
        );
    }

    #[test]
    fn non_utf8_values_are_reported() {
        use std::os::unix::ffi::OsStringExt;
        let e = Env::from_lookup(|k| {
            (k == CNI_ARGS).then(|| OsString::from_vec(vec![0x4b, 0xff, 0x3d, 0x31]))
        });
        assert_eq!(e.not_utf8, vec![CNI_ARGS]);
        assert_eq!(
            err_json(e.cni_args().unwrap_err()),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"invalid CNI_ARGS","details":"CNI_ARGS is not valid UTF-8"}"#
        );
    }
}
