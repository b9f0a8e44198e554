//! A small circuit breaker: consecutive failures open it, a cool-down later
//! one trial call decides whether it closes again.
//!
//! ```text
//!            N consecutive failures              cool-down passed: the next
//!  Closed ───────────────────────────▶ Open ───── call is let through ─────▶ HalfOpen
//!    ▲                                  ▲                                      │
//!    │                                  └──────── the trial fails ─────────────┤
//!    └───────────────────────── the trial succeeds ────────────────────────────┘
//! ```
//!
//! * **Closed**: every call goes through. A success resets the count of
//!   consecutive failures; the `failure_threshold`-th failure in a row opens.
//! * **Open**: calls fail fast with [`Rejected::Open`], without calling.
//!   The state changes lazily: the first call after the cool-down turns it
//!   half-open (nothing runs in the background).
//! * **HalfOpen**: exactly one trial call is in flight; the others are
//!   rejected ([`Rejected::TrialInFlight`]). Its success closes, its failure
//!   (or a panic in it) opens again for another cool-down.
//!
//! A result that arrives after the state changed (a call admitted while
//! closed that fails after the breaker opened) is ignored: it says nothing
//! about the state it was not admitted in.
//!
//! The clock is a [`Clock`], so tests move time by hand instead of sleeping.
//! The state lives in the value: one breaker per process for the gateway
//! (see `gateway::process`), not shared between replicas.
//!
//! No crate was taken for this: `failsafe`, the maintained one, lets every
//! call through while half-open and has no clock a test can drive.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

/// Where the breaker reads the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// When to open, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker rejects calls before it lets a trial through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The observable state; its number is the gauge's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// The `to` label of the transitions counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("circuit open: failing fast for another {}ms", .retry_in.as_millis())]
    Open { retry_in: Duration },
    #[error("circuit half-open: a trial call is in flight")]
    TrialInFlight,
}

/// A call through the breaker that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// Not made: the breaker is open (or half-open and busy).
    Rejected(Rejected),
    /// Made, and it failed (counted as a failure).
    Failed(E),
}

type Labels = Vec<(&'static str, &'static str)>;

/// The breaker's series; registered by whoever names them (the gateway).
#[derive(Debug, Clone, Default)]
pub struct BreakerMetrics {
    /// [`State::as_gauge`] of the current state.
    pub state: Gauge,
    /// Transitions, by `to` state.
    pub transitions: Family<Labels, Counter>,
}

impl BreakerMetrics {
    /// Transitions so far into `to`.
    pub fn transitions_to(&self, to: State) -> u64 {
        self.transitions
            .get_or_create(&vec![("to", to.as_str())])
            .get()
    }
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        since: Instant,
    },
    /// The trial call is in flight.
    HalfOpen,
}

impl Inner {
    fn state(self) -> State {
        match self {
            Self::Closed { .. } => State::Closed,
            Self::Open { .. } => State::Open,
            Self::HalfOpen => State::HalfOpen,
        }
    }
}

struct Shared {
    inner: Inner,
    /// Bumped by every transition: a permit records only into the state it
    /// was admitted in.
    generation: u64,
}

pub struct CircuitBreaker {
    name: &'static str,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    shared: Mutex<Shared>,
    metrics: BreakerMetrics,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker on the system clock; `name` is for logs.
    pub fn new(name: &'static str, config: BreakerConfig, metrics: BreakerMetrics) -> Self {
        Self::with_clock(name, config, metrics, Arc::new(SystemClock))
    }

