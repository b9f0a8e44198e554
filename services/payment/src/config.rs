//! The payment service's defaults and its own variables; what every service
//! reads is `orderflow_service::Config`.

use std::time::Duration;

use orderflow_config::{ConfigError, ServiceDefaults, Source};
pub use orderflow_service::Config;

use crate::breaker::BreakerConfig;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    grpc_addr: "127.0.0.1:50053",
    metrics_addr: "127.0.0.1:9103",
    database: "orderflow_payment",
};

/// Consecutive gateway failures that open the circuit breaker (1..=10000, default 5).
pub const BREAKER_FAILURES: &str = "PAYMENT_BREAKER_FAILURES";
/// How long an open breaker fails charges fast before one trial (a duration
/// with a unit, 1ms..=1h, default 30s).
pub const BREAKER_COOLDOWN: &str = "PAYMENT_BREAKER_COOLDOWN";

const MAX_COOLDOWN: Duration = Duration::from_secs(3_600);

/// # Errors
/// The first variable that is set but invalid.
pub fn from_source(src: &dyn Source) -> Result<Config, ConfigError> {
    Config::from_source(src, DEFAULTS)
}

/// The gateway's circuit breaker: `PAYMENT_BREAKER_FAILURES`,
/// `PAYMENT_BREAKER_COOLDOWN`.
///
/// # Errors
/// The first variable that is set but invalid, named.
pub fn breaker_from_source(src: &dyn Source) -> Result<BreakerConfig, ConfigError> {
    let defaults = BreakerConfig::default();
    let failure_threshold = orderflow_config::in_range_or(
        src,
        BREAKER_FAILURES,
        defaults.failure_threshold,
        1..=10_000,
    )?;
    let cooldown = orderflow_config::duration_or(src, BREAKER_COOLDOWN, defaults.cooldown)?;
    if cooldown.is_zero() || cooldown > MAX_COOLDOWN {
        return Err(ConfigError::Invalid {
            key: BREAKER_COOLDOWN,
            value: src.get(BREAKER_COOLDOWN).unwrap_or_default(),
            reason: "must be between 1ms and 1h".to_owned(),
        });
    }
    Ok(BreakerConfig {
        failure_threshold,
        cooldown,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn breaker(vars: &[(&'static str, &'static str)]) -> Result<BreakerConfig, ConfigError> {
        breaker_from_source(&vars.iter().copied().collect::<HashMap<_, _>>())
    }

    #[test]
    fn breaker_defaults_are_5_failures_and_30s() {
        assert_eq!(
            breaker(&[]),
            Ok(BreakerConfig {
                failure_threshold: 5,
                cooldown: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn breaker_variables_are_read() {
        assert_eq!(
            breaker(&[(BREAKER_FAILURES, "3"), (BREAKER_COOLDOWN, "200ms")]),
            Ok(BreakerConfig {
                failure_threshold: 3,
                cooldown: Duration::from_millis(200)
            })
        );
    }

    #[test]
    fn a_bad_breaker_value_names_its_variable() {
        for (key, value) in [
            (BREAKER_FAILURES, "0"),
            (BREAKER_FAILURES, "many"),
            (BREAKER_FAILURES, "10001"),
            (BREAKER_COOLDOWN, "30"),
            (BREAKER_COOLDOWN, "0s"),
            (BREAKER_COOLDOWN, "2h"),
        ] {
            let err = breaker(&[(key, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, value: v, .. } if *k == key && v == value),
                "{key}={value}: {err:?}"
            );
            assert!(err.to_string().starts_with(key), "{err}");
        }
    }
}
