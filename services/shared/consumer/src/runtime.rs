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
    /// The consumer settings of this queue: the service's, with the
    /// handler's own concurrency and batch size where it has them.
    fn tune(&self, config: &ConsumerConfig) -> ConsumerConfig;
    fn producer(&self) -> &'static str;
    fn routing_key(&self) -> &'static str;
    /// Handles deliveries of its queue to their end (one transaction for
    /// all when it can): each acked, or handed back to the broker.
    fn process(self: Arc<Self>, deliveries: Vec<Delivery>, queue: Arc<QueueContext>) -> BoxFuture;
}

struct HandlerRoute<H>(H);

pub(crate) fn route<H: Handler>(handler: H) -> Arc<dyn Route> {
    Arc::new(HandlerRoute(handler))
}

impl<H: Handler> Route for HandlerRoute<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }

    fn tune(&self, config: &ConsumerConfig) -> ConsumerConfig {
        let mut tuned = config.clone();
        if let Some(n) = H::CONCURRENCY {
            tuned.concurrency = n.max(1);
        }
        if let Some(n) = H::BATCH_SIZE {
            tuned.batch_size = n.max(1);
        }
        tuned
    }

    fn producer(&self) -> &'static str {
        H::Event::producer()
    }

    fn routing_key(&self) -> &'static str {
        <H::Event as orderflow_events::Event>::TYPE
    }

    fn process(self: Arc<Self>, deliveries: Vec<Delivery>, queue: Arc<QueueContext>) -> BoxFuture {
        Box::pin(process_batch(self, deliveries, queue))
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

/// The span a delivery is handled in; its parent is the publisher's
/// context (the relay's publish span), so what the handler appends to the
/// outbox continues the message's trace.
fn consume_span(
    handler: &'static str,
    delivery: &Delivery,
    meta: &Meta,
    ctx: &QueueContext,
) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("process {}", ctx.queues.work),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation = "process",
        messaging.destination.name = %meta.original_exchange,
        messaging.rabbitmq.destination.routing_key = %meta.original_routing_key,
        messaging.message.id = meta.message_id.as_deref().unwrap_or(""),
        handler,
        queue = %ctx.queues.work,
        message_id = meta.message_id.as_deref().unwrap_or(""),
        "event.type" = %meta.event_type,
        attempt = meta.attempt(),
    );
    if orderflow_telemetry::exporting()
        && let Some(headers) = delivery.properties.headers()
    {
        orderflow_telemetry::set_parent_from(&span, &delivery::trace_headers(headers));
    }
    span
}

/// Catches a handler's panic as a transient failure.
async fn unpanicked<T>(
    applied: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    AssertUnwindSafe(applied)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(HandlerError::Transient(format!(
                "handler panicked: {}",
                panic_message(panic.as_ref())
            )))
        })
}

/// The test hooks `CONSUMER_FAULT_EXIT_AFTER_COMMIT` (any commit that
/// applied a message) and `CONSUMER_FAULT_EXIT_AFTER_BATCH` (one that
/// applied a batch): a crash after the commit, before the acks.
fn fault_exit_after_commit(ctx: &QueueContext, batch: bool) {
    if ctx.config.fault_exit_after_commit || (batch && ctx.config.fault_exit_after_batch) {
        tracing::error!(
            "CONSUMER_FAULT_EXIT_AFTER_COMMIT: exiting after the commit, before the ack"
        );
        std::process::exit(crate::FAULT_EXIT_CODE);
    }
}

