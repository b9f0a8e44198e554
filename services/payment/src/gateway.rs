//! The simulated card gateway: deterministic rules ([`authorize`], a pure
//! function), so every outcome of the saga can be provoked on purpose,
//! including an outage (see README.md). Nothing leaves the process.
//!
//! The handlers call it through a [`Gateway`]: the rules behind a circuit
//! breaker ([`crate::breaker`]) whose state is on /metrics. One per process
//! ([`process`]): replicas do not share their breakers.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use uuid::Uuid;

use crate::breaker::{BreakerConfig, BreakerMetrics, CallError, CircuitBreaker, Clock, Rejected};

/// The gateway fails as in an outage (an error, not a decline): the charge
/// is retried later, and the failures open the circuit breaker.
pub const TOKEN_GATEWAY_ERROR: &str = "tok_gateway_error";
/// Always declined: "card declined".
pub const TOKEN_DECLINED: &str = "tok_declined";
/// Always declined: "insufficient funds".
pub const TOKEN_INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
/// The largest amount approved, in minor units (10,000.00 in a currency with
/// two decimals). The gateway knows no exchange rates: the limit is in minor
/// units whatever the currency.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000;

/// A charge as the gateway sees it.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// Our payment id, sent as the idempotency key; the reference of an
    /// approved charge derives from it, so a replay gets the same reference.
    pub payment_id: Uuid,
    pub token: &'a str,
    pub amount_minor: i64,
}

/// The gateway's answer: both are outcomes (a payment row and an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved { reference: String },
    Declined { reason: String },
}

/// The gateway did not answer: no decision was taken, try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment gateway unavailable: {0}")]
pub struct GatewayUnavailable(pub String);

/// The rules, first match wins: the outage token, the two declining tokens,
/// then the amount limit; anything else (`tok_visa`, an empty token) is
/// approved.
///
/// # Errors
/// [`GatewayUnavailable`] for [`TOKEN_GATEWAY_ERROR`], whatever the amount.
pub fn authorize(charge: Charge<'_>) -> Result<Decision, GatewayUnavailable> {
    let declined = |reason: &str| {
        Ok(Decision::Declined {
            reason: reason.to_owned(),
        })
    };
    match charge.token {
        TOKEN_GATEWAY_ERROR => Err(GatewayUnavailable(format!(
            "simulated outage ({TOKEN_GATEWAY_ERROR})"
        ))),
        TOKEN_DECLINED => declined("card declined"),
        TOKEN_INSUFFICIENT_FUNDS => declined("insufficient funds"),
        _ if charge.amount_minor > MAX_AMOUNT_MINOR => declined("amount over the limit"),
        _ => Ok(Decision::Approved {
            reference: format!("sim_{}", charge.payment_id.simple()),
        }),
    }
}

/// Why a charge got no decision. Both are transient: the message is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    /// The gateway was called and failed.
    #[error(transparent)]
    Unavailable(#[from] GatewayUnavailable),
    /// The gateway was not called: its circuit breaker is open.
    #[error("payment gateway not called: {0}")]
    CircuitOpen(#[from] Rejected),
}

type Labels = Vec<(&'static str, &'static str)>;

/// The `outcome` label of `payment_gateway_calls_total`.
const OUTCOMES: [&str; 4] = ["approved", "declined", "error", "rejected"];

/// The gateway behind its circuit breaker, with their series.
#[derive(Debug)]
pub struct Gateway {
    breaker: CircuitBreaker,
    /// Calls by `outcome`: approved, declined, error, rejected.
    calls: Family<Labels, Counter>,
}

impl Gateway {
    pub fn new(config: BreakerConfig) -> Self {
        Self::from_breaker(CircuitBreaker::new(
            "payment-gateway",
            config,
            BreakerMetrics::default(),
        ))
    }

    /// With a clock of the caller's, for tests.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::from_breaker(CircuitBreaker::with_clock(
            "payment-gateway",
            config,
            BreakerMetrics::default(),
            clock,
        ))
    }

    fn from_breaker(breaker: CircuitBreaker) -> Self {
        let calls = Family::<Labels, Counter>::default();
        for outcome in OUTCOMES {
            drop(calls.get_or_create(&vec![("outcome", outcome)]));
        }
        Self { breaker, calls }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Asks the gateway unless the breaker is open. A decline is a success
    /// for the breaker (the gateway answered); only an outage is a failure.
    ///
    /// # Errors
    /// [`ChargeError`]: no decision was taken.
    pub fn charge(&self, charge: Charge<'_>) -> Result<Decision, ChargeError> {
        let result = self.breaker.call(|| authorize(charge));
        let outcome = match &result {
            Ok(Decision::Approved { .. }) => "approved",
            Ok(Decision::Declined { .. }) => "declined",
            Err(CallError::Failed(_)) => "error",
            Err(CallError::Rejected(_)) => "rejected",
        };
        self.calls.get_or_create(&vec![("outcome", outcome)]).inc();
        result.map_err(|e| match e {
            CallError::Failed(e) => ChargeError::Unavailable(e),
            CallError::Rejected(e) => ChargeError::CircuitOpen(e),
        })
    }

    /// Charges so far that ended with `outcome` (approved, declined, error,
    /// rejected).
    pub fn calls(&self, outcome: &'static str) -> u64 {
        self.calls.get_or_create(&vec![("outcome", outcome)]).get()
    }

    /// `payment_gateway_circuit_state`,
    /// `payment_gateway_circuit_transitions_total{to}` and
    /// `payment_gateway_calls_total{outcome}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let metrics = self.breaker.metrics();
        registry.register(
            "payment_gateway_circuit_state",
            "State of this process's circuit breaker around the payment gateway: \
             0 closed, 1 open (charges fail fast and are retried later), 2 half-open (one trial charge)",
            metrics.state.clone(),
        );
        registry.register(
            "payment_gateway_circuit_transitions",
            "Transitions of the payment gateway's circuit breaker, by the state entered (to: closed, open, half_open)",
            metrics.transitions.clone(),
        );
        registry.register(
            "payment_gateway_calls",
            "Charges asked of the payment gateway, by outcome: approved, declined, \
             error (gateway failure), rejected (not called: circuit open)",
            self.calls.clone(),
        );
    }
}

