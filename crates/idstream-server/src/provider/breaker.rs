//! A circuit breaker per provider account: after `failures` failed calls in a row, calls fail
//! at once for `open_for`, so a provider that is down is not hammered and callers get their
//! 502 immediately instead of after every timeout and retry. Then one trial call is let
//! through: its success closes the circuit, its failure opens it again.
//!
//! A failure here is the provider being unwell (5xx, 429, timeout, connection error after the
//! retries); a 4xx answer means the provider is up and does not count.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
    gauge: metrics::Gauge,
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub fn new(provider: &str, failures: u32, open_for: Duration) -> Breaker {
        let gauge = metrics::gauge!("idstream_provider_circuit_open", "provider" => provider.to_owned());
        gauge.set(0.0);
        Breaker { failures, open_for, state: Mutex::new(State::default()), gauge }
    }

    /// Whether a call may go out now; `Err(wait)` while the circuit is open.
    pub fn admit(&self) -> Result<(), Duration> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("breaker lock");
        match s.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            // Half open: exactly one trial call at a time.
            Some(_) if s.trial_in_flight => Err(Duration::from_secs(1)),
            Some(_) => {
                s.trial_in_flight = true;
                Ok(())
            }
        }
    }

    /// Records the outcome of an admitted call.
    pub fn record(&self, ok: bool) {
        self.record_at(ok, Instant::now())
    }

    fn record_at(&self, ok: bool, now: Instant) {
        let mut s = self.state.lock().expect("breaker lock");
        let was_trial = std::mem::take(&mut s.trial_in_flight);
        if ok {
            s.consecutive = 0;
            if s.open_until.take().is_some() {
                tracing::info!("provider circuit closed");
            }
            self.gauge.set(0.0);
            return;
        }
        s.consecutive = s.consecutive.saturating_add(1);
        if was_trial || s.consecutive >= self.failures {
            if s.open_until.is_none() || was_trial {
                tracing::warn!(
                    failures = s.consecutive,
                    open_secs = self.open_for.as_secs(),
                    "provider circuit opened"
                );
            }
            s.open_until = Some(now + self.open_for);
            self.gauge.set(1.0);
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.lock().expect("breaker lock").open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_then_one_trial_decides() {
        let b = Breaker::new("t", 3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.admit_at(t0).is_ok());
            b.record_at(false, t0);
        }
        assert!(b.admit_at(t0).is_ok(), "two failures of three: still closed");
        b.record_at(false, t0);
        assert!(b.admit_at(t0 + Duration::from_secs(9)).is_err(), "open for 10 s");
        // Half open: one trial; a second caller is refused meanwhile.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.admit_at(t1).is_ok());
        assert!(b.admit_at(t1).is_err());
        b.record_at(false, t1);
        assert!(b.admit_at(t1 + Duration::from_secs(1)).is_err(), "a failed trial opens it again");
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.admit_at(t2).is_ok());
        b.record_at(true, t2);
        assert!(!b.is_open());
        assert!(b.admit_at(t2).is_ok() && b.admit_at(t2).is_ok(), "closed: everyone passes");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new("t2", 2, Duration::from_secs(10));
        let t = Instant::now();
        b.record_at(false, t);
        b.record_at(true, t);
        b.record_at(false, t);
        assert!(b.admit_at(t).is_ok());
    }
}
