//! The relay's configuration. Every variable has a local default.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RELAY_SOURCES` | the four local databases: `order=postgres://postgres@127.0.0.1:5432/orderflow_order,inventory=...,payment=...,notification=...` | comma-separated `<service>=<database url>`; events of `<service>` go to exchange `orderflow.<service>` |
//! | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ |
//! | `RELAY_HTTP_ADDR` | `127.0.0.1:8080` | the dashboard, `/metrics`, `/healthz`, `/livez` |
//! | `RELAY_ADMIN_TOKEN` | none | the dashboard's token (at least 16 characters); without it the dashboard is off, and a non-loopback `RELAY_HTTP_ADDR` is refused |
//! | `RELAY_RABBITMQ_MANAGEMENT_URL` | `http://<AMQP_URL's user:password@host>:15672` | RabbitMQ's management API, for queue depths and dead letters |
//! | `RELAY_BATCH_SIZE` | `500` | events per publish batch (per source) |
//! | `RELAY_PIPELINE_DEPTH` | `2` | full batches of events that may await confirms while the next is claimed and sent |
//! | `RELAY_POLL_INTERVAL` | `1s` | fallback when no NOTIFY arrives |
//! | `RELAY_BATCH_LINGER` | `5ms` | after a claim that found less than a full batch, wait this long before the next claim, so events that arrive one by one go out together; `0s`: claim again at once |
//! | `RELAY_LEASE_TTL` | `10s` | a dead replica's partitions are taken over after this |
//! | `RELAY_PUBLISH_TIMEOUT` | `10s` | wait for broker confirms before reconnecting |
//! | `RELAY_MAX_ATTEMPTS` | `10` | failed publishes (nack, unroutable) before an event is parked |
//! | `RELAY_RETRY_BASE` / `RELAY_RETRY_MAX` | `1s` / `5m` | exponential backoff between attempts |
//! | `RELAY_RETENTION` | `168h` | published events are deleted this long after they were written |
//! | `RELAY_LAG_UNHEALTHY` | `60s` | `/healthz` fails when the oldest pending event is older |
//! | `RELAY_VACUUM_EVERY` | `20000` | events a replica publishes between its own vacuums of `outbox_pending`; `0`: leave it to autovacuum |

use std::{net::SocketAddr, time::Duration};

use orderflow_config::{ConfigError, Source, duration_or, in_range_or, parsed_or, string_or};
use orderflow_outbox::relay::RetryPolicy;

/// The four service databases of DESIGN.md, on the local server.
pub const DEFAULT_SOURCES: &str = "order=postgres://postgres@127.0.0.1:5432/orderflow_order,\
     inventory=postgres://postgres@127.0.0.1:5432/orderflow_inventory,\
     payment=postgres://postgres@127.0.0.1:5432/orderflow_payment,\
     notification=postgres://postgres@127.0.0.1:5432/orderflow_notification";

#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The producing service, e.g. `order`.
    pub name: String,
    pub database_url: String,
}

pub use orderflow_config::Secret;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub sources: Vec<SourceConfig>,
    pub amqp_url: String,
    pub http_addr: SocketAddr,
    /// `RELAY_ADMIN_TOKEN`: the dashboard is off without it.
    pub admin_token: Option<Secret>,
    /// RabbitMQ's management API, with credentials.
    pub management_url: String,
    /// The vhost of `amqp_url`, where the consumer queues live.
    pub vhost: String,
    pub batch_size: usize,
    /// Full batches' worth of events that may await their confirms while
    /// the next batch is claimed (`RELAY_PIPELINE_DEPTH`): keeps the broker
    /// busy during database work. Only beyond it does the relay wait for the
    /// broker, so small batches under a light load never wait.
    pub pipeline_depth: usize,
    pub poll_interval: Duration,
    /// `RELAY_BATCH_LINGER`: the pause after a partial batch.
    pub batch_linger: Duration,
    pub lease_ttl: Duration,
    pub publish_timeout: Duration,
    pub retry: RetryPolicy,
    pub retention: Duration,
    pub lag_unhealthy: Duration,
    /// Events published between two vacuums of `outbox_pending` by this
    /// replica (`RELAY_VACUUM_EVERY`); 0 leaves it to autovacuum.
    pub vacuum_every: u64,
}