static PROCESS: OnceLock<Arc<Gateway>> = OnceLock::new();

/// Sets the breaker of this process's gateway; call it before anything
/// uses [`process`] (before `Application::build`, which registers its
/// metrics).
///
/// # Errors
/// When the process gateway exists already (with the default or an
/// earlier configuration).
pub fn configure_process(config: BreakerConfig) -> anyhow::Result<()> {
    PROCESS
        .set(Arc::new(Gateway::new(config)))
        .map_err(|_| anyhow::anyhow!("the process's payment gateway is configured already"))
}

/// This process's gateway: the one the `charge` handler calls and
/// `/metrics` shows. The default configuration unless [`configure_process`]
/// came first.
pub fn process() -> Arc<Gateway> {
    PROCESS
        .get_or_init(|| Arc::new(Gateway::new(BreakerConfig::default())))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(token: &str, amount_minor: i64) -> Decision {
        authorize(charge(token, amount_minor)).unwrap()
    }

    fn charge(token: &str, amount_minor: i64) -> Charge<'_> {
        Charge {
            payment_id: Uuid::nil(),
            token,
            amount_minor,
        }
    }

    fn declined(reason: &str) -> Decision {
        Decision::Declined {
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn declining_tokens() {
        assert_eq!(decide("tok_declined", 100), declined("card declined"));
        assert_eq!(
            decide("tok_insufficient_funds", 100),
            declined("insufficient funds")
        );
        // The token rule wins over the amount rule.
        assert_eq!(decide("tok_declined", 5_000_000), declined("card declined"));
    }

    #[test]
    fn the_amount_limit_is_inclusive() {
        assert!(matches!(
            decide("tok_visa", MAX_AMOUNT_MINOR),
            Decision::Approved { .. }
        ));
        assert_eq!(
            decide("tok_visa", MAX_AMOUNT_MINOR + 1),
            declined("amount over the limit")
        );
    }

    #[test]
    fn anything_else_is_approved_with_a_stable_reference() {
        let id = Uuid::new_v4();
        for token in ["tok_visa", "", "tok_mastercard"] {
            let charge = Charge {
                payment_id: id,
                token,
                amount_minor: 2500,
            };
            assert_eq!(
                authorize(charge),
                Ok(Decision::Approved {
                    reference: format!("sim_{}", id.simple())
                })
            );
        }
        assert!(matches!(decide("tok_visa", 0), Decision::Approved { .. }));
    }

    #[test]
    fn the_outage_token_fails_whatever_the_amount() {
        for amount in [0, 2500, MAX_AMOUNT_MINOR + 1] {
            let err = authorize(charge(TOKEN_GATEWAY_ERROR, amount)).unwrap_err();
            assert!(err.to_string().contains("tok_gateway_error"), "{err}");
        }
    }

    struct FrozenClock(std::time::Instant);

    impl Clock for FrozenClock {
        fn now(&self) -> std::time::Instant {
            self.0
        }
    }

    #[test]
    fn outages_open_the_breaker_and_declines_do_not() {
        let gateway = Gateway::with_clock(
            BreakerConfig {
                failure_threshold: 2,
                cooldown: std::time::Duration::from_secs(30),
            },
            Arc::new(FrozenClock(std::time::Instant::now())),
        );
        // Declines are answers: many of them keep the breaker closed.
        for _ in 0..5 {
            assert!(matches!(
                gateway.charge(charge(TOKEN_DECLINED, 100)),
                Ok(Decision::Declined { .. })
            ));
        }
        assert!(matches!(
            gateway.charge(charge(TOKEN_GATEWAY_ERROR, 100)),
            Err(ChargeError::Unavailable(_))
        ));
        assert_eq!(gateway.breaker().state(), crate::breaker::State::Closed);
        assert!(matches!(
            gateway.charge(charge(TOKEN_GATEWAY_ERROR, 100)),
            Err(ChargeError::Unavailable(_))
        ));
        assert_eq!(gateway.breaker().state(), crate::breaker::State::Open);
        // Open: even a good card is not sent to the gateway.
        assert!(matches!(
            gateway.charge(charge("tok_visa", 100)),
            Err(ChargeError::CircuitOpen(Rejected::Open { .. }))
        ));
        assert_eq!(OUTCOMES.map(|o| gateway.calls(o)), [0, 5, 2, 1]);
    }

    #[test]
    fn the_series_are_registered_with_their_names() {
        let gateway = Gateway::new(BreakerConfig::default());
        gateway.charge(charge("tok_visa", 1)).unwrap();
        let mut registry = Registry::default();
        gateway.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE payment_gateway_circuit_state gauge",
            "payment_gateway_circuit_state 0",
            "# TYPE payment_gateway_circuit_transitions counter",
            "payment_gateway_circuit_transitions_total{to=\"open\"} 0",
            "payment_gateway_calls_total{outcome=\"approved\"} 1",
            "payment_gateway_calls_total{outcome=\"rejected\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