/// Handles one delivery in its own transaction.
async fn process<H: Handler>(
    route: Arc<HandlerRoute<H>>,
    delivery: Delivery,
    ctx: Arc<QueueContext>,
) {
    let meta = Meta::of(&delivery);
    let started = std::time::Instant::now();
    let span = consume_span(H::NAME, &delivery, &meta, &ctx);
    async move {
        let verdict = match delivery::decode::<H::Event>(&delivery.properties, &delivery.data) {
            Err(undecodable) => Verdict::Park(undecodable.kind, undecodable.reason),
            Ok((message_id, event)) => {
                match unpanicked(inbox::apply(&route.0, &ctx.pool, message_id, event)).await {
                    Ok(applied) => {
                        if applied == Applied::Effect {
                            fault_exit_after_commit(&ctx, false);
                        }
                        Verdict::Applied(applied)
                    }
                    Err(HandlerError::Reject(reason)) => {
                        Verdict::Park(FailureKind::Rejected, reason)
                    }
                    Err(HandlerError::Transient(error))
                        if meta.attempt() >= ctx.config.max_attempts =>
                    {
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

/// Handles several deliveries of one queue in one transaction
/// (`inbox::apply_batch`), acking each after the commit. What cannot be
/// decoded is handled alone (parked); when the batch fails as a whole, each
/// of its messages is handled alone, so a poison message is retried or
/// parked by itself and its neighbours are applied.
async fn process_batch<H: Handler>(
    route: Arc<HandlerRoute<H>>,
    deliveries: Vec<Delivery>,
    ctx: Arc<QueueContext>,
) {
    if deliveries.len() == 1 {
        if let Some(delivery) = deliveries.into_iter().next() {
            process(route, delivery, ctx).await;
        }
        return;
    }
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(deliveries.len());
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery::decode::<H::Event>(&delivery.properties, &delivery.data) {
            Ok((message_id, event)) => {
                let meta = Meta::of(&delivery);
                let span = consume_span(H::NAME, &delivery, &meta, &ctx);
                items.push((message_id, crate::Traced { event, span }));
                batch.push((delivery, meta));
            }
            Err(_) => process(route.clone(), delivery, ctx.clone()).await,
        }
    }
    if batch.is_empty() {
        return;
    }
    ctx.metrics.observe_batch(H::NAME, batch.len());
    match unpanicked(inbox::apply_batch(&route.0, &ctx.pool, items)).await {
        Ok(outcomes) => {
            if outcomes.contains(&Applied::Effect) {
                fault_exit_after_commit(&ctx, true);
            }
            for ((_, meta), applied) in batch.iter().zip(&outcomes) {
                match applied {
                    Applied::Effect => ctx.metrics.inc_applied(H::NAME),
                    Applied::Duplicate => {
                        ctx.metrics.inc_duplicate(H::NAME);
                        tracing::info!(
                            handler = H::NAME,
                            message_id = meta.message_id.as_deref().unwrap_or(""),
                            "duplicate delivery: already applied, acked without effect"
                        );
                    }
                }
            }
            ack_all(batch.into_iter().map(|(delivery, _)| delivery), &ctx).await;
            let took = started.elapsed();
            for _ in &outcomes {
                ctx.metrics.observe_handled(H::NAME, took);
            }
        }
        Err(error) => {
            tracing::warn!(
                handler = H::NAME,
                messages = batch.len(),
                %error,
                "the batch failed as a whole; applying its messages one at a time"
            );
            for (delivery, _) in batch {
                process(route.clone(), delivery, ctx.clone()).await;
            }
        }
    }
}

/// Acks a committed batch. With one transaction in flight per queue, every
/// earlier delivery of the channel is settled by now, so one `basic.ack`
/// with `multiple` for the last one acks exactly the batch (for a quorum
/// queue one settle command instead of one per message); otherwise each is
/// acked.
async fn ack_all(deliveries: impl DoubleEndedIterator<Item = Delivery>, ctx: &QueueContext) {
    let acked = if ctx.config.concurrency == 1 {
        match deliveries.max_by_key(|d| d.delivery_tag) {
            Some(last) => last
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map(drop),
            None => Ok(()),
        }
    } else {
        let mut acked = Ok(());
        for delivery in deliveries {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                acked = Err(e);
            }
        }
        acked
    };
    if let Err(e) = acked {
        // The broker redelivers them; the inbox absorbs that.
        tracing::warn!(error = %e, "ack failed; the messages will be redelivered");
    }
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
        if config.fault_exit_after_commit || config.fault_exit_after_batch {
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
                    config: Arc::new(route.tune(&self.config)),
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
    /// Takes what the broker has sent (up to `batch_size` deliveries at
    /// once) and hands it to a task, at most `concurrency` tasks at a time,
    /// until told to stop or the channel fails; then waits for those tasks.
    /// Under light load every delivery is a batch of one and is handled at
    /// once; under load the deliveries that arrive while the tasks are busy
    /// form the next batch. Returns why it ended.
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> String {
        let mut in_flight = JoinSet::new();
        let batch_size = self.context.config.batch_size.max(1);
        let concurrency = self.context.config.concurrency.max(1);
        let reason = loop {
            let full = in_flight.len() >= concurrency;
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
                next = self.consumer.next(), if !full => match next {
                    Some(Ok(delivery)) => {
                        let mut batch = vec![delivery];
                        let mut ended = None;
                        while batch.len() < batch_size {
                            match self.consumer.next().now_or_never() {
                                Some(Some(Ok(delivery))) => batch.push(delivery),
                                Some(Some(Err(e))) => {
                                    ended = Some(format!("queue {}: {e}", self.context.queues.work));
                                    break;
                                }
                                Some(None) => {
                                    ended = Some(format!("queue {}: the broker cancelled the consumer", self.context.queues.work));
                                    break;
                                }
                                None => break,
                            }
                        }
                        in_flight.spawn(self.route.clone().process(batch, self.context.clone()));
                        if let Some(reason) = ended {
                            break reason;
                        }
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
