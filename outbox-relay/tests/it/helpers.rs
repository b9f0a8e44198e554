use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use orderflow_amqp::{
    Topology,
    lapin::{
        BasicProperties,
        options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    },
};
use orderflow_testkit::{TestBroker, TestDatabase};
use serde_json::Value;
use tokio::process::{Child, Command};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");

/// A database with the outbox schema and a vhost of its own.
pub struct World {
    pub broker: TestBroker,
    pub db: TestDatabase,
}

impl World {
    pub async fn new() -> Self {
        orderflow_telemetry::init_for_tests();
        Self {
            broker: TestBroker::new(),
            db: TestDatabase::new("order", orderflow_order::MIGRATIONS).await,
        }
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

    /// Events published (no longer in `outbox_pending`).
    pub async fn published(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM outbox o
             WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = o.seq)",
        )
        .await
    }

    /// Starts a relay process on this world; `env` overrides the test defaults.
    pub async fn relay(&self, env: &[(&str, &str)]) -> Relay {
        let mut cmd = Command::new(BIN);
        cmd.env("RELAY_SOURCES", format!("order={}", self.db.url()))
            .env("AMQP_URL", self.broker.url())
            .env("RELAY_HTTP_ADDR", "127.0.0.1:0")
            .env("RELAY_LEASE_TTL", "2s")
            .env("RELAY_POLL_INTERVAL", "200ms")
            .env("RELAY_PUBLISH_TIMEOUT", "3s");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, http) = orderflow_testkit::spawn_until_logged(&mut cmd, "http.addr").await;
        Relay { child, http }
    }

    /// A work queue `svc.waiting` (with its `.dlq`, as the consumer runtime
    /// declares them) bound to every event of `orderflow.order`, with no
    /// consumer: what is routed to it waits there.
    pub async fn bind_idle_work_queue(&self) {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.bind_queue("svc.waiting.dlq", durable, FieldTable::default(), None)
            .await;
        self.bind_queue("svc.waiting", durable, FieldTable::default(), Some("#"))
            .await;
    }

    /// A queue that refuses every message, so the broker nacks what is routed
    /// to it: the relay's view of a poison event.
    pub async fn bind_refusing_queue(&self, routing_key: &str) {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        self.bind_queue(
            "refuser",
            QueueDeclareOptions::default(),
            args,
            Some(routing_key),
        )
        .await;
    }

    /// Declares `queue` and binds it to `orderflow.order` with `routing_key`.
    async fn bind_queue(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
        args: FieldTable,
        routing_key: Option<&str>,
    ) {
        let conn = orderflow_amqp::connect(&self.broker.url(), "test-setup")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        orderflow_amqp::Topology::declare_exchange(&channel, "order")
            .await
            .unwrap();
        channel
            .queue_declare(queue.into(), options, args)
            .await
            .unwrap();
        if let Some(key) = routing_key {
            channel
                .queue_bind(
                    queue.into(),
                    "orderflow.order".into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
    }
}

pub struct Relay {
    pub child: Child,
    pub http: String,
}

impl Relay {
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    pub async fn terminate(mut self) {
        let pid = self.child.id().unwrap().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "relay exit after SIGTERM: {status}");
    }

    /// GET `path` on the relay's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(&self.http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (
            status,
            response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    }
}

/// One delivery as the consumer saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Value,
}

/// A queue bound to `orderflow.order` that records every delivery.
#[derive(Clone)]
pub struct Consumer {
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Consumer {
    pub async fn start(broker: &TestBroker, routing_keys: &[&str]) -> Self {
        let conn = orderflow_amqp::connect(&broker.url(), "test-consumer")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        Topology::declare_exchange(&channel, "order").await.unwrap();
        let queue = format!("test.{}", Uuid::new_v4().simple());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for key in routing_keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    "orderflow.order".into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            let _keep = conn;
            while let Some(Ok(d)) = deliveries.next().await {
                sink.lock().unwrap().push(Received {
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    routing_key: d.routing_key.to_string(),
                    body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
                    properties: d.properties,
                });
            }
        });
        Self { received }
    }

    pub fn distinct(&self) -> usize {
        let r = self.received.lock().unwrap();
        r.iter()
            .map(|m| m.message_id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` distinct events arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let what = format!("{n} distinct events are consumed");
        orderflow_testkit::wait_until(&what, timeout, || async { self.distinct() >= n }).await;
    }
}

/// Per aggregate, the `n` of each first delivery, in arrival order
/// (redeliveries dropped by message id, as an inbox would).
pub fn first_seen_by_aggregate(received: &[Received]) -> (HashMap<String, Vec<i64>>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut by_agg: HashMap<String, Vec<i64>> = HashMap::new();
    let mut duplicates = 0;
    for m in received {
        if !seen.insert(m.message_id.clone()) {
            duplicates += 1;
            continue;
        }
        let agg = m.body["agg"].as_str().unwrap_or_default().to_owned();
        by_agg
            .entry(agg)
            .or_default()
            .push(m.body["n"].as_i64().unwrap_or(-1));
    }
    (by_agg, duplicates)
}

/// Appends one event per `(aggregate, n)` in the given order, in one
/// transaction, with `{"agg": .., "n": ..}` as payload.
pub async fn insert(client: &tokio_postgres::Client, events: &[(Uuid, i32)], event_type: &str) {
    let aggs: Vec<String> = events.iter().map(|(a, _)| a.to_string()).collect();
    let ns: Vec<i32> = events.iter().map(|(_, n)| *n).collect();
    client
        .execute(
            "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers)
             SELECT gen_random_uuid(), 'test', a::uuid, $3, jsonb_build_object('agg', a, 'n', n),
                    '{\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}'
             FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS t(a, n, i) ORDER BY i",
            &[&aggs, &ns, &event_type],
        )
        .await
        .unwrap();
}

/// Waits until `consumer` saw `aggregates * rounds` distinct events and the
/// outbox has none pending, checks every aggregate got 0..rounds in order,
/// and returns the number of duplicate deliveries.
pub async fn assert_all_delivered_in_order(
    world: &World,
    consumer: &Consumer,
    aggregates: usize,
    rounds: i64,
) -> usize {
    consumer
        .wait_for(aggregates * rounds as usize, Duration::from_secs(120))
        .await;
    orderflow_testkit::wait_until(
        "every event is marked published",
        Duration::from_secs(30),
        || async { world.scalar("SELECT count(*) FROM outbox_pending").await == 0 },
    )
    .await;
    let (by_agg, duplicates) = first_seen_by_aggregate(&consumer.snapshot());
    assert_eq!(by_agg.len(), aggregates);
    for (agg, ns) in &by_agg {
        assert_eq!(
            ns,
            &(0..rounds).collect::<Vec<i64>>(),
            "aggregate {agg} out of order or incomplete"
        );
    }
    duplicates
}
