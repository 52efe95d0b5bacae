//! What one leadership term remembers between passes: claims written but not yet seen by
//! the watch, and claims whose release the API server refused (with their retry backoff).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a claim this binder wrote is left alone while the watch still shows the version
/// the write was based on.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(10);

/// When a release the API server refused (the claim still held) is first decided again; each
/// refusal in a row doubles it, up to the resync interval.
const HELD_RETRY: Duration = Duration::from_secs(5);

/// Claims whose release the API server refused, and when each is decided again.
#[derive(Default)]
pub(super) struct HeldClaims(HashMap<String, (u32, Option<Instant>)>);

impl HeldClaims {
    /// One more refusal in a row: the next retry is twice as far (logged the first time).
    pub(super) fn refused(&mut self, claim: String, by: &str, why: &str, cap: Duration) {
        let (n, due) = self.0.entry(claim.clone()).or_insert((0, None));
        *n += 1;
        let wait = HELD_RETRY.saturating_mul(1 << (*n - 1).min(10)).min(cap);
        *due = Some(Instant::now() + wait);
        if *n == 1 {
            tracing::info!(claim = %claim, held_by = %by, reason = why, retry_in = ?wait, "claim still held; not releasing");
        } else {
            tracing::debug!(claim = %claim, held_by = %by, reason = why, refusals = *n, retry_in = ?wait, "claim still held; not releasing");
        }
    }

    pub(super) fn remove(&mut self, claim: &str) {
        self.0.remove(claim);
    }

    /// The claims due by `now` (each handed out once per refusal).
    pub(super) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut v = Vec::new();
        for (name, (_, due)) in &mut self.0 {
            if due.is_some_and(|d| d <= now) {
                *due = None;
                v.push(name.clone());
            }
        }
        v
    }

    /// Forgets claims that were decided again and not refused (released, or no longer to
    /// be released).
    pub(super) fn settle(&mut self) {
        self.0.retain(|_, (_, due)| due.is_some());
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.0.values().filter_map(|(_, d)| *d).min()
    }
}

/// Claims this binder wrote whose watch has not caught up yet. A claim stays here while the
/// watch still shows one of its `stale` versions (the one the decision read, and any this
/// binder wrote on the way to its last write), at most [`IN_FLIGHT_TTL`].
#[derive(Default)]
pub(super) struct InFlight(HashMap<String, (Vec<String>, Instant)>);

impl InFlight {
    pub(super) fn record(&mut self, claim: String, stale: Vec<String>, now: Instant) {
        self.0.insert(claim, (stale, now));
    }

    /// Forgets claims the watch has caught up on (or that expired) and returns the rest.
    /// `current`: a claim's resourceVersion in the watch cache.
    pub(super) fn still_pending(
        &mut self,
        current: impl Fn(&str) -> Option<String>,
        now: Instant,
    ) -> HashSet<String> {
        self.0.retain(|name, (stale, at)| {
            now.duration_since(*at) < IN_FLIGHT_TTL
                && current(name).is_some_and(|rv| stale.contains(&rv))
        });
        self.0.keys().cloned().collect()
    }

    /// When the oldest entry expires.
    pub(super) fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.0
            .values()
            .map(|(_, at)| IN_FLIGHT_TTL.saturating_sub(now.duration_since(*at)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_claims_back_off_and_are_forgotten_once_decided() {
        let mut h = HeldClaims::default();
        let cap = Duration::from_secs(30);
        h.refused("c".into(), "pod a/x", "pod_gone", cap);
        let first = h.next().unwrap();
        assert!(h.due(Instant::now()).is_empty(), "not due yet");
        let later = first + Duration::from_millis(1);
        assert_eq!(h.due(later), ["c"]);
        assert!(h.due(later).is_empty(), "handed out once per refusal");
        assert_eq!(h.next(), None);
        // Refused again: twice as far; then 4x, then capped.
        let t = Instant::now();
        h.refused("c".into(), "pod a/x", "pod_gone", cap);
        let d2 = h.next().unwrap() - t;
        assert!(d2 >= HELD_RETRY * 2 && d2 < HELD_RETRY * 2 + Duration::from_secs(1));
        for _ in 0..10 {
            h.refused("c".into(), "pod a/x", "pod_gone", cap);
        }
        assert!(h.next().unwrap() - Instant::now() <= cap);
        h.settle();
        assert!(h.next().is_some(), "a scheduled retry is kept");
        h.due(Instant::now() + cap * 2);
        h.settle();
        assert!(h.0.is_empty(), "decided without a refusal: forgotten");
    }

    #[test]
    fn in_flight_until_the_watch_shows_a_newer_version() {
        let t0 = Instant::now();
        let mut f = InFlight::default();
        // Spec written (rv 2), then status (rv 3): 1 and 2 are stale, 3 is current.
        f.record("c".into(), vec!["1".into(), "2".into()], t0);
        let seen = |rv: &'static str| move |name: &str| (name == "c").then(|| rv.to_string());
        assert!(f.still_pending(seen("1"), t0).contains("c"));
        assert!(f.still_pending(seen("2"), t0).contains("c"));
        assert_eq!(f.next_expiry(t0), Some(IN_FLIGHT_TTL));
        assert!(
            f.still_pending(seen("3"), t0).is_empty(),
            "our last write is current"
        );
        assert_eq!(f.next_expiry(t0), None);
        // Expiry, and a claim that is gone from the watch.
        f.record("c".into(), vec!["1".into()], t0);
        assert!(f.still_pending(seen("1"), t0 + IN_FLIGHT_TTL).is_empty());
        f.record("c".into(), vec!["1".into()], t0);
        assert!(f.still_pending(|_| None, t0).is_empty());
    }
}
