#![doc = include_str!("../README.md")]

use anyhow::Context as _;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
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

    /// The work queue of one consumer handler: `<service>.<handler>`.
    pub fn queue(service: &str, handler: &str) -> String {
        format!("{service}.{handler}")
    }

    /// The `index`-th retry (delay) queue of a work queue: `<queue>.retry.<index>`.
    pub fn retry_queue(queue: &str, index: usize) -> String {
        format!("{queue}.retry.{index}")
    }

    /// The parking-lot queue of a work queue: `<queue>.dlq`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// Where events that no queue is bound for go (the alternate exchange
    /// of every producer exchange), and the queue that keeps them.
    pub const UNROUTED: &'static str = "orderflow.unrouted";
    /// How long and how many unrouted events are kept for inspection or replay.
    const UNROUTED_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
    const UNROUTED_MAX: i64 = 1_000_000;

    /// Declares `service`'s exchange (idempotent), with [`Self::UNROUTED`]
    /// as its alternate exchange.
    ///
    /// An event nobody subscribes to (yet) is normal in publish/subscribe,
    /// e.g. `inventory.stock_adjusted`: it lands in the `orderflow.unrouted`
    /// queue (kept 7 days, at most a million) instead of being returned to
    /// the relay, which would retry and finally park it, raising the lag.
    ///
    /// # Errors
    /// When the broker refuses (for example an `orderflow.<service>`
    /// exchange declared earlier without the alternate exchange: delete it
    /// once, the consumers rebind their queues) or the channel is closed.
    pub async fn declare_exchange(channel: &Channel, service: &str) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                Self::UNROUTED.into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let mut queue_args = FieldTable::default();
        queue_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        queue_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(Self::UNROUTED_TTL_MS),
        );
        queue_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(Self::UNROUTED_MAX),
        );
        channel
            .queue_declare(
                Self::UNROUTED.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_args,
            )
            .await?;
        channel
            .queue_bind(
                Self::UNROUTED.into(),
                Self::UNROUTED.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(Self::UNROUTED.into()),
        );
        channel
            .exchange_declare(
                Self::exchange(service).as_str().into(),
                ExchangeKind::Topic,
                durable,
                args,
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
    // A broker that accepts TCP but stalls the AMQP handshake (overloaded,
    // or a half-open connection) must not hang the caller for ever.
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, props))
        .await
        .map_err(|_| anyhow::anyhow!("no AMQP handshake within {CONNECT_TIMEOUT:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to RabbitMQ at {}", redact(&url)))
}

/// How long [`connect`] waits for the broker's handshake.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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
        let queue = Topology::queue("inventory", "reserve-stock");
        assert_eq!(queue, "inventory.reserve-stock");
        assert_eq!(
            Topology::retry_queue(&queue, 1),
            "inventory.reserve-stock.retry.1"
        );
        assert_eq!(
            Topology::dead_letter_queue(&queue),
            "inventory.reserve-stock.dlq"
        );
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
