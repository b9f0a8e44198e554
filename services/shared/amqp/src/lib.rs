#![doc = include_str!("../README.md")]

use anyhow::Context as _;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind, options::ExchangeDeclareOptions,
    types::FieldTable,
};
use orderflow_config::Source;

pub use lapin;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `AMQP_URL` or the local default.
pub fn amqp_url(src: &dyn Source) -> String {
    orderflow_config::string_or(src, "AMQP_URL", DEFAULT_AMQP_URL)
}

/// Names of exchanges and queues.
#[derive(Debug, Clone, Copy, Default)]
pub struct Topology;

impl Topology {
    /// The topic exchange a service publishes its events to.
    pub fn exchange(service: &str) -> String {
        format!("orderflow.{service}")
    }

    /// Declares `service`'s exchange (idempotent).
    ///
    /// # Errors
    /// When the broker refuses or the channel is closed.
    pub async fn declare_exchange(channel: &Channel, service: &str) -> lapin::Result<()> {
        channel
            .exchange_declare(
                Self::exchange(service).as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }
}

/// Opens a connection named `name`, with a 10 s heartbeat.
///
/// # Errors
/// When the broker is unreachable or refuses the credentials.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let url = with_heartbeat(url);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(&url, props)
        .await
        .with_context(|| format!("cannot connect to RabbitMQ at {}", redact(&url)))
}

fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat=10")
    } else {
        format!("{url}?heartbeat=10")
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(Topology::exchange("order"), "orderflow.order");
        assert_eq!(with_heartbeat("amqp://h/%2f"), "amqp://h/%2f?heartbeat=10");
        assert_eq!(
            with_heartbeat("amqp://h/v?x=1"),
            "amqp://h/v?x=1&heartbeat=10"
        );
        assert_eq!(
            redact("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
    }
}
