//! The runtime loop: connect, declare, consume each handler's queue with up
//! to `prefetch` deliveries in flight, reconnect with capped exponential
//! backoff, and on shutdown stop consuming and let the handlers in flight
//! finish.

use std::{
    collections::HashSet, future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use orderflow_amqp::lapin::{
    self, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::FieldTable,
};
use orderflow_events::Event as _;
use tokio::{sync::watch, task::JoinSet};
use tracing::Instrument as _;

use crate::{
    ConsumerConfig, ConsumerMetrics, FailureKind, Handler, HandlerError,
    delivery::{self, Meta},
    inbox::{self, Applied},
    retry::{self, Republisher},
    topology::{self, Incompatible, Queues},
};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long closing steps (cancel, close) may take on a broker that is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before handing a message back when its retry or DLQ publish
/// failed, so a broker refusing publishes does not become a hot loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handler with its types erased, so one runtime holds them all.
pub(crate) trait Route: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn producer(&self) -> &'static str;
    fn routing_key(&self) -> &'static str;
    /// Handles one delivery to its end: acked, or handed back to the broker.
    fn process(self: Arc<Self>, delivery: Delivery, queue: Arc<QueueContext>) -> BoxFuture;
}

struct HandlerRoute<H>(H);

pub(crate) fn route<H: Handler>(handler: H) -> Arc<dyn Route> {
    Arc::new(HandlerRoute(handler))
}

impl<H: Handler> Route for HandlerRoute<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }

    fn producer(&self) -> &'static str {
        H::Event::producer()
    }

    fn routing_key(&self) -> &'static str {
        <H::Event as orderflow_events::Event>::TYPE
    }

    fn process(self: Arc<Self>, delivery: Delivery, queue: Arc<QueueContext>) -> BoxFuture {
        Box::pin(process(self, delivery, queue))
    }
}

/// Everything a delivery of one queue needs, for one connection's lifetime.
pub(crate) struct QueueContext {
    queues: Arc<Queues>,
    pool: orderflow_db::Pool,
    config: Arc<ConsumerConfig>,
    metrics: ConsumerMetrics,
    republisher: Republisher,
    /// Raised when the shared publish channel died: the session restarts.
    broken: Arc<tokio::sync::Notify>,
}

/// What the runtime decided for one delivery.
enum Verdict {
    Applied(Applied),
    Retry(String),
    Park(FailureKind, String),
}

async fn process<H: Handler>(
    route: Arc<HandlerRoute<H>>,
    delivery: Delivery,
    ctx: Arc<QueueContext>,
) {
    let meta = Meta::of(&delivery);
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("process {}", ctx.queues.work),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation = "process",
        messaging.destination.name = %meta.original_exchange,
        messaging.rabbitmq.destination.routing_key = %meta.original_routing_key,
        messaging.message.id = meta.message_id.as_deref().unwrap_or(""),
        handler = H::NAME,
        queue = %ctx.queues.work,
        message_id = meta.message_id.as_deref().unwrap_or(""),
        "event.type" = %meta.event_type,
        attempt = meta.attempt(),
    );
    // The publisher's context (the relay's publish span): this span is its
    // child, and so is whatever the handler appends to the outbox.
    if orderflow_telemetry::exporting()
        && let Some(headers) = delivery.properties.headers()
    {
        orderflow_telemetry::set_parent_from(&span, &delivery::trace_headers(headers));
    }
    async move {
        let verdict = match delivery::decode::<H::Event>(&delivery.properties, &delivery.data) {
            Err(undecodable) => Verdict::Park(undecodable.kind, undecodable.reason),
            Ok((message_id, event)) => {
                let applied = AssertUnwindSafe(inbox::apply(&route.0, &ctx.pool, message_id, event))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(HandlerError::Transient(format!(
                            "handler panicked: {}",
                            panic_message(panic.as_ref())
                        )))
                    });
                match applied {
                    Ok(applied) => {
                        if applied == Applied::Effect && ctx.config.fault_exit_after_commit {
                            tracing::error!(
                                "CONSUMER_FAULT_EXIT_AFTER_COMMIT: exiting after the commit, before the ack"
                            );
                            std::process::exit(crate::FAULT_EXIT_CODE);
                        }
                        Verdict::Applied(applied)
                    }
                    Err(HandlerError::Reject(reason)) => Verdict::Park(FailureKind::Rejected, reason),
                    Err(HandlerError::Transient(error)) if meta.attempt() >= ctx.config.max_attempts => {
                        Verdict::Park(
                            FailureKind::Exhausted,
                            format!("{error} (after {} attempts)", meta.attempt()),
                        )
                    }
                    Err(HandlerError::Transient(error)) => Verdict::Retry(error),
                }
            }
        };
        settle(H::NAME, verdict, delivery, &meta, &ctx).await;
        ctx.metrics.observe_handled(H::NAME, started.elapsed());
    }
    .instrument(span)
    .await;
}

