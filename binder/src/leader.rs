//! Leader election over a coordination.k8s.io/v1 Lease, so that several binder replicas can
//! run and exactly one reconciles.
//!
//! The algorithm is client-go's: the holder renews `renewTime` every renew period; a standby
//! takes the Lease when it is free, or when it has *observed* no change to it for
//! `leaseDurationSeconds` by its own clock (so clock skew between nodes does not matter).
//! Every write is a replace guarded by resourceVersion, so two replicas never both acquire.
//! The leader stops acting when it could not renew for lease duration minus one renew period,
//! before any standby may take over. On graceful shutdown the leader clears `holderIdentity`,
//! and a standby, which watches the Lease, takes over at once.
//!
//! Why not a crate: `kube-lease-manager` 0.13 (kube 5) is the candidate; its standby sleeps
//! until the old expiry even after the holder releases, and a leader whose renewals fail keeps
//! reporting leadership, so neither fast hand-over nor stepping down could be had from it.
//! `kube-leader-election` 0.44 is built for kube 4.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, watch};

use crate::error::Error;

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    renew: Duration,
}

/// What this replica last saw of the Lease, and when by its own clock.
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        renew: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            renew,
        }
    }

    /// Competes for the Lease until `stop` changes, publishing on `leading` whether this
    /// replica leads. On stop, releases the Lease if held.
    pub async fn run(self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let poke = std::sync::Arc::new(Notify::new());
        let watch_task = tokio::spawn(watch_lease(
            self.api.clone(),
            self.name.clone(),
            poke.clone(),
        ));
        let mut observed: Option<Observed> = None;
        let mut renewed: Option<Instant> = None;
        let set = |lead: bool| {
            leading.send_if_modified(|l| {
                let changed = *l != lead;
                *l = lead;
                changed
            })
        };
        loop {
            let attempt = Instant::now();
            let outcome = match tokio::time::timeout(self.renew, self.try_hold(&mut observed)).await
            {
                Ok(r) => r,
                Err(_) => Err(Error::LeaseTimeout {
                    lease: self.name.clone(),
                    secs: self.renew.as_secs_f64(),
                }),
            };
            match outcome {
                Ok(true) => {
                    if renewed.is_none() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "acquired the lease; leading");
                    }
                    renewed = Some(attempt);
                    set(true);
                }
                Ok(false) => {
                    if renewed.take().is_some() {
                        tracing::warn!(lease = %self.name, "lost the lease to another replica");
                    }
                    set(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease update failed");
                    if let Some(t) = renewed
                        && t.elapsed() + self.renew >= self.duration
                    {
                        tracing::warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                        renewed = None;
                        set(false);
                    }
                }
            }
            let wait = if renewed.is_some() {
                self.renew.saturating_sub(attempt.elapsed())
            } else {
                let until_expiry = observed.as_ref().map_or(self.renew, |o| {
                    self.record_duration(&o.spec).saturating_sub(o.at.elapsed())
                });
                until_expiry.min(self.renew).max(Duration::from_millis(20))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified(), if renewed.is_none() => {}
                _ = stop.changed() => break,
            }
        }
        watch_task.abort();
        set(false);
        if renewed.is_some() {
            match tokio::time::timeout(Duration::from_secs(5), self.release()).await {
                Ok(Ok(())) => tracing::info!(lease = %self.name, "released the lease"),
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
                Err(_) => tracing::warn!(lease = %self.name, "releasing the lease timed out"),
            }
        }
    }

    fn record_duration(&self, spec: &LeaseSpec) -> Duration {
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs)
    }

    fn err(&self) -> impl Fn(kube::Error) -> Error + '_ {
        |source| Error::Lease {
            lease: self.name.clone(),
            source,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX)
    }

    /// Acquires or renews the Lease; `Ok(false)` when another replica validly holds it or
    /// won the race.
    async fn try_hold(&self, observed: &mut Option<Observed>) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.err())? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    *observed = Some(Observed {
                        spec: created.spec.unwrap_or_default(),
                        at: Instant::now(),
                    });
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err()(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if observed.as_ref().is_none_or(|o| o.spec != spec) {
            *observed = Some(Observed {
                spec: spec.clone(),
                at: Instant::now(),
            });
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if holder.is_some() && !mine {
            let seen = observed.as_ref().map_or(Duration::ZERO, |o| o.at.elapsed());
            if seen < self.record_duration(&spec) {
                return Ok(false);
            }
            tracing::info!(lease = %self.name, previous = ?holder, "lease expired; taking over");
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0)
                    + i32::from(!mine && spec.acquire_time.is_some()),
            ),
            ..spec
        });
        lease.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                *observed = Some(Observed {
                    spec: updated.spec.unwrap_or_default(),
                    at: Instant::now(),
                });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Gives the Lease up (if still ours) so a standby takes over without waiting for expiry.
    async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.err())? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        lease.metadata.managed_fields = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(self.err())?;
        Ok(())
    }
}

/// Pokes `poke` whenever the Lease changes, so a standby reacts to a release at once.
async fn watch_lease(api: Api<Lease>, name: String, poke: std::sync::Arc<Notify>) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, cfg));
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(l)) => {
                tracing::debug!(lease = %l.name_any(), "lease changed");
                poke.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "lease watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
