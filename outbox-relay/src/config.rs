//! The relay's configuration. Every variable has a local default.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RELAY_SOURCES` | `order=postgres://postgres@127.0.0.1:5432/orderflow_order` | comma-separated `<service>=<database url>`; events of `<service>` go to exchange `orderflow.<service>` |
//! | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ |
//! | `RELAY_HTTP_ADDR` | `127.0.0.1:8080` | `/metrics`, `/healthz`, `/livez` |
//! | `RELAY_BATCH_SIZE` | `500` | events per publish batch (per source) |
//! | `RELAY_POLL_INTERVAL` | `1s` | fallback when no NOTIFY arrives |
//! | `RELAY_LEASE_TTL` | `10s` | a dead replica's partitions are taken over after this |
//! | `RELAY_PUBLISH_TIMEOUT` | `10s` | wait for broker confirms before reconnecting |
//! | `RELAY_MAX_ATTEMPTS` | `10` | failed publishes (nack, unroutable) before an event is parked |
//! | `RELAY_RETRY_BASE` / `RELAY_RETRY_MAX` | `1s` / `5m` | exponential backoff between attempts |
//! | `RELAY_RETENTION` | `168h` | published rows are deleted after this |
//! | `RELAY_LAG_UNHEALTHY` | `60s` | `/healthz` fails when the oldest pending event is older |

use std::{net::SocketAddr, time::Duration};

use orderflow_config::{ConfigError, Source, duration_or, in_range_or, parsed_or, string_or};
use orderflow_outbox::relay::RetryPolicy;

pub const DEFAULT_SOURCES: &str = "order=postgres://postgres@127.0.0.1:5432/orderflow_order";

#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The producing service, e.g. `order`.
    pub name: String,
    pub database_url: String,
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub sources: Vec<SourceConfig>,
    pub amqp_url: String,
    pub http_addr: SocketAddr,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub lease_ttl: Duration,
    pub publish_timeout: Duration,
    pub retry: RetryPolicy,
    pub retention: Duration,
    pub lag_unhealthy: Duration,
}

impl RelayConfig {
    /// # Errors
    /// The first variable that is set but invalid.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let sources = parse_sources(&string_or(src, "RELAY_SOURCES", DEFAULT_SOURCES))?;
        let default_http: SocketAddr = ([127, 0, 0, 1], 8080).into();
        Ok(Self {
            sources,
            amqp_url: orderflow_amqp::amqp_url(src),
            http_addr: parsed_or(src, "RELAY_HTTP_ADDR", default_http)?,
            batch_size: in_range_or(src, "RELAY_BATCH_SIZE", 500, 1..=10_000)?,
            poll_interval: duration_or(src, "RELAY_POLL_INTERVAL", Duration::from_secs(1))?,
            lease_ttl: duration_or(src, "RELAY_LEASE_TTL", Duration::from_secs(10))?,
            publish_timeout: duration_or(src, "RELAY_PUBLISH_TIMEOUT", Duration::from_secs(10))?,
            retry: RetryPolicy {
                max_attempts: in_range_or(src, "RELAY_MAX_ATTEMPTS", 10, 1..=1000)?,
                base: duration_or(src, "RELAY_RETRY_BASE", Duration::from_secs(1))?,
                max: duration_or(src, "RELAY_RETRY_MAX", Duration::from_secs(300))?,
            },
            retention: duration_or(src, "RELAY_RETENTION", Duration::from_secs(168 * 3600))?,
            lag_unhealthy: duration_or(src, "RELAY_LAG_UNHEALTHY", Duration::from_secs(60))?,
        })
    }
}

fn parse_sources(value: &str) -> Result<Vec<SourceConfig>, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key: "RELAY_SOURCES",
        value: orderflow_db::redact(value),
        reason: reason.to_owned(),
    };
    let mut sources = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| invalid("expected <service>=<database url>, comma-separated"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(
                "a service name is lower-case letters, digits and '-'",
            ));
        }
        if sources.iter().any(|s: &SourceConfig| s.name == name) {
            return Err(invalid("a service is listed twice"));
        }
        sources.push(SourceConfig {
            name: name.to_owned(),
            database_url: url.to_owned(),
        });
    }
    if sources.is_empty() {
        return Err(invalid("at least one source is required"));
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let cfg = RelayConfig::from_source(&HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(cfg.sources[0].name, "order");
        assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:8080");
        for bad in ["order", "=postgres://x", "Order=x", "a=x,a=y", ","] {
            let err =
                RelayConfig::from_source(&HashMap::from([("RELAY_SOURCES", bad)])).unwrap_err();
            assert!(
                err.to_string().starts_with("RELAY_SOURCES="),
                "{bad}: {err}"
            );
        }
        let err = RelayConfig::from_source(&HashMap::from([(
            "RELAY_SOURCES",
            "a=postgres://u:secret@h/db,b",
        )]))
        .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let err =
            RelayConfig::from_source(&HashMap::from([("RELAY_BATCH_SIZE", "0")])).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_BATCH_SIZE="), "{err}");
    }
}
