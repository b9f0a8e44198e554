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
use orderflow_telemetry::TraceHeaders;

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
        // Every step has a deadline: a stalled broker makes this attempt
        // fail and the loop retry with backoff, instead of hanging the
        // source for ever.
        let setup = async {
            let conn = orderflow_amqp::connect(&self.url, &self.name).await?;
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Topology::declare_exchange(&channel, &self.service).await?;
            anyhow::Ok((conn, channel))
        };
        let (conn, channel) = tokio::time::timeout(self.timeout, setup)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "RabbitMQ did not set up a channel within {:?}",
                    self.timeout
                )
            })??;
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
        let traces = Traces::start(&events, &self.service, &self.exchange);
        let mut confirms = Vec::with_capacity(events.len());
        let publish_all = async {
            for (i, event) in events.iter().enumerate() {
                let sent = channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        event.event_type.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        event.payload.as_bytes(),
                        properties(event, &self.service, traces.headers(i)),
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
        };
        // A blocked connection (a broker resource alarm) stalls publishes:
        // give up after the timeout; nothing was marked, all is retried.
        if tokio::time::timeout(self.timeout, publish_all)
            .await
            .is_err()
        {
            tracing::warn!(source = %self.service, timeout = ?self.timeout, "publishing stalled; reconnecting");
            traces.finish(&[]);
            self.reset().await;
            anyhow::bail!("publishing stalled for {:?}", self.timeout);
        }
        Ok(InFlight {
            events,
            sent: confirms.len(),
            confirms: Box::pin(futures_util::future::join_all(confirms)),
            answers: None,
            started: std::time::Instant::now(),
            traces,
        })
    }

    /// Waits for the broker's verdict on every event of `batch`, in order,
    /// until its deadline (the publish timeout after it was sent). Drops the
    /// connection when any stays unconfirmed.
    pub async fn settle(
        &mut self,
        mut batch: InFlight,
    ) -> (Vec<PendingEvent>, Vec<Outcome>, Duration) {
        let answered =
            tokio::time::timeout_at(batch.deadline(self.timeout), batch.answered()).await;
        let InFlight {
            events,
            sent,
            answers,
            started,
            traces,
            ..
        } = batch;
        let mut outcomes = match (answered, answers) {
            (Ok(()), Some(results)) => results
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
            _ => {
                tracing::warn!(source = %self.service, timeout = ?self.timeout, "confirms timed out; reconnecting");
                vec![Outcome::Unconfirmed; sent]
            }
        };
        outcomes.resize(events.len(), Outcome::Unconfirmed);
        traces.finish(&outcomes);
        if outcomes.contains(&Outcome::Unconfirmed) {
            self.reset().await;
        }
        (events, outcomes, started.elapsed())
    }
}

type Answers = Vec<lapin::Result<Confirmation>>;

/// A batch sent to the broker whose confirms are outstanding.
pub struct InFlight {
    events: Vec<PendingEvent>,
    /// Events actually handed to the channel (fewer when a publish failed).
    sent: usize,
    confirms: std::pin::Pin<Box<futures_util::future::JoinAll<lapin::PublisherConfirm>>>,
    /// The broker's answers, once all have arrived.
    answers: Option<Answers>,
    started: std::time::Instant,
    traces: Traces,
}

impl InFlight {
    /// Resolves when the broker has answered for every event sent. Safe to
    /// drop and call again (the relay waits for it beside other wake-ups).
    pub async fn answered(&mut self) {
        if self.answers.is_none() {
            self.answers = Some((&mut self.confirms).await);
        }
    }

    /// When the broker's answers are due: `timeout` after the send. Past
    /// it, settling the batch counts what is unanswered as unconfirmed.
    pub fn deadline(&self, timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + timeout)
    }

    /// Whether the broker has answered for every event sent, without waiting.
    pub fn is_answered(&mut self) -> bool {
        use futures_util::FutureExt as _;
        if self.answers.is_none() {
            self.answers = (&mut self.confirms).now_or_never();
        }
        self.answers.is_some()
    }

    /// Events in the batch (never empty: empty claims are not sent).
    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// The batch's span (none when spans are not exported): what settling
    /// the batch does (marking rows published) belongs to it.
    pub fn span(&self) -> tracing::Span {
        self.traces.batch.clone()
    }

    /// The outbox `seq` of each event of this batch.
    pub fn seqs(&self) -> impl Iterator<Item = i64> + '_ {
        self.events.iter().map(|e| e.seq)
    }

    /// The aggregates of this batch: the next batch must not contain them.
    pub fn aggregates(&self) -> impl Iterator<Item = uuid::Uuid> + '_ {
        self.events.iter().map(|e| e.aggregate_id)
    }
}

