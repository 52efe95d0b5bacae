//! When the leader reconciles, and what: the scheduler half of the loop, kept apart from
//! carrying decisions out (`execute.rs`) so that its arithmetic is a pure function of what a
//! pass reported. A change decides only the claims it names; everything is decided when the
//! watches say so, and at the latest when the earliest decision falls due, a write is
//! overdue in the watch, a failed pass backs off, or `--resync-interval` passes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::scope::Scope;

/// Retries of a failed pass: 400 ms doubling to 12.8 s.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX_DOUBLINGS: u32 = 6;
/// Soonest a pass runs again to look at a write its watch has not shown yet, or at workloads
/// just looked up.
const RECHECK: Duration = Duration::from_millis(100);

/// What a pass tells the scheduler.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When the earliest decision among the claims decided falls due (a grace period ends).
    pub due_in: Option<Duration>,
    /// When the earliest write not yet seen by the watch stops being awaited.
    pub in_flight_expiry: Option<Duration>,
    /// Some workload's presence became known during the pass.
    pub looked_up: bool,
    /// Writes or lookups that failed.
    pub errors: u32,
}

#[derive(Debug)]
pub struct Schedule {
    resync: Duration,
    /// When everything is decided next, whatever changes.
    next_full: Instant,
    /// Failed passes in a row.
    failures: u32,
}

impl Schedule {
    /// A schedule whose first pass decides everything.
    pub fn new(resync: Duration, now: Instant) -> Schedule {
        Schedule {
            resync,
            next_full: now,
            failures: 0,
        }
    }

    /// The claims the next pass decides (`None`: everything), from what changed since.
    pub fn scope(&self, changed: Scope, now: Instant) -> Option<HashSet<String>> {
        (!changed.everything && now < self.next_full).then_some(changed.claims)
    }

    /// Records a pass (`full`: it decided everything) and its outcome; returns the time to
    /// wait, without any change, before the next pass.
    pub fn after(&mut self, full: bool, outcome: &Outcome, now: Instant) -> Duration {
        let wake = self.wake(outcome).min(self.resync);
        let due = now + wake;
        self.next_full = if full { due } else { self.next_full.min(due) };
        wake
    }

    /// When everything is decided next.
    pub fn next_full(&self) -> Instant {
        self.next_full
    }

    fn wake(&mut self, o: &Outcome) -> Duration {
        let mut wake = o.due_in.unwrap_or(self.resync);
        if let Some(expiry) = o.in_flight_expiry {
            wake = wake.min(expiry.max(RECHECK));
        }
        if o.looked_up {
            wake = wake.min(RECHECK);
        }
        if o.errors > 0 {
            self.failures = self.failures.saturating_add(1);
            let backoff =
                BACKOFF_BASE * 2u32.saturating_pow(self.failures.min(BACKOFF_MAX_DOUBLINGS));
            wake = wake.min(backoff);
        } else {
            self.failures = 0;
        }
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(30);

    fn changed(everything: bool, claims: &[&str]) -> Scope {
        Scope {
            everything,
            claims: claims.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn first_pass_and_due_resync_decide_everything() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RESYNC, t0);
        assert_eq!(s.scope(changed(false, &["a"]), t0), None);
        assert_eq!(s.after(true, &Outcome::default(), t0), RESYNC);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            s.scope(changed(false, &["a"]), later),
            Some(HashSet::from(["a".to_string()]))
        );
        assert_eq!(s.scope(changed(true, &[]), later), None);
        assert_eq!(s.scope(changed(false, &[]), t0 + RESYNC), None);
    }

    #[test]
    fn a_scoped_pass_brings_the_full_pass_forward_never_back() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RESYNC, t0);
        s.after(true, &Outcome::default(), t0);
        // A grace period among the scoped claims ends in 5 s: everything is decided then.
        let due = Outcome {
            due_in: Some(Duration::from_secs(5)),
            ..Outcome::default()
        };
        assert_eq!(s.after(false, &due, t0), Duration::from_secs(5));
        assert_eq!(s.next_full(), t0 + Duration::from_secs(5));
        // A later scoped pass with nothing due does not push it back to the resync.
        s.after(false, &Outcome::default(), t0 + Duration::from_secs(1));
        assert_eq!(s.next_full(), t0 + Duration::from_secs(5));
        // A full pass sets it afresh.
        s.after(true, &Outcome::default(), t0 + Duration::from_secs(5));
        assert_eq!(s.next_full(), t0 + Duration::from_secs(5) + RESYNC);
    }

    #[test]
    fn rechecks_are_soon_but_not_busy() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RESYNC, t0);
        let in_flight = Outcome {
            in_flight_expiry: Some(Duration::from_millis(3)),
            ..Outcome::default()
        };
        assert_eq!(s.after(true, &in_flight, t0), RECHECK);
        let in_flight = Outcome {
            in_flight_expiry: Some(Duration::from_secs(2)),
            ..Outcome::default()
        };
        assert_eq!(s.after(true, &in_flight, t0), Duration::from_secs(2));
        let looked_up = Outcome {
            looked_up: true,
            ..Outcome::default()
        };
        assert_eq!(s.after(true, &looked_up, t0), RECHECK);
        // Nothing due: the resync interval, never more.
        let far = Outcome {
            due_in: Some(Duration::from_secs(3600)),
            ..Outcome::default()
        };
        assert_eq!(s.after(true, &far, t0), RESYNC);
        assert_eq!(s.next_full(), t0 + RESYNC, "the full pass is capped too");
        // The in-flight floor applies to the recheck only, not to a sooner decision.
        let soon = Outcome {
            due_in: Some(Duration::from_millis(10)),
            in_flight_expiry: Some(Duration::from_millis(3)),
            ..Outcome::default()
        };
        assert_eq!(s.after(true, &soon, t0), Duration::from_millis(10));
    }

    #[test]
    fn backoff_never_delays_a_decision_that_falls_due_sooner() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RESYNC, t0);
        s.after(true, &Outcome::default(), t0);
        let failed_soon = Outcome {
            due_in: Some(Duration::from_millis(50)),
            errors: 2,
            ..Outcome::default()
        };
        // A scoped pass that failed counts as a failure too, and brings the full pass forward.
        assert_eq!(s.after(false, &failed_soon, t0), Duration::from_millis(50));
        assert_eq!(s.next_full(), t0 + Duration::from_millis(50));
        let failed = Outcome {
            errors: 1,
            ..Outcome::default()
        };
        assert_eq!(s.after(false, &failed, t0), Duration::from_millis(800));
    }

    #[test]
    fn failures_back_off_doubling_to_a_cap_and_reset_on_success() {
        let t0 = Instant::now();
        let mut s = Schedule::new(RESYNC, t0);
        let failed = Outcome {
            errors: 1,
            ..Outcome::default()
        };
        let waits: Vec<u64> = (0..8)
            .map(|_| s.after(true, &failed, t0).as_millis() as u64)
            .collect();
        assert_eq!(waits, [400, 800, 1600, 3200, 6400, 12800, 12800, 12800]);
        assert_eq!(s.after(true, &Outcome::default(), t0), RESYNC);
        assert_eq!(s.after(true, &failed, t0), Duration::from_millis(400));
    }
}
