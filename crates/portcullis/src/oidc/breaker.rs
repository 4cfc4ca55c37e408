//! The IdP circuit breaker: after `breaker_failures` consecutive transient
//! failures of the token endpoint, stop calling it for a back-off period
//! (exponential, with jitter, capped). An IdP that is down then costs each
//! request nothing, instead of one connect timeout per request, and a
//! recovering IdP is not hit by every waiting session at once. After the
//! period one request at a time probes; its success closes the circuit.
//!
//! Only transient failures count. A refusal (`invalid_grant`) is the IdP
//! answering, so it closes the circuit like a success.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use super::OidcError;
use crate::fault::Fault;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: usize,
    },
    /// No calls until `until`; then the first caller probes.
    Open {
        until: Instant,
        backoff: Duration,
    },
    /// One probe in flight; everyone else is refused.
    Probing {
        backoff: Duration,
    },
}

pub struct Breaker {
    failures: usize,
    first_backoff: Duration,
    max_backoff: Duration,
    state: Mutex<State>,
}

/// Leave to make one call. Report how it went with [`Permit::done`]; a
/// permit dropped without a report (the request was cancelled) lets the
/// next caller probe.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(failures: usize, first_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            failures: failures.max(1),
            first_backoff,
            max_backoff: max_backoff.max(first_backoff),
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether calls are being refused now (open, or a probe in flight).
    pub fn is_open(&self) -> bool {
        match *self.state() {
            State::Closed { .. } => false,
            State::Open { until, .. } => Instant::now() < until,
            State::Probing { .. } => true,
        }
    }

    /// A permit to call the IdP, or `Unavailable` at once while open.
    pub fn permit(&self) -> Result<Permit<'_>, OidcError> {
        let mut state = self.state();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until, backoff } if Instant::now() >= until => {
                *state = State::Probing { backoff };
                set_gauge(2.0);
                true
            }
            State::Open { .. } | State::Probing { .. } => {
                return Err(OidcError::Unavailable(
                    "token endpoint: circuit open after repeated failures".into(),
                ));
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    fn report(&self, probe: bool, transient_failure: bool) {
        let mut state = self.state();
        let next = match (*state, transient_failure) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.failures => State::Closed {
                failures: failures + 1,
            },
            (State::Closed { .. }, true) => self.open(self.first_backoff),
            (State::Probing { backoff }, true) if probe => {
                self.open((backoff * 2).min(self.max_backoff))
            }
            // A call that started before the circuit opened: already counted.
            (other, true) => other,
        };
        if let (State::Closed { .. }, false) = (*state, matches!(next, State::Closed { .. })) {
            metrics::counter!(crate::metrics::IDP_CIRCUIT_OPENED_TOTAL).increment(1);
        }
        if !matches!(*state, State::Closed { .. }) && matches!(next, State::Closed { .. }) {
            tracing::info!("IdP answers again; circuit closed");
        }
        *state = next;
        set_gauge(match next {
            State::Closed { .. } => 0.0,
            State::Open { .. } => 1.0,
            State::Probing { .. } => 2.0,
        });
    }

    fn open(&self, backoff: Duration) -> State {
        let wait = jittered(backoff);
        tracing::warn!(
            retry_in = ?wait,
            "IdP token endpoint failing; circuit open, no token requests until then"
        );
        State::Open {
            until: Instant::now() + wait,
            backoff,
        }
    }
}

impl Permit<'_> {
    /// Report the call's outcome; only a transient failure counts against
    /// the IdP.
    pub fn done<T>(mut self, outcome: &Result<T, OidcError>) {
        self.reported = true;
        let failed = matches!(outcome, Err(e) if e.fault() == Fault::IdpUnavailable);
        self.breaker.report(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.state();
            if let State::Probing { backoff } = *state {
                *state = State::Open {
                    until: Instant::now(),
                    backoff,
                };
            }
        }
    }
}

/// 0 closed, 1 open, 2 probing.
fn set_gauge(v: f64) {
    metrics::gauge!(crate::metrics::IDP_CIRCUIT_STATE).set(v);
}

/// 50-100 % of `d`, so replicas that saw the same failures do not probe in
/// step.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b) as f64 / u16::MAX as f64,
        Err(_) => 1.0,
    };
    d.mul_f64(0.5 + 0.5 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), OidcError> {
        Err(OidcError::Unavailable("down".into()))
    }
    fn refused() -> Result<(), OidcError> {
        Err(OidcError::OAuth {
            status: 400,
            error: "invalid_grant".into(),
            description: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_one_probe_closes_it() {
        let b = Breaker::new(3, Duration::from_secs(1), Duration::from_secs(8));
        for _ in 0..2 {
            b.permit().expect("closed").done(&fail());
        }
        // A refusal is an answer: the count starts over.
        b.permit().expect("closed").done(&refused());
        for _ in 0..2 {
            b.permit().expect("closed").done(&fail());
        }
        assert!(!b.is_open());
        b.permit().expect("closed").done(&fail());
        assert!(b.is_open());
        assert!(b.permit().is_err(), "open: refused at once");
        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = b.permit().expect("probe after the back-off");
        assert!(b.permit().is_err(), "one probe at a time");
        probe.done(&Ok::<(), OidcError>(()));
        assert!(!b.is_open());
        assert!(b.permit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_with_jitter_up_to_the_cap() {
        let b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(4));
        b.permit().expect("closed").done(&fail());
        let mut expected = Duration::from_secs(1);
        for _ in 0..5 {
            // Never before half the period, always by its end.
            tokio::time::advance(expected / 2 - Duration::from_millis(1)).await;
            assert!(b.permit().is_err(), "still open at half of {expected:?}");
            tokio::time::advance(expected / 2 + Duration::from_millis(1)).await;
            let probe = b.permit().expect("probe at the end of the period");
            probe.done(&fail());
            expected = (expected * 2).min(Duration::from_secs(4));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_the_next_caller_probe() {
        let b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(4));
        b.permit().expect("closed").done(&fail());
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.permit().expect("probe"));
        assert!(b.permit().is_ok(), "the dropped probe left the slot free");
    }
}
