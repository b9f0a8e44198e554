//! The queues of one handler, declared idempotently at start and after every
//! reconnect.
//!
//! ```text
//! orderflow.<producer> --E::TYPE--> <service>.<handler>          (work, quorum)
//!        retry i:  <queue>.retry.<i>  --TTL--> "" / <queue>        (quorum)
//!        parking:  <queue>.dlq                                     (quorum)
//! ```
//!
//! Every queue is a quorum queue (replicated, durable). Delay queues
//! dead-letter `at-least-once` (which needs `x-overflow: reject-publish`), so
//! a broker crash while a message moves back to the work queue cannot lose
//! it. The work queue itself dead-letters into its DLQ once a message was
//! handed out [`DELIVERY_LIMIT`] times without an ack: a message that kills
//! the consumer process each time is parked instead of looping forever.

use anyhow::Context as _;
use orderflow_amqp::{
    Topology,
    lapin::{
        self, Channel, ErrorKind,
        options::{QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable, ShortString},
    },
};

/// Deliveries of one message without an ack (crashes, lost connections)
/// before the broker parks it in the DLQ. Far above what reconnects cause.
pub const DELIVERY_LIMIT: i64 = 50;

/// The names one handler's messages travel through.
#[derive(Debug, Clone)]
pub(crate) struct Queues {
    pub exchange: String,
    pub producer: &'static str,
    pub routing_key: &'static str,
    pub work: String,
    pub retries: Vec<String>,
    pub dlq: String,
}

impl Queues {
    /// # Errors
    /// When a name is longer than AMQP allows (255 bytes).
    pub fn new(
        service: &str,
        handler: &str,
        producer: &'static str,
        routing_key: &'static str,
        retry_queues: usize,
    ) -> anyhow::Result<Self> {
        let work = Topology::queue(service, handler);
        let queues = Self {
            exchange: Topology::exchange(producer),
            producer,
            routing_key,
            retries: (0..retry_queues)
                .map(|i| Topology::retry_queue(&work, i))
                .collect(),
            dlq: Topology::dead_letter_queue(&work),
            work,
        };
        for name in queues
            .retries
            .iter()
            .chain([&queues.work, &queues.dlq, &queues.exchange])
            .map(String::as_str)
            .chain([routing_key])
        {
            ShortString::try_new(name)
                .map_err(|_| anyhow::anyhow!("AMQP name longer than 255 bytes: {name}"))?;
        }
        Ok(queues)
    }

    /// The delay queue for a message that failed `failures` times (>= 1):
    /// the first delay after the first failure, the last one repeating.
    pub fn retry_for(&self, failures: u32) -> Option<&str> {
        let index = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
        self.retries
            .get(index.min(self.retries.len().saturating_sub(1)))
            .map(String::as_str)
    }
}

/// A declaration the broker refused because the queue exists with other
/// arguments (HTTP-like 406): retrying cannot help, an operator must act.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Incompatible(String);

/// Declares the producer's exchange and `queues` on `channel`.
///
/// # Errors
/// [`Incompatible`] (inside the `anyhow::Error`) when a queue exists with
/// other arguments; a broker or connection error otherwise.
pub(crate) async fn declare(
    channel: &Channel,
    queues: &Queues,
    delays: &[std::time::Duration],
) -> anyhow::Result<()> {
    Topology::declare_exchange(channel, queues.producer)
        .await
        .with_context(|| format!("cannot declare exchange {}", queues.exchange))?;

    queue(channel, &queues.dlq, quorum()).await?;

    let mut work = quorum();
    dead_letter_to(&mut work, &queues.dlq);
    work.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    queue(channel, &queues.work, work).await?;

    for (name, delay) in queues.retries.iter().zip(delays) {
        let mut args = quorum();
        dead_letter_to(&mut args, &queues.work);
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        queue(channel, name, args).await.map_err(|e| {
            if e.is::<Incompatible>() {
                e.context("(a changed CONSUMER_RETRY_DELAYS_MS changes the TTL of the delay queues: delete the old queue once it is empty)")
            } else {
                e
            }
        })?;
    }

    channel
        .queue_bind(
            queues.work.as_str().into(),
            queues.exchange.as_str().into(),
            queues.routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot bind {} to {} with {}",
                queues.work, queues.exchange, queues.routing_key
            )
        })?;
    Ok(())
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// Dead letters go to `target` through the default exchange, at least once.
fn dead_letter_to(args: &mut FieldTable, target: &str) {
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(target.into()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(drop)
        .map_err(|e| {
            if is_precondition_failed(&e) {
                anyhow::Error::new(Incompatible(format!(
                    "queue {name} exists with other arguments: {e}"
                )))
            } else {
                anyhow::Error::new(e).context(format!("cannot declare queue {name}"))
            }
        })
}

fn is_precondition_failed(err: &lapin::Error) -> bool {
    matches!(err.kind(), ErrorKind::ProtocolError(e) if e.get_id() == 406)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_and_retry_choice() {
        let q = Queues::new("inventory", "reserve-stock", "order", "order.placed", 3).unwrap();
        assert_eq!(q.exchange, "orderflow.order");
        assert_eq!(q.work, "inventory.reserve-stock");
        assert_eq!(q.dlq, "inventory.reserve-stock.dlq");
        assert_eq!(q.retry_for(1), Some("inventory.reserve-stock.retry.0"));
        assert_eq!(q.retry_for(3), Some("inventory.reserve-stock.retry.2"));
        assert_eq!(q.retry_for(9), Some("inventory.reserve-stock.retry.2"));
        let long = "x".repeat(250);
        assert!(Queues::new("svc", &long, "order", "order.placed", 1).is_err());
    }
}