/// The spans of a batch in flight, when spans are exported.
///
/// A batch carries events of many traces, so its span (`outbox.publish_batch`)
/// starts a trace of its own and *links* to each event's context. Each
/// event gets an `outbox.publish` span that is a child of the context its
/// row carries (the `outbox.append` that wrote it), from the publish to the
/// broker's confirm; its own context travels in the AMQP headers, so the
/// consumer's span is its child and the trace goes on unbroken.
struct Traces {
    batch: tracing::Span,
    events: Vec<(tracing::Span, TraceHeaders)>,
}

impl Traces {
    fn start(events: &[PendingEvent], source: &str, exchange: &str) -> Self {
        if !orderflow_telemetry::exporting() {
            return Self {
                batch: tracing::Span::none(),
                events: Vec::new(),
            };
        }
        let batch = tracing::info_span!(
            parent: None,
            "outbox.publish_batch",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = exchange,
            messaging.batch.message_count = events.len(),
            source = source,
        );
        let events = events
            .iter()
            .map(|event| {
                let stored = row_headers(event);
                orderflow_telemetry::add_link(&batch, &stored);
                let span = tracing::info_span!(
                    parent: None,
                    "outbox.publish",
                    otel.name = %format!("publish {exchange}"),
                    otel.kind = "producer",
                    otel.status_code = tracing::field::Empty,
                    messaging.system = "rabbitmq",
                    messaging.operation = "publish",
                    messaging.destination.name = exchange,
                    messaging.rabbitmq.destination.routing_key = %event.event_type,
                    messaging.message.id = %event.id,
                    outcome = tracing::field::Empty,
                    source = source,
                );
                orderflow_telemetry::set_parent_from(&span, &stored);
                let sent = TraceHeaders::of_span(&span);
                // No valid context of its own (should not happen while
                // exporting): pass the stored one on rather than none.
                let sent = if sent.is_empty() { stored } else { sent };
                (span, sent)
            })
            .collect();
        Self { batch, events }
    }

    /// The trace headers to send with event `i`, if spans are exported.
    fn headers(&self, i: usize) -> Option<&TraceHeaders> {
        self.events.get(i).map(|(_, headers)| headers)
    }

    /// Records each event's outcome and ends its span (those without an
    /// outcome were never confirmed).
    fn finish(&self, outcomes: &[Outcome]) {
        for (i, (span, _)) in self.events.iter().enumerate() {
            let outcome = match outcomes.get(i) {
                Some(Outcome::Confirmed) => "confirmed",
                Some(Outcome::Rejected { reason, .. }) => reason,
                Some(Outcome::Unconfirmed) | None => "unconfirmed",
            };
            span.record("outcome", outcome);
            if outcome != "confirmed" {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// The trace context stored with the event (`outbox.headers`).
fn row_headers(event: &PendingEvent) -> TraceHeaders {
    serde_json::from_str(&event.headers).unwrap_or_default()
}

/// AMQP properties of an outbox event (DESIGN.md, "Messages on RabbitMQ").
/// `trace` is the publish span's context; without one (spans not exported)
/// the context stored with the event is sent as it is.
fn properties(
    event: &PendingEvent,
    service: &str,
    trace: Option<&TraceHeaders>,
) -> BasicProperties {
    let stored;
    let trace = match trace {
        Some(t) => t,
        None => {
            stored = row_headers(event);
            &stored
        }
    };
    let mut headers = FieldTable::default();
    for (key, value) in &trace.0 {
        headers.insert(
            key.as_str().into(),
            AMQPValue::LongString(value.as_str().into()),
        );
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
