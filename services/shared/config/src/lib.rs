#![doc = include_str!("../README.md")]

use std::{collections::HashMap, fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

/// Where configuration strings come from.
pub trait Source: Send + Sync {
    /// The value of `key`, or `None` when it is unset or empty.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        // A non-UTF-8 value is passed on lossily so that parsing rejects it
        // with an error that names the variable.
        let value = std::env::var_os(key)?;
        let value = value.to_string_lossy().into_owned();
        (!value.is_empty()).then_some(value)
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .filter(|v| !v.is_empty())
            .map(|v| (*v).to_owned())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

/// A configuration value that is missing or cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{key} is required")]
    Missing { key: &'static str },
    #[error("{key}={value:?} is not valid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// `key` parsed as `T`, or `default` when unset.
///
/// # Errors
/// [`ConfigError::Invalid`] when the value does not parse.
pub fn parsed_or<T>(src: &dyn Source, key: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match src.get(key) {
        None => Ok(default),
        Some(value) => parse(key, value),
    }
}

/// `key` parsed as `T`; unset is an error.
///
/// # Errors
/// [`ConfigError::Missing`] when unset, [`ConfigError::Invalid`] when it does not parse.
pub fn required<T>(src: &dyn Source, key: &'static str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    let value = src.get(key).ok_or(ConfigError::Missing { key })?;
    parse(key, value)
}

/// `key` as a string, or `default` when unset.
pub fn string_or(src: &dyn Source, key: &'static str, default: &str) -> String {
    src.get(key).unwrap_or_else(|| default.to_owned())
}

/// `key` as a duration with a unit (`250ms`, `5s`, `2m`, `1h`), or `default`.
///
/// # Errors
/// [`ConfigError::Invalid`] when the value has no known unit or is not a number.
pub fn duration_or(
    src: &dyn Source,
    key: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match src.get(key) {
        None => Ok(default),
        Some(value) => parse_duration(&value).map_err(|reason| ConfigError::Invalid {
            key,
            value,
            reason: reason.to_owned(),
        }),
    }
}

/// `key` parsed as `T` and checked against a range.
///
/// # Errors
/// [`ConfigError::Invalid`] when the value does not parse or lies outside `range`.
pub fn in_range_or<T>(
    src: &dyn Source,
    key: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display + Copy,
    T::Err: Display,
{
    let value = parsed_or(src, key, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: format!("must be between {} and {}", range.start(), range.end()),
        })
    }
}

fn parse<T>(key: &'static str, value: String) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            key,
            reason: e.to_string(),
            value,
        })
}

fn parse_duration(value: &str) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a number with a unit: ms, s, m or h (e.g. 5s)";
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or(EXPECTED)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| EXPECTED)?;
    let millis = match unit.trim() {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(EXPECTED),
    };
    millis.map(Duration::from_millis).ok_or("too large")
}

/// A secret: never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An optional bearer token: unset or empty is `None`; a set one must be at
/// least 16 characters without whitespace, and its value is never echoed.
///
/// # Errors
/// A token that is too short or has whitespace.
pub fn token_or_none(src: &dyn Source, key: &'static str) -> Result<Option<Secret>, ConfigError> {
    match src.get(key).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() < 16 || t.chars().any(char::is_whitespace) => {
            Err(ConfigError::Invalid {
                key,
                value: "***".to_owned(),
                reason: "at least 16 characters, no whitespace".to_owned(),
            })
        }
        Some(t) => Ok(Some(Secret::new(t))),
        None => Ok(None),
    }
}

/// Requests per second per client, with a burst (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

pub const DEFAULT_RATE_LIMIT: u32 = 100;

/// What every gRPC service reads. See the crate README for the variables.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` is served (`METRICS_LISTEN_ADDR`).
    pub metrics_addr: SocketAddr,
    pub database_url: String,
    pub pool_size: usize,
    pub pool_timeout: Duration,
    pub statement_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `GRPC_ADMIN_TOKEN`: admin RPCs are refused without it.
    pub admin_token: Option<Secret>,
    /// `GRPC_RATE_LIMIT` / `GRPC_RATE_BURST`; `None` when set to 0.
    pub rate_limit: Option<RateLimit>,
    /// `GRPC_MAX_IN_FLIGHT`: customer calls the server works on at once;
    /// one more is shed at once with RESOURCE_EXHAUSTED. `None` when 0.
    pub max_in_flight: Option<usize>,
}

/// A service's local defaults, from the table in DESIGN.md.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub grpc_addr: &'static str,
    /// `/metrics`: 127.0.0.1:9101 for order .. 9104 for notification.
    pub metrics_addr: &'static str,
    pub database: &'static str,
}

pub const DEFAULT_POOL_SIZE: usize = 16;
/// Customer calls in flight per server before new ones are shed: far above
/// what a healthy server holds (a CreateOrder takes a few ms; a burst of a
/// thousand concurrent calls is worked off in well under a second), and a
/// bound on what an overload can pile up.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