    /// A closed breaker reading the time from `clock`. A threshold of 0 is
    /// taken as 1.
    pub fn with_clock(
        name: &'static str,
        config: BreakerConfig,
        metrics: BreakerMetrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        metrics.state.set(State::Closed.as_gauge());
        // Every series from the start, at 0: rate() and alerts see the first
        // transition, and /metrics shows the family before it.
        for to in [State::Closed, State::Open, State::HalfOpen] {
            drop(
                metrics
                    .transitions
                    .get_or_create(&vec![("to", to.as_str())]),
            );
        }
        Self {
            name,
            config,
            clock,
            shared: Mutex::new(Shared {
                inner: Inner::Closed { failures: 0 },
                generation: 0,
            }),
            metrics,
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    pub fn metrics(&self) -> &BreakerMetrics {
        &self.metrics
    }

    /// The current state. An open breaker whose cool-down has passed is
    /// still [`State::Open`] until a call arrives.
    pub fn state(&self) -> State {
        self.lock().inner.state()
    }

    /// Runs `call` unless the breaker rejects it; `Err` counts as a failure,
    /// `Ok` as a success. A panic in `call` counts as a failure.
    ///
    /// # Errors
    /// [`CallError::Rejected`] without running `call`, or its own error.
    pub fn call<T, E>(&self, call: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        let permit = self.admit().map_err(CallError::Rejected)?;
        match call() {
            Ok(value) => {
                permit.record(true);
                Ok(value)
            }
            Err(error) => {
                permit.record(false);
                Err(CallError::Failed(error))
            }
        }
    }

    /// Lets a call through, or says why not.
    fn admit(&self) -> Result<Permit<'_>, Rejected> {
        let mut shared = self.lock();
        match shared.inner {
            Inner::Closed { .. } => {}
            Inner::HalfOpen => return Err(Rejected::TrialInFlight),
            Inner::Open { since } => {
                let elapsed = self.clock.now().saturating_duration_since(since);
                if elapsed < self.config.cooldown {
                    return Err(Rejected::Open {
                        retry_in: self.config.cooldown - elapsed,
                    });
                }
                self.transition(&mut shared, Inner::HalfOpen);
            }
        }
        Ok(Permit {
            breaker: self,
            generation: shared.generation,
            recorded: false,
        })
    }

    fn record(&self, generation: u64, success: bool) {
        let mut shared = self.lock();
        if shared.generation != generation {
            return;
        }
        match (shared.inner, success) {
            (Inner::Closed { .. }, true) => shared.inner = Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    let since = self.clock.now();
                    self.transition(&mut shared, Inner::Open { since });
                } else {
                    shared.inner = Inner::Closed { failures };
                }
            }
            (Inner::HalfOpen, true) => {
                self.transition(&mut shared, Inner::Closed { failures: 0 });
            }
            (Inner::HalfOpen, false) => {
                let since = self.clock.now();
                self.transition(&mut shared, Inner::Open { since });
            }
            // Admitted in this generation, so never open: only `admit`
            // leaves Open, and it bumps the generation.
            (Inner::Open { .. }, _) => {}
        }
    }

    fn transition(&self, shared: &mut Shared, to: Inner) {
        let from = shared.inner.state();
        shared.inner = to;
        shared.generation = shared.generation.wrapping_add(1);
        let to = to.state();
        self.metrics.state.set(to.as_gauge());
        self.metrics
            .transitions
            .get_or_create(&vec![("to", to.as_str())])
            .inc();
        match to {
            State::Open => tracing::warn!(
                breaker = self.name,
                %from,
                cooldown_ms = self.config.cooldown.as_millis() as u64,
                "circuit opened: calls fail fast until the cool-down has passed"
            ),
            State::HalfOpen => {
                tracing::info!(breaker = self.name, %from, "circuit half-open: one trial call");
            }
            State::Closed => tracing::info!(breaker = self.name, %from, "circuit closed"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding the lock; should it, the state is
        // still consistent (each update is one assignment).
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted call. Dropped without a result (the call panicked), it
/// counts as a failure, so a half-open breaker never waits for a trial that
/// will not report.
struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    recorded: bool,
}

impl Permit<'_> {
    fn record(mut self, success: bool) {
        self.recorded = true;
        self.breaker.record(self.generation, success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.generation, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when told to.
    struct ManualClock {
        start: Instant,
        offset: Mutex<Duration>,
    }

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                start: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
            })
        }

        fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.start + *self.offset.lock().unwrap()
        }
    }

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn breaker(threshold: u32) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::with_clock(
            "test",
            BreakerConfig {
                failure_threshold: threshold,
                cooldown: COOLDOWN,
            },
            BreakerMetrics::default(),
            clock.clone(),
        );
        (breaker, clock)
    }

    fn ok(b: &CircuitBreaker) -> Result<u32, CallError<&'static str>> {
        b.call(|| Ok(7))
    }

    fn fail(b: &CircuitBreaker) -> Result<u32, CallError<&'static str>> {
        b.call(|| Err("down"))
    }

    fn open_it(b: &CircuitBreaker, threshold: u32) {
        for _ in 0..threshold {
            assert_eq!(fail(b), Err(CallError::Failed("down")));
        }
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn opens_after_n_consecutive_failures_and_not_before() {
        let (b, _) = breaker(3);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.metrics().state.get(), 0);
        fail(&b).unwrap_err();
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.metrics().transitions_to(State::Open), 0);
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.metrics().state.get(), 1);
        assert_eq!(b.metrics().transitions_to(State::Open), 1);
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let (b, _) = breaker(3);
        for _ in 0..5 {
            fail(&b).unwrap_err();
            fail(&b).unwrap_err();
            assert_eq!(ok(&b), Ok(7));
        }
        assert_eq!(b.state(), State::Closed);
        fail(&b).unwrap_err();
        fail(&b).unwrap_err();
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn open_fails_fast_without_calling_until_the_cooldown_has_passed() {
        let (b, clock) = breaker(2);
        open_it(&b, 2);
        let mut called = false;
        let result: Result<(), CallError<()>> = b.call(|| {
            called = true;
            Ok(())
        });
        assert!(!called, "an open breaker must not call");
        assert_eq!(
            result,
            Err(CallError::Rejected(Rejected::Open { retry_in: COOLDOWN }))
        );
        clock.advance(COOLDOWN - Duration::from_millis(1));
        assert_eq!(
            ok(&b),
            Err(CallError::Rejected(Rejected::Open {
                retry_in: Duration::from_millis(1)
            }))
        );
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.metrics().transitions_to(State::HalfOpen), 0);
    }

    #[test]
    fn after_the_cooldown_a_successful_trial_closes() {
        let (b, clock) = breaker(2);
        open_it(&b, 2);
        clock.advance(COOLDOWN);
        assert_eq!(ok(&b), Ok(7));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.metrics().state.get(), 0);
        let m = b.metrics();
        assert_eq!(
            (
                m.transitions_to(State::Open),
                m.transitions_to(State::HalfOpen),
                m.transitions_to(State::Closed)
            ),
            (1, 1, 1)
        );
        // Closed afresh: one failure does not reopen a threshold of 2.
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failed_trial_reopens_for_a_whole_cooldown() {
        let (b, clock) = breaker(2);
        open_it(&b, 2);
        clock.advance(COOLDOWN + Duration::from_secs(5));
        assert_eq!(fail(&b), Err(CallError::Failed("down")));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.metrics().state.get(), 1);
        assert_eq!(b.metrics().transitions_to(State::Open), 2);
        // The new cool-down counts from the failed trial.
        clock.advance(COOLDOWN - Duration::from_secs(1));
        assert!(matches!(
            ok(&b),
            Err(CallError::Rejected(Rejected::Open { .. }))
        ));
        clock.advance(Duration::from_secs(1));
        assert_eq!(ok(&b), Ok(7));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_trial_through() {
        let (b, clock) = breaker(1);
        open_it(&b, 1);
        clock.advance(COOLDOWN);
        let inner = b.call(|| {
            // While the trial runs, the breaker is half-open and busy.
            assert_eq!(b.state(), State::HalfOpen);
            assert_eq!(b.metrics().state.get(), 2);
            Ok::<_, ()>(ok(&b))
        });
        assert_eq!(inner, Ok(Err(CallError::Rejected(Rejected::TrialInFlight))));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_panicking_trial_counts_as_a_failure() {
        let (b, clock) = breaker(1);
        open_it(&b, 1);
        clock.advance(COOLDOWN);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), CallError<()>> = b.call(|| panic!("boom"));
        }));
        assert!(panicked.is_err());
        assert_eq!(b.state(), State::Open, "not stuck half-open");
    }

    #[test]
    fn late_results_of_an_earlier_state_are_ignored() {
        let (b, clock) = breaker(2);
        // A call admitted while closed fails only after the breaker opened
        // (and even after a new trial closed it): it changes nothing.
        let late = b.admit().unwrap();
        open_it(&b, 2);
        late.record(false);
        assert_eq!(b.metrics().transitions_to(State::Open), 1);
        clock.advance(COOLDOWN);
        let late_success = b.admit().unwrap(); // the trial
        let stale = Permit {
            breaker: &b,
            generation: 0,
            recorded: false,
        };
        stale.record(true);
        assert_eq!(b.state(), State::HalfOpen);
        late_success.record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_threshold_of_zero_behaves_as_one() {
        let (b, _) = breaker(0);
        assert_eq!(b.config().failure_threshold, 1);
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Open);
    }
}
