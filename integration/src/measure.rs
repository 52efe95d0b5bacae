//! What the benchmarks read off the bed: CPU time of its processes from `/proc`, and
//! kube-apiserver's own counters from its `/metrics`.

use std::path::Path;

use anyhow::{Context, Result};
use kube::Client;

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat_fields(pid: &str) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Seconds of the clock ticks at fields `a` and `b` (counted from the state field, 0).
fn ticks(pid: &str, a: usize, b: usize) -> Result<f64> {
    let f = stat_fields(pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let x: f64 = f.get(a).context("stat field")?.parse()?;
    let y: f64 = f.get(b).context("stat field")?.parse()?;
    Ok((x + y) / hz)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    ticks(pid, 11, 12)
}

/// CPU time of this process's children that it has waited for (the CNI plugins the bed's
/// runtime ran, through `ip netns exec`), in seconds.
pub fn children_cpu_seconds() -> Result<f64> {
    ticks("self", 13, 14)
}

/// Named processes whose CPU time a benchmark follows; several processes may share a name
/// (replicas), and their times add up.
#[derive(Default)]
pub struct Cpu {
    procs: Vec<(String, u32)>,
}

/// CPU seconds so far by name.
pub type CpuSnapshot = Vec<(String, f64)>;

impl Cpu {
    pub fn add(&mut self, name: &str, pids: impl IntoIterator<Item = u32>) {
        self.procs
            .extend(pids.into_iter().map(|p| (name.to_string(), p)));
    }

    /// Each name's CPU seconds so far, then this benchmark's own (the client; the bed's node
    /// agents and the webhooks' load balancer run in it too), then its children's.
    pub fn snapshot(&self) -> Result<CpuSnapshot> {
        let mut out: CpuSnapshot = Vec::new();
        for (name, pid) in &self.procs {
            let s = cpu_seconds(&pid.to_string())?;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += s,
                None => out.push((name.clone(), s)),
            }
        }
        out.push((
            "bench process (client, node agents, load balancer)".into(),
            cpu_seconds("self")?,
        ));
        out.push((
            "its children (CNI plugins, ip)".into(),
            children_cpu_seconds()?,
        ));
        Ok(out)
    }
}

/// CPU seconds per 1000 pods between two snapshots, one line.
pub fn cpu_per_1000(before: &CpuSnapshot, after: &CpuSnapshot, pods: usize) -> String {
    after
        .iter()
        .map(|(name, a)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, b)| *b);
            format!("{name} {:.2}", (a - b) * 1000.0 / pods as f64)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// kube-apiserver's `/metrics` text.
pub async fn apiserver_metrics(client: &Client) -> Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

/// kube-apiserver's CPU profile (Go's `/debug/pprof/profile`) over the next `seconds`,
/// written as it comes (gzip-compressed protobuf, symbolized) to `path`; read it with
/// `go tool pprof -top -cum <path>`. The window may outlast the work it is for: a CPU profile
/// holds only the time spent on a CPU.
pub async fn apiserver_cpu_profile(client: &Client, seconds: u64, path: &Path) -> Result<()> {
    use http_body_util::BodyExt;
    let req = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
        .body(kube::client::Body::from(Vec::new()))?;
    let resp = client.send(req).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the CPU profile")?
        .to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "GET /debug/pprof/profile: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))
}

/// Sum of counter `metric` in `metrics` over the series whose labels contain every one of
/// `labels`.
pub fn counter(metrics: &str, metric: &str, labels: &[&str]) -> f64 {
    let prefix = format!("{metric}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes (create, update, patch, delete) of `resource` kube-apiserver has served.
pub fn writes(metrics: &str, resource: &str) -> f64 {
    let resource = format!("resource=\"{resource}\"");
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|verb| {
            counter(
                metrics,
                "apiserver_request_total",
                &[&resource, &format!("verb=\"{verb}\"")],
            )
        })
        .sum()
}

/// A benchmark's size knob: environment variable `name` as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn counter_sums_matching_series() {
        let m = "apiserver_request_total{code=\"201\",resource=\"ipclaims\",verb=\"POST\"} 5\n\
                 apiserver_request_total{code=\"409\",resource=\"ipclaims\",verb=\"POST\"} 2\n\
                 apiserver_request_total{code=\"200\",resource=\"ipclaims\",verb=\"GET\"} 7\n\
                 apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"PATCH\"} 3\n";
        assert_eq!(writes(m, "ipclaims"), 7.0);
        assert_eq!(writes(m, "pods"), 3.0);
        assert_eq!(
            counter(m, "apiserver_request_total", &["verb=\"GET\""]),
            7.0
        );
    }

    #[test]
    fn this_process_has_cpu_time() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(children_cpu_seconds().unwrap() >= 0.0);
    }
}