impl ServiceConfig {
    /// # Errors
    /// The first variable that is set but cannot be used.
    pub fn from_source(src: &dyn Source, defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        let default_addr = |key: &'static str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid {
                    key,
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
        };
        Ok(Self {
            grpc_addr: parsed_or(
                src,
                "GRPC_LISTEN_ADDR",
                default_addr("GRPC_LISTEN_ADDR", defaults.grpc_addr)?,
            )?,
            metrics_addr: parsed_or(
                src,
                "METRICS_LISTEN_ADDR",
                default_addr("METRICS_LISTEN_ADDR", defaults.metrics_addr)?,
            )?,
            database_url: string_or(
                src,
                "DATABASE_URL",
                &format!("postgres://postgres@127.0.0.1:5432/{}", defaults.database),
            ),
            pool_size: in_range_or(src, "DATABASE_POOL_SIZE", DEFAULT_POOL_SIZE, 1..=1000)?,
            pool_timeout: duration_or(src, "DATABASE_POOL_TIMEOUT", DEFAULT_POOL_TIMEOUT)?,
            statement_timeout: duration_or(
                src,
                "DATABASE_STATEMENT_TIMEOUT",
                DEFAULT_STATEMENT_TIMEOUT,
            )?,
            shutdown_grace: duration_or(src, "SHUTDOWN_GRACE_PERIOD", DEFAULT_SHUTDOWN_GRACE)?,
            admin_token: token_or_none(src, "GRPC_ADMIN_TOKEN")?,
            rate_limit: rate_limit(src)?,
            max_in_flight: Some(in_range_or(
                src,
                "GRPC_MAX_IN_FLIGHT",
                DEFAULT_MAX_IN_FLIGHT,
                0..=1_000_000,
            )?)
            .filter(|n| *n > 0),
        })
    }
}

fn rate_limit(src: &dyn Source) -> Result<Option<RateLimit>, ConfigError> {
    let per_second = in_range_or(src, "GRPC_RATE_LIMIT", DEFAULT_RATE_LIMIT, 0..=1_000_000)?;
    let burst = in_range_or(
        src,
        "GRPC_RATE_BURST",
        per_second.saturating_mul(2).max(1),
        1..=2_000_000,
    )?;
    Ok((per_second > 0).then_some(RateLimit { per_second, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: ServiceDefaults = ServiceDefaults {
        grpc_addr: "127.0.0.1:50051",
        metrics_addr: "127.0.0.1:9101",
        database: "orderflow_order",
    };

    #[test]
    fn defaults_need_no_variables() {
        let cfg = ServiceConfig::from_source(&HashMap::<&str, &str>::new(), DEFAULTS).unwrap();
        assert_eq!(cfg.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.1:9101");
        assert_eq!(
            cfg.database_url,
            "postgres://postgres@127.0.0.1:5432/orderflow_order"
        );
        assert_eq!(cfg.pool_size, DEFAULT_POOL_SIZE);
    }

    #[test]
    fn an_invalid_value_names_the_variable() {
        let src = HashMap::from([("DATABASE_POOL_SIZE", "many")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DATABASE_POOL_SIZE=\"many\" is not valid"),
            "{err}"
        );

        let src = HashMap::from([("GRPC_LISTEN_ADDR", "localhost")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert!(err.to_string().starts_with("GRPC_LISTEN_ADDR="), "{err}");

        let src = HashMap::from([("DATABASE_POOL_SIZE", "0")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DATABASE_POOL_SIZE=\"0\" is not valid: must be between 1 and 1000"
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        let src = HashMap::from([("SHUTDOWN_GRACE_PERIOD", "soon")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SHUTDOWN_GRACE_PERIOD=\"soon\""),
            "{err}"
        );
    }

    #[test]
    fn admin_token_and_rate_limit() {
        let cfg = ServiceConfig::from_source(&HashMap::<&str, &str>::new(), DEFAULTS).unwrap();
        assert_eq!(cfg.admin_token, None);
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 100,
                burst: 200
            })
        );
        let src = HashMap::from([("GRPC_ADMIN_TOKEN", "short")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GRPC_ADMIN_TOKEN=\"***\" is not valid: at least 16 characters, no whitespace"
        );
        let src = HashMap::from([
            ("GRPC_ADMIN_TOKEN", "a-long-enough-token"),
            ("GRPC_RATE_LIMIT", "0"),
        ]);
        let cfg = ServiceConfig::from_source(&src, DEFAULTS).unwrap();
        assert_eq!(cfg.admin_token.unwrap().expose(), "a-long-enough-token");
        assert_eq!(cfg.rate_limit, None);
        let src = HashMap::from([("GRPC_RATE_BURST", "0")]);
        let err = ServiceConfig::from_source(&src, DEFAULTS).unwrap_err();
        assert!(err.to_string().starts_with("GRPC_RATE_BURST="), "{err}");
    }

    #[test]
    fn empty_means_unset() {
        let src = HashMap::from([("DATABASE_URL", "")]);
        let cfg = ServiceConfig::from_source(&src, DEFAULTS).unwrap();
        assert!(cfg.database_url.ends_with("/orderflow_order"));
    }

    #[test]
    fn required_reports_a_missing_variable() {
        let src = HashMap::<&str, &str>::new();
        assert_eq!(
            required::<u16>(&src, "PORT").unwrap_err(),
            ConfigError::Missing { key: "PORT" }
        );
    }
}
