use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_amqp::{
    Topology,
    lapin::{
        BasicProperties, Channel, Confirmation, Connection,
        options::{
            BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        },
        types::{AMQPValue, FieldTable},
    },
};
use orderflow_consumer::{Consumer, ConsumerConfig, Handler, HandlerError, HandlerResult};
use orderflow_db::{Pool, PoolConfig, ServiceMigrations};
use orderflow_events::{CloudEvent, Event};
use orderflow_testkit::{TestBroker, TestDatabase};
use serde::{Deserialize, Serialize};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

static TEST_MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/migrations");
const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &TEST_MIGRATIONS,
};

/// The service name of the queues: `svc.record`, `svc.record.retry.0`, ...
pub const SERVICE: &str = "svc";
pub const QUEUE: &str = "svc.record";
pub const DLQ: &str = "svc.record.dlq";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The event of these tests (exchange `orderflow.test`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Happened {
    pub id: Uuid,
    pub n: i32,
}

impl Event for Happened {
    const TYPE: &'static str = "test.happened";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "test";
    fn aggregate_id(&self) -> Uuid {
        self.id
    }
}

/// What the test handler does on each call.
#[derive(Clone)]
pub enum Behavior {
    /// Insert the effect row.
    Apply,
    /// Fail transiently on the first `n` calls for a message, then apply.
    FailFirst(usize),
    AlwaysTransient,
    Reject,
    /// Reject the event with this id, apply every other.
    RejectOne(Uuid),
    /// Insert the effect, append an outbox row, then fail with `Reject`.
    WriteThenReject,
    /// Apply after sleeping (keeps deliveries in flight).
    Slow(Duration),
    /// Apply after `gate` opens; `started` counts calls that are waiting.
    Gated {
        started: Arc<tokio::sync::Semaphore>,
        gate: Arc<tokio::sync::Semaphore>,
    },
    /// Apply only once `barrier` is reached by that many concurrent calls.
    Together(Arc<tokio::sync::Barrier>),
}

/// Handler `record`: records every call, then acts as its [`Behavior`] says.
#[derive(Clone)]
pub struct Recorder {
    pub behavior: Behavior,
    pub calls: Arc<Mutex<Vec<(Uuid, Instant)>>>,
}

impl Recorder {
    pub fn new(behavior: Behavior) -> Self {
        Self {
            behavior,
            calls: Arc::default(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each call for the event `id` happened.
    pub fn call_times(&self, id: Uuid) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| *e == id)
            .map(|(_, t)| *t)
            .collect()
    }
}

async fn insert_effect(conn: &mut AsyncPgConnection, event: &Happened) -> HandlerResult {
    diesel::sql_query("INSERT INTO effects (event_id, n) VALUES ($1, $2)")
        .bind::<sql_types::Uuid, _>(event.id)
        .bind::<sql_types::Integer, _>(event.n)
        .execute(conn)
        .await?;
    Ok(())
}

impl Handler for Recorder {
    type Event = Happened;
    const NAME: &'static str = "record";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<Happened>,
    ) -> HandlerResult {
        let calls = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((event.data.id, Instant::now()));
            calls.iter().filter(|(id, _)| *id == event.data.id).count()
        };
        match &self.behavior {
            Behavior::Apply => insert_effect(conn, &event.data).await,
            Behavior::FailFirst(n) if calls <= *n => Err(HandlerError::Transient(format!(
                "simulated outage, call {calls}"
            ))),
            Behavior::FailFirst(_) => insert_effect(conn, &event.data).await,
            Behavior::AlwaysTransient => Err(HandlerError::Transient(
                "the ledger is down for maintenance".to_owned(),
            )),
            Behavior::Reject => Err(HandlerError::Reject(format!(
                "order {} is unknown here",
                event.data.id
            ))),
            Behavior::RejectOne(poison) if event.data.id == *poison => {
                Err(HandlerError::Reject("poison".to_owned()))
            }
            Behavior::RejectOne(_) => insert_effect(conn, &event.data).await,
            Behavior::WriteThenReject => {
                insert_effect(conn, &event.data).await?;
                orderflow_outbox::append(conn, "orderflow/svc", event.data.clone()).await?;
                Err(HandlerError::Reject("changed my mind".to_owned()))
            }
            Behavior::Slow(pause) => {
                tokio::time::sleep(*pause).await;
                insert_effect(conn, &event.data).await
            }
            Behavior::Gated { started, gate } => {
                started.add_permits(1);
                let _open = gate.acquire().await;
                insert_effect(conn, &event.data).await
            }
            Behavior::Together(barrier) => {
                barrier.wait().await;
                insert_effect(conn, &event.data).await
            }
        }
    }
}

