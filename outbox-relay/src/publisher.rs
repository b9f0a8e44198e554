//! Publishing to RabbitMQ with publisher confirms, pipelined: a whole batch
//! is sent before any confirm is awaited, and the next batch is sent while
//! the previous one's confirms are outstanding.
//!
//! Outcomes are kept apart by whose fault they are. A nack or a return
//! (unroutable, `mandatory` set) is the event's: it counts as an attempt and
//! may park the event. A lost connection or a confirm timeout is the
//! broker's: the event stays pending with no attempt counted, the connection
//! is dropped and rebuilt, so a broker outage never parks events.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use orderflow_amqp::{Topology, lapin};
use orderflow_outbox::relay::PendingEvent;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    /// The broker refused it; the reason is stored in `last_error`.
    Rejected {
        reason: &'static str,
        error: String,
    },
    /// The broker went away before confirming; try again later.
    Unconfirmed,
}

pub struct Publisher {
    url: String,
    name: String,
    service: String,
    exchange: String,
    timeout: Duration,
    link: Option<(Connection, Channel)>,
}

impl Publisher {
    pub fn new(url: &str, service: &str, timeout: Duration) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("outbox-relay/{service}"),
            service: service.to_owned(),
            exchange: Topology::exchange(service),
            timeout,
            link: None,
        }
    }

    async fn channel(&mut self) -> anyhow::Result<Channel> {
        if let Some((conn, channel)) = &self.link
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        self.link = None;
        let conn = orderflow_amqp::connect(&self.url, &self.name).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Topology::declare_exchange(&channel, &self.service).await?;
        tracing::info!(source = %self.service, exchange = %self.exchange, "connected to RabbitMQ");
        self.link = Some((conn, channel.clone()));
        Ok(channel)
    }

    /// Drops the connection; the next publish reconnects.
    pub async fn reset(&mut self) {
        if let Some((conn, _)) = self.link.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                conn.close(320, "relay reconnecting".into()),
            )
            .await;
        }
    }

    /// Sends `events` in order without waiting for the broker; the returned
    /// [`InFlight`] yields their outcomes. Sending the next batch before
    /// settling this one keeps the broker and the database busy at once.
    ///
    /// # Errors
    /// When no connection can be made; nothing was sent then.
    pub async fn send(&mut self, events: Vec<PendingEvent>) -> anyhow::Result<InFlight> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(events.len());
        for event in &events {
            let sent = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    event.payload.as_bytes(),
                    properties(event, &self.service),
                )
                .await;
            match sent {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    tracing::warn!(source = %self.service, error = %e, "publish failed; reconnecting");
                    break;
                }
            }
        }
        Ok(InFlight {
            events,
            confirms,
            started: std::time::Instant::now(),
        })
    }

    /// Waits for the broker's verdict on every event of `batch`, in order.
    /// Drops the connection when any stays unconfirmed.
    pub async fn settle(&mut self, batch: InFlight) -> (Vec<PendingEvent>, Vec<Outcome>, Duration) {
        let InFlight {
            events,
            confirms,
            started,
        } = batch;
        let sent = confirms.len();
        let results =
            tokio::time::timeout(self.timeout, futures_util::future::join_all(confirms)).await;
        let mut outcomes = match results {
            Ok(results) => results
                .into_iter()
                .map(|r| match r {
                    Ok(Confirmation::Ack(None)) => Outcome::Confirmed,
                    Ok(Confirmation::Ack(Some(returned))) => Outcome::Rejected {
                        reason: "unroutable",
                        error: format!(
                            "unroutable: {} {} (no queue is bound to exchange {} for routing key {})",
                            returned.reply_code, returned.reply_text, self.exchange, returned.delivery.routing_key
                        ),
                    },
                    Ok(Confirmation::Nack(_)) => {
                        Outcome::Rejected { reason: "nack", error: "nacked by the broker".to_owned() }
                    }
                    Ok(Confirmation::NotRequested) | Err(_) => Outcome::Unconfirmed,
                })
                .collect(),
            Err(_) => {
                tracing::warn!(source = %self.service, timeout = ?self.timeout, "confirms timed out; reconnecting");
                vec![Outcome::Unconfirmed; sent]
            }
        };
        outcomes.resize(events.len(), Outcome::Unconfirmed);
        if outcomes.contains(&Outcome::Unconfirmed) {
            self.reset().await;
        }
        (events, outcomes, started.elapsed())
    }
}

/// A batch sent to the broker whose confirms are outstanding.
pub struct InFlight {
    events: Vec<PendingEvent>,
    confirms: Vec<lapin::PublisherConfirm>,
    started: std::time::Instant,
}

impl InFlight {
    /// The aggregates of this batch: the next batch must not contain them.
    pub fn aggregates(&self) -> impl Iterator<Item = uuid::Uuid> + '_ {
        self.events.iter().map(|e| e.aggregate_id)
    }
}

/// AMQP properties of an outbox event (DESIGN.md, "Messages on RabbitMQ").
fn properties(event: &PendingEvent, service: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Ok(trace) =
        serde_json::from_str::<std::collections::BTreeMap<String, String>>(&event.headers)
    {
        for (key, value) in trace {
            headers.insert(
                key.as_str().into(),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
    }
    BasicProperties::default()
        .with_message_id(event.id.to_string().as_str().into())
        .with_type(event.event_type.as_str().into())
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(event.created_at.timestamp()).unwrap_or(0))
        .with_app_id(format!("orderflow-{service}").as_str().into())
        .with_headers(headers)
}
