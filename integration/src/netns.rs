//! Network namespaces and links through iproute2. Every namespace the test bed makes is named
//! `pinip-<pid>-…` after the process that made it, so namespaces left by a killed process can
//! be found and removed by the next one.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub const PREFIX: &str = "pinip-";

/// Runs `ip args…`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

pub fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a namespace; a missing one is not an error.
pub fn del(name: &str) -> Result<()> {
    if !path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).map(|_| ())
}

pub fn list() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Namespaces of this bed (`prefix`), e.g. for teardown and for tests that check nothing is
/// left behind.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Removes namespaces made by test-bed processes that no longer run.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for n in list()? {
        let Some(rest) = n.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            del(&n)?;
            removed.push(n);
        }
    }
    Ok(removed)
}

/// Addresses configured on `ifname` inside namespace `ns`, as `addr/prefix`.
pub fn addresses(ns: &str, ifname: &str) -> Result<Vec<String>> {
    let out = ip(&["-n", ns, "-j", "addr", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let mut addrs = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "global" {
                addrs.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                ));
            }
        }
    }
    Ok(addrs)
}