/// A vhost, a database with the effects table, and a pool on it.
pub struct World {
    pub pool: Pool,
    pub broker: TestBroker,
    pub db: TestDatabase,
}

impl World {
    pub async fn new() -> Self {
        orderflow_telemetry::init_for_tests();
        let db = TestDatabase::new("consumer_test", MIGRATIONS).await;
        let pool = pool(db.url());
        Self {
            pool,
            broker: TestBroker::new(),
            db,
        }
    }

    /// Short delays and few attempts, so retries finish within a test.
    pub fn config(&self) -> ConsumerConfig {
        ConsumerConfig {
            prefetch: 8,
            max_attempts: 3,
            retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
            ..ConsumerConfig::new(self.broker.url())
        }
    }

    pub fn consumer(&self, config: ConsumerConfig, handler: Recorder) -> Consumer {
        Consumer::new(SERVICE, self.pool.clone(), config).with(handler)
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(self.db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.sql().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// A confirmed publisher on this vhost.
    pub async fn publisher(&self) -> Publisher {
        let connection = orderflow_amqp::connect(&self.broker.url(), "test-publisher")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Topology::declare_exchange(&channel, "test").await.unwrap();
        Publisher {
            _connection: connection,
            channel,
        }
    }
}

pub fn pool(url: &str) -> Pool {
    orderflow_db::build_pool(&PoolConfig {
        url: url.to_owned(),
        max_size: 16,
        wait_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(30),
        application_name: "consumer-test".to_owned(),
        settings: &[],
    })
    .unwrap()
}

/// A running consumer and the means to stop it.
pub struct Running {
    pub task: JoinHandle<anyhow::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Runs `consumer` and waits until its queues are declared and consumed.
    pub async fn start(consumer: Consumer) -> Self {
        let mut ready = consumer.ready();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(consumer.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r))
            .await
            .expect("the consumer is ready within 20 s")
            .unwrap();
        Self {
            task,
            stop: Some(stop),
        }
    }

    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits (10 s at most) for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown();
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("run returns within 10 s of shutdown")
            .unwrap()
    }
}

pub struct Publisher {
    _connection: Connection,
    pub channel: Channel,
}

impl Publisher {
    /// Publishes `body` to `orderflow.test` with the relay's properties
    /// (`message_id` when given) and waits for the broker's confirm.
    pub async fn raw(&self, message_id: Option<&str>, body: &[u8]) {
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(TRACEPARENT.into()),
        );
        let mut props = BasicProperties::default()
            .with_type(Happened::TYPE.into())
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                "orderflow.test".into(),
                Happened::TYPE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirm, Confirmation::Ack(None), "routed and confirmed");
    }

    /// Publishes a well-formed event with message_id = event id; returns it.
    pub async fn event(&self, n: i32) -> CloudEvent<Happened> {
        let event = CloudEvent::new(
            "orderflow/test",
            Happened {
                id: Uuid::new_v4(),
                n,
            },
        );
        self.envelope(&event).await;
        event
    }

    pub async fn envelope(&self, event: &CloudEvent<Happened>) {
        let body = serde_json::to_vec(event).unwrap();
        self.raw(Some(&event.id.to_string()), &body).await;
    }
}

/// Messages ready in `queue` (not counting unacked ones).
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// One parked message.
#[derive(Debug)]
pub struct Parked {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Parked {
    pub fn header(&self, key: &str) -> &str {
        self.headers.get(key).map_or_else(
            || panic!("no header {key}: {:?}", self.headers),
            String::as_str,
        )
    }
}

/// Waits until `n` messages are in `queue`, then takes them all.
pub async fn take(channel: &Channel, queue: &str, n: u32) -> Vec<Parked> {
    orderflow_testkit::wait_until(
        &format!("{n} messages are in {queue}"),
        Duration::from_secs(30),
        || async { depth(channel, queue).await >= n },
    )
    .await;
    let mut taken = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let headers = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(k, v)| (k.to_string(), header_text(v)))
                    .collect()
            })
            .unwrap_or_default();
        taken.push(Parked {
            properties: m.delivery.properties.clone(),
            body: m.delivery.data.clone(),
            headers,
        });
    }
    taken
}

fn header_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A channel of its own on the world's vhost, for inspecting queues.
pub async fn inspector(world: &World) -> (Connection, Channel) {
    let connection = orderflow_amqp::connect(&world.broker.url(), "test-inspector")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}