/// Acks `delivery` once its outcome is safe: committed, or republished to a
/// delay queue or the DLQ and confirmed. When a republish fails the message
/// goes back to the broker (nack + requeue) for another delivery.
async fn settle(
    handler: &'static str,
    verdict: Verdict,
    delivery: Delivery,
    meta: &Meta,
    ctx: &QueueContext,
) {
    let moved = match &verdict {
        Verdict::Applied(Applied::Effect) => {
            ctx.metrics.inc_applied(handler);
            tracing::debug!("applied");
            Ok(())
        }
        Verdict::Applied(Applied::Duplicate) => {
            ctx.metrics.inc_duplicate(handler);
            tracing::info!("duplicate delivery: already applied, acked without effect");
            Ok(())
        }
        Verdict::Retry(error) => {
            let failures = meta.attempt();
            let target = ctx.queues.retry_for(failures).unwrap_or(&ctx.queues.dlq);
            let properties = retry::retry_properties(&delivery.properties, meta, failures);
            let sent = ctx
                .republisher
                .send(target, &delivery.data, properties)
                .await;
            if sent.is_ok() {
                ctx.metrics.inc_retried(handler);
                tracing::warn!(%error, retry_queue = target, "transient failure; retrying later");
            }
            sent
        }
        Verdict::Park(kind, error) => {
            let properties =
                retry::dead_letter_properties(&delivery.properties, meta, handler, *kind, error);
            let sent = ctx
                .republisher
                .send(&ctx.queues.dlq, &delivery.data, properties)
                .await;
            if sent.is_ok() {
                ctx.metrics.inc_dead_lettered(handler, kind.as_str());
                tracing::error!(%error, kind = kind.as_str(), dlq = %ctx.queues.dlq, "message parked in the DLQ");
            }
            sent
        }
    };
    match moved {
        Ok(()) => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // The broker redelivers it; the inbox or the copy absorbs that.
                tracing::warn!(error = %e, "ack failed; the message will be redelivered");
            }
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot move the message; handing it back to the broker"
            );
            if !ctx.republisher.usable() {
                ctx.broken.notify_one();
            }
            tokio::time::sleep(REQUEUE_PAUSE).await;
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(e) = delivery.acker.nack(requeue).await {
                tracing::warn!(error = %e, "nack failed; the message will be redelivered");
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// What `Consumer::run` was given.
pub(crate) struct Setup {
    pub service: &'static str,
    pub pool: orderflow_db::Pool,
    pub config: ConsumerConfig,
    pub routes: Vec<Arc<dyn Route>>,
    pub metrics: ConsumerMetrics,
    pub ready: watch::Sender<bool>,
}

struct Runtime {
    connection_name: String,
    pool: orderflow_db::Pool,
    config: Arc<ConsumerConfig>,
    routes: Vec<(Arc<dyn Route>, Arc<Queues>)>,
    metrics: ConsumerMetrics,
    ready: watch::Sender<bool>,
}

pub(crate) async fn run(
    setup: Setup,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let runtime = Runtime::new(setup)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let opened = tokio::select! {
            () = &mut shutdown => return Ok(()),
            opened = runtime.open() => opened,
        };
        match opened {
            Ok(session) => {
                backoff = BACKOFF_FIRST;
                runtime.ready.send_replace(true);
                tracing::info!(
                    connection = %runtime.connection_name,
                    queues = ?runtime.routes.iter().map(|(_, q)| q.work.as_str()).collect::<Vec<_>>(),
                    "consuming"
                );
                let ended = session.run(&mut shutdown).await;
                runtime.ready.send_replace(false);
                match ended {
                    Ended::Shutdown => {
                        tracing::info!("consumer stopped");
                        return Ok(());
                    }
                    Ended::Lost(reason) => {
                        tracing::warn!(%reason, "lost the RabbitMQ connection; reconnecting");
                    }
                }
            }
            Err(e) if e.downcast_ref::<Incompatible>().is_some() => return Err(e),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "cannot consume from RabbitMQ");
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Runtime {
    fn new(setup: Setup) -> anyhow::Result<Self> {
        let Setup {
            service,
            pool,
            config,
            routes,
            metrics,
            ready,
        } = setup;
        anyhow::ensure!(
            !routes.is_empty(),
            "no handler registered with Consumer::with"
        );
        anyhow::ensure!(config.prefetch > 0, "the prefetch must be at least 1");
        anyhow::ensure!(config.max_attempts > 0, "max_attempts must be at least 1");
        anyhow::ensure!(
            !config.retry_delays.is_empty(),
            "retry_delays needs at least one delay"
        );
        if config.fault_exit_after_commit {
            tracing::warn!(
                "CONSUMER_FAULT_EXIT_AFTER_COMMIT is set: this process exits after its first commit (test hook)"
            );
        }
        let mut names = HashSet::new();
        let routes = routes
            .into_iter()
            .map(|route| {
                anyhow::ensure!(
                    names.insert(route.name()),
                    "two handlers are named {:?}: each needs its own queue and inbox key",
                    route.name()
                );
                let queues = Queues::new(
                    service,
                    route.name(),
                    route.producer(),
                    route.routing_key(),
                    config.retry_delays.len(),
                )?;
                Ok((route, Arc::new(queues)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            connection_name: format!("{service}/consumer"),
            pool,
            config: Arc::new(config),
            routes,
            metrics,
            ready,
        })
    }

    /// Connects, declares every queue and starts a consumer per queue.
    async fn open(&self) -> anyhow::Result<Session> {
        let connection =
            orderflow_amqp::connect(&self.config.amqp_url, &self.connection_name).await?;
        let opened = self.start(&connection).await;
        match opened {
            Ok((consumers, broken)) => Ok(Session {
                connection,
                consumers,
                broken,
            }),
            Err(e) => {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    connection.close(200, "setup failed".into()),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        connection: &Connection,
    ) -> anyhow::Result<(Vec<QueueConsumer>, Arc<tokio::sync::Notify>)> {
        let declaring = connection.create_channel().await?;
        for (_, queues) in &self.routes {
            topology::declare(&declaring, queues, &self.config.retry_delays).await?;
        }
        let _ = declaring.close(200, "declared".into()).await;

        let publishing = connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let republisher = Republisher::new(publishing);
        let broken = Arc::new(tokio::sync::Notify::new());

        let mut consumers = Vec::with_capacity(self.routes.len());
        for (route, queues) in &self.routes {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.config.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queues.work.as_str().into(),
                    format!("{}/{}", self.connection_name, route.name()).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(QueueConsumer {
                route: route.clone(),
                channel,
                consumer,
                context: Arc::new(QueueContext {
                    queues: queues.clone(),
                    pool: self.pool.clone(),
                    config: self.config.clone(),
                    metrics: self.metrics.clone(),
                    republisher: republisher.clone(),
                    broken: broken.clone(),
                }),
            });
        }
        Ok((consumers, broken))
    }
}

enum Ended {
    Shutdown,
    Lost(String),
}

/// One connection with a consumer on every queue.
struct Session {
    connection: Connection,
    consumers: Vec<QueueConsumer>,
    broken: Arc<tokio::sync::Notify>,
}

impl Session {
    /// Consumes until `shutdown` or until one queue's consumer fails; then
    /// stops every queue, waits for the handlers in flight and closes.
    async fn run(self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Ended {
        let (stop, stopped) = watch::channel(false);
        let mut queues = JoinSet::new();
        for consumer in self.consumers {
            queues.spawn(consumer.run(stopped.clone()));
        }
        let ended = tokio::select! {
            () = shutdown.as_mut() => Ended::Shutdown,
            () = self.broken.notified() => Ended::Lost("the publish channel closed".to_owned()),
            Some(first) = queues.join_next() => Ended::Lost(match first {
                Ok(reason) => reason,
                Err(e) => format!("a queue task failed: {e}"),
            }),
        };
        stop.send_replace(true);
        while let Some(done) = queues.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a queue task failed");
            }
        }
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.connection.close(200, "consumer stopping".into()),
        )
        .await;
        ended
    }
}

/// One handler's consumer on its own channel (its own prefetch).
struct QueueConsumer {
    route: Arc<dyn Route>,
    channel: Channel,
    consumer: lapin::Consumer,
    context: Arc<QueueContext>,
}

impl QueueConsumer {
    /// Spawns a task per delivery (at most `prefetch` arrive unacked) until
    /// told to stop or the channel fails; then waits for those tasks.
    /// Returns why it ended.
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> String {
        let mut in_flight = JoinSet::new();
        let reason = loop {
            tokio::select! {
                () = stop.wait_for(|stop| *stop).map(drop) => {
                    // basic.cancel: the broker sends nothing more; what it
                    // sent but we did not start goes back to the queue when
                    // the channel closes.
                    let tag = self.consumer.tag();
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
                    )
                    .await;
                    break "stopped".to_owned();
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => log_task_end(done),
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        in_flight.spawn(self.route.clone().process(delivery, self.context.clone()));
                    }
                    Some(Err(e)) => break format!("queue {}: {e}", self.context.queues.work),
                    None => break format!("queue {}: the broker cancelled the consumer", self.context.queues.work),
                },
            }
        };
        while let Some(done) = in_flight.join_next().await {
            log_task_end(done);
        }
        reason
    }
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a delivery task failed; the broker redelivers its message");
    }
}
