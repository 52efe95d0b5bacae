//! Command-line flags (each also documented in README.md).

use std::time::Duration;

use clap::{Args as ClapArgs, Parser};
use pinip_runtime::{AdminArgs, ClientArgs, LogArgs};

/// pinip binder: binds each pod's address reservations (IPClaims) to the pod and its node,
/// follows StatefulSet pods when they are recreated, releases addresses when their pod or
/// workload is gone, reclaims reservations whose pod never appeared, and keeps every IPPool's
/// status. Several replicas may run; one leads (a coordination.k8s.io Lease). Serves
/// /healthz, /readyz and /metrics (Prometheus) over plain HTTP.
#[derive(Parser, Debug, Clone)]
#[command(name = "pinip-binder", version)]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// A claim reserved for a pod that has not appeared this long after it was reserved
    /// (spec.pod.reservedAt, else its creation) is reclaimed, once the API server confirms no
    /// live pod uses it: deleted, or Released when retained. Keep it above the longest a pod's
    /// admission can take (kube-apiserver gives up on a request after 60s), plus a margin for
    /// clocks and whole-second timestamps.
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    pub reclaim_grace: Duration,
    /// A Released member of a `retain: app` set that holds more than its bound (the workload
    /// was scaled down) is deleted this long after its release; a scale back up within it
    /// keeps every address. A workload scaled to zero keeps its whole set.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub set_shrink_grace: Duration,
    /// Delete a StatefulSet's retained claims whose ordinal is >= its replicas once their pod
    /// is gone. By default scale-down keeps them, so scaling up again restores the addresses.
    #[arg(long)]
    pub release_on_scale_down: bool,
    /// A full reconcile runs at least this often, even when no watch event arrives.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Changes that arrive within this window are reconciled together.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// API writes carried out in parallel during one reconcile.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// A pod that names a claim which does not exist, or does not record it as holder, is
    /// reported as a conflict only when it is at least this old (the claim or its handover
    /// may be in flight from the webhook).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub conflict_settle: Duration,
    /// A claim (retain none) is bound to a pod the scheduler has not placed yet only once the
    /// pod is this old, so that a pod placed within it is bound with its node in one write
    /// instead of two. Until then the claim records its holder by name, as the webhook wrote
    /// it. `0s` binds at once.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub unscheduled_bind_delay: Duration,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Leader election over a coordination.k8s.io/v1 Lease.
#[derive(ClapArgs, Debug, Clone)]
pub struct LeaderArgs {
    /// Elect a leader among replicas; `false` makes this replica act alone (one replica only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "pinip-binder")]
    pub lease_name: String,
    /// Namespace of the Lease (the binder's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "pinip-system")]
    pub lease_namespace: String,
    /// How long a Lease stays valid after its last renewal; a standby takes over after this
    /// long without renewals (at once when the leader releases it on shutdown).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease and a standby checks it. The leader stops acting
    /// when it has not renewed for lease-duration minus this period.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_renew_period: Duration,
    /// This replica's identity in the Lease; default: $POD_NAME, else hostname and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

pub use pinip_api::duration::parse_duration;

impl LeaderArgs {
    /// Checks that the timings leave the leader room to renew before a standby takes over.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err("--lease-duration must be at least 1s".into());
        }
        if self.lease_renew_period.is_zero() || self.lease_renew_period * 2 > self.lease_duration {
            return Err(format!(
                "--lease-renew-period ({:?}) must be more than 0 and at most half of --lease-duration ({:?})",
                self.lease_renew_period, self.lease_duration
            ));
        }
        Ok(())
    }

    /// The configured identity, else `<hostname>-<pid>`.
    pub fn identity(&self) -> String {
        if let Some(id) = self.identity.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "pinip-binder".into());
        format!("{host}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_lease_timings() {
        let a = Args::parse_from(["pinip-binder"]);
        assert_eq!(a.reclaim_grace, Duration::from_secs(75));
        assert_eq!(a.unscheduled_bind_delay, Duration::from_secs(3));
        assert_eq!(a.leader.lease_duration, Duration::from_secs(15));
        assert!(a.leader.leader_elect);
        assert!(!a.release_on_scale_down);
        assert!(a.leader.validate().is_ok());
        let a = Args::parse_from([
            "pinip-binder",
            "--leader-elect=false",
            "--lease-duration=4s",
            "--lease-renew-period=3s",
        ]);
        assert!(!a.leader.leader_elect);
        assert!(a.leader.validate().is_err());
    }
}