impl RelayConfig {
    /// # Errors
    /// The first variable that is set but invalid.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let sources = parse_sources(&string_or(src, "RELAY_SOURCES", DEFAULT_SOURCES))?;
        let default_http: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let amqp_url = orderflow_amqp::amqp_url(src);
        let http_addr = parsed_or(src, "RELAY_HTTP_ADDR", default_http)?;
        let admin_token = admin_token(src, http_addr)?;
        let (default_management, vhost) = management_defaults(&amqp_url)?;
        Ok(Self {
            sources,
            http_addr,
            admin_token,
            management_url: string_or(src, "RELAY_RABBITMQ_MANAGEMENT_URL", &default_management),
            vhost,
            amqp_url,
            batch_size: in_range_or(src, "RELAY_BATCH_SIZE", 500, 1..=10_000)?,
            pipeline_depth: in_range_or(src, "RELAY_PIPELINE_DEPTH", 2, 1..=16)?,
            poll_interval: duration_or(src, "RELAY_POLL_INTERVAL", Duration::from_secs(1))?,
            batch_linger: duration_or(src, "RELAY_BATCH_LINGER", Duration::from_millis(5))?,
            lease_ttl: duration_or(src, "RELAY_LEASE_TTL", Duration::from_secs(10))?,
            publish_timeout: duration_or(src, "RELAY_PUBLISH_TIMEOUT", Duration::from_secs(10))?,
            retry: RetryPolicy {
                max_attempts: in_range_or(src, "RELAY_MAX_ATTEMPTS", 10, 1..=1000)?,
                base: duration_or(src, "RELAY_RETRY_BASE", Duration::from_secs(1))?,
                max: duration_or(src, "RELAY_RETRY_MAX", Duration::from_secs(300))?,
            },
            retention: duration_or(src, "RELAY_RETENTION", Duration::from_secs(168 * 3600))?,
            lag_unhealthy: duration_or(src, "RELAY_LAG_UNHEALTHY", Duration::from_secs(60))?,
            vacuum_every: in_range_or(src, "RELAY_VACUUM_EVERY", 20_000, 0..=u64::MAX)?,
        })
    }
}

/// The token, required when the HTTP address is reachable from elsewhere.
fn admin_token(src: &dyn Source, http_addr: SocketAddr) -> Result<Option<Secret>, ConfigError> {
    match orderflow_config::token_or_none(src, "RELAY_ADMIN_TOKEN")? {
        None if !http_addr.ip().is_loopback() => Err(ConfigError::Invalid {
            key: "RELAY_ADMIN_TOKEN",
            value: String::new(),
            reason: format!(
                "required: RELAY_HTTP_ADDR={http_addr} is not a loopback address, and the dashboard must not be open to the network"
            ),
        }),
        token => Ok(token),
    }
}

/// The management API at the AMQP host on port 15672 with the same user,
/// and the AMQP URL's vhost.
fn management_defaults(amqp_url: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "AMQP_URL",
        value: orderflow_db::redact(amqp_url),
        reason,
    };
    let url = url::Url::parse(amqp_url).map_err(|e| invalid(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| invalid("no host".to_owned()))?;
    let vhost = match url.path().trim_start_matches('/') {
        "" => "/".to_owned(),
        path => percent_decode(path),
    };
    let mut management =
        url::Url::parse(&format!("http://{host}:15672")).map_err(|e| invalid(e.to_string()))?;
    let user = if url.username().is_empty() {
        "guest"
    } else {
        url.username()
    };
    let _ = management.set_username(user);
    let _ = management.set_password(Some(url.password().unwrap_or("guest")));
    Ok((management.as_str().trim_end_matches('/').to_owned(), vhost))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
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
    fn management_url_and_vhost_come_from_the_amqp_url() {
        let (m, v) = management_defaults("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            (m.as_str(), v.as_str()),
            ("http://guest:guest@127.0.0.1:15672", "/")
        );
        let (m, v) = management_defaults("amqp://u:p@rabbit:5672/orderflow-test-1").unwrap();
        assert_eq!(
            (m.as_str(), v.as_str()),
            ("http://u:p@rabbit:15672", "orderflow-test-1")
        );
    }

    #[test]
    fn a_public_address_needs_a_token_and_tokens_are_not_printed() {
        let src = HashMap::from([("RELAY_HTTP_ADDR", "0.0.0.0:8080")]);
        let err = RelayConfig::from_source(&src).unwrap_err();
        assert!(err.to_string().contains("RELAY_ADMIN_TOKEN"), "{err}");
        let src = HashMap::from([
            ("RELAY_HTTP_ADDR", "0.0.0.0:8080"),
            ("RELAY_ADMIN_TOKEN", "short"),
        ]);
        let err = RelayConfig::from_source(&src).unwrap_err().to_string();
        assert!(
            err.contains("RELAY_ADMIN_TOKEN") && !err.contains("short"),
            "{err}"
        );
        let src = HashMap::from([
            ("RELAY_HTTP_ADDR", "0.0.0.0:8080"),
            ("RELAY_ADMIN_TOKEN", "0123456789abcdef"),
        ]);
        let config = RelayConfig::from_source(&src).unwrap();
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let loopback =
            RelayConfig::from_source(&HashMap::from([("RELAY_HTTP_ADDR", "127.0.0.1:1")]));
        assert!(loopback.unwrap().admin_token.is_none());
    }

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
