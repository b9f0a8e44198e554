use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{Consumer, World, insert};

#[tokio::test(flavor = "multi_thread")]
async fn an_event_is_published_with_its_id_type_and_trace_then_marked() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;
    let relay = world.relay(&[]).await;
    let agg = Uuid::new_v4();

    insert(&world.sql().await, &[(agg, 0)], "test.happened").await;
    consumer.wait_for(1, Duration::from_secs(20)).await;

    let m = &consumer.snapshot()[0];
    let id: String = world
        .sql()
        .await
        .query_one("SELECT id::text FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(m.message_id, id);
    assert_eq!(m.routing_key, "test.happened");
    assert_eq!(
        m.properties
            .kind()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("test.happened")
    );
    assert_eq!(
        m.properties
            .content_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(*m.properties.delivery_mode(), Some(2));
    assert!(m.properties.timestamp().is_some_and(|t| t > 1_700_000_000));
    let headers = m.properties.headers().as_ref().expect("headers");
    let Some(orderflow_amqp::lapin::types::AMQPValue::LongString(traceparent)) =
        headers.inner().get("traceparent")
    else {
        panic!("no traceparent header: {headers:?}");
    };
    let traceparent = String::from_utf8_lossy(traceparent.as_bytes());
    assert!(
        traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{traceparent}"
    );
    assert_eq!(m.body["agg"], agg.to_string());
    orderflow_testkit::wait_until(
        "the event is marked published",
        Duration::from_secs(10),
        || async { world.published().await == 1 },
    )
    .await;
    let (status, metrics) = relay.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("outbox_published_total{source=\"order\"} 1"),
        "{metrics}"
    );
    relay.terminate().await;
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM outbox_lease WHERE owner IS NOT NULL")
            .await,
        0,
        "leases released"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_lost_when_broker_connections_drop_mid_stream() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;
    let _relay = world.relay(&[]).await;
    let aggs: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();

    // 100 rounds of 100 events, written while the relay's connection is cut twice.
    let writer = {
        let client = world.sql().await;
        let aggs = aggs.clone();
        tokio::spawn(async move {
            for n in 0..100 {
                let round: Vec<(Uuid, i32)> = aggs.iter().map(|a| (*a, n)).collect();
                insert(&client, &round, "test.happened").await;
                tokio::time::sleep(Duration::from_millis(100)).await; // a steady stream over ~10 s
            }
        })
    };
    let mut cut = Vec::new();
    for _ in 0..2 {
        let mut fresh = Vec::new();
        orderflow_testkit::wait_until(
            "a new relay connection is listed",
            Duration::from_secs(30),
            || {
                fresh = world.broker.connections_named("outbox-relay/order");
                fresh.retain(|c| !cut.contains(c));
                std::future::ready(!fresh.is_empty())
            },
        )
        .await;
        for name in fresh {
            assert!(world.broker.close_connection(&name), "close {name}");
            cut.push(name);
        }
    }
    writer.await.unwrap();
    let cuts = cut.len();
    let duplicates =
        crate::helpers::assert_all_delivered_in_order(&world, &consumer, 100, 100).await;
    assert!(cuts >= 2, "the relay's connection was cut {cuts} times");
    eprintln!("broker outage: 10000 events, {duplicates} duplicate deliveries");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_fails_when_lag_exceeds_the_threshold() {
    let world = World::new().await;
    // No broker at this address: events cannot leave.
    let relay = world
        .relay(&[
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
            ("RELAY_LAG_UNHEALTHY", "1s"),
        ])
        .await;
    orderflow_testkit::wait_until("healthy while idle", Duration::from_secs(10), || async {
        relay.get("/healthz").await.0 == 200
    })
    .await;

    insert(&world.sql().await, &[(Uuid::new_v4(), 0)], "test.happened").await;

    orderflow_testkit::wait_until(
        "unhealthy once the event is stuck",
        Duration::from_secs(15),
        || async { relay.get("/healthz").await.0 == 503 },
    )
    .await;
    let (_, body) = relay.get("/healthz").await;
    assert!(body.contains("exceeds"), "{body}");
    assert_eq!(relay.get("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_show_what_waits_in_the_consumers_queues() {
    let world = World::new().await;
    world.bind_idle_work_queue().await;
    let relay = world.relay(&[]).await;
    for n in 0..5 {
        insert(&world.sql().await, &[(Uuid::new_v4(), n)], "test.happened").await;
    }
    // Published at once; the management API's statistics and the relay's
    // reading of them are a few seconds behind.
    orderflow_testkit::wait_until(
        "/healthz shows the 5 messages waiting in svc.waiting",
        Duration::from_secs(40),
        || async {
            let (status, body) = relay.get("/healthz").await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && json["queues"]["svc.waiting"] == 5 && json["queued_messages"] == 5
        },
    )
    .await;
    let (_, metrics) = relay.get("/metrics").await;
    assert!(
        metrics.contains(r#"broker_queue_messages{queue="svc.waiting"} 5"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_relay_is_woken_by_notify_not_by_polling() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;
    // Polling every minute: only a NOTIFY can deliver within the deadline.
    let _relay = world
        .relay(&[("RELAY_POLL_INTERVAL", "60s"), ("RELAY_LEASE_TTL", "120s")])
        .await;
    orderflow_testkit::wait_until(
        "the relay waits for NOTIFY",
        Duration::from_secs(20),
        || async {
            world
                .scalar("SELECT count(*) FROM outbox_relay_member WHERE waiting")
                .await
                == 1
        },
    )
    .await;

    for n in 0..3 {
        insert(&world.sql().await, &[(Uuid::new_v4(), n)], "test.happened").await;
        consumer
            .wait_for(n as usize + 1, Duration::from_secs(10))
            .await;
        // Idle again before the next event, so each one needs its own wake-up.
        orderflow_testkit::wait_until("the relay waits again", Duration::from_secs(10), || async {
            world
                .scalar("SELECT count(*) FROM outbox_relay_member WHERE waiting")
                .await
                == 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_do_not_notify_while_no_relay_waits() {
    let world = World::new().await;
    let client = world.sql().await;
    let (listener, mut conn) = tokio_postgres::connect(world.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let notified = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = notified.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut messages).await {
            if matches!(m, tokio_postgres::AsyncMessage::Notification(_)) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    listener
        .batch_execute("LISTEN outbox_pending")
        .await
        .unwrap();

    // No relay waits: an insert sends nothing.
    insert(&client, &[(Uuid::new_v4(), 0)], "test.happened").await;
    // A relay waits: the next insert notifies.
    client
        .batch_execute("INSERT INTO outbox_relay_member (owner, heartbeat_at, waiting) VALUES ('r', now(), true)")
        .await
        .unwrap();
    insert(&client, &[(Uuid::new_v4(), 0)], "test.happened").await;

    orderflow_testkit::wait_until(
        "the second insert notifies",
        Duration::from_secs(5),
        || async { notified.load(std::sync::atomic::Ordering::SeqCst) >= 1 },
    )
    .await;
    // Notifications arrive in commit order, so the first insert's would have come first.
    assert_eq!(notified.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_vacuums_the_pending_table_after_every_n_published_events() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["test.ok"]).await;
    let vacuums = || {
        world
            .scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox_pending'")
    };
    assert_eq!(vacuums().await, 0);
    let _relay = world.relay(&[("RELAY_VACUUM_EVERY", "100")]).await;
    let client = world.sql().await;
    let events: Vec<(Uuid, i32)> = (0..300).map(|_| (Uuid::new_v4(), 0)).collect();
    insert(&client, &events, "test.ok").await;
    consumer.wait_for(300, Duration::from_secs(30)).await;
    // `vacuum_count` counts VACUUM commands, not autovacuum's runs.
    orderflow_testkit::wait_until(
        "the relay vacuumed outbox_pending",
        Duration::from_secs(20),
        || async { vacuums().await >= 1 },
    )
    .await;
    assert_eq!(world.published().await, 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn published_rows_past_retention_are_deleted_and_pending_rows_kept() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["test.ok"]).await;
    let first = world.relay(&[]).await;
    let client = world.sql().await;
    insert(&client, &[(Uuid::new_v4(), 0)], "test.ok").await;
    consumer.wait_for(1, Duration::from_secs(20)).await;
    orderflow_testkit::wait_until(
        "the event is published and was written over a second ago",
        Duration::from_secs(20),
        || async {
            world
                .scalar(
                    "SELECT count(*) FROM outbox o WHERE created_at < now() - interval '1 second' \
                     AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = o.seq)",
                )
                .await
                == 1
        },
    )
    .await;
    first.terminate().await;
    // A pending row (nacked, parked at once) must survive any retention.
    world.bind_refusing_queue("test.refused").await;
    insert(&client, &[(Uuid::new_v4(), 0)], "test.refused").await;

    // The cleaner runs when a relay starts.
    let _second = world
        .relay(&[("RELAY_RETENTION", "1s"), ("RELAY_MAX_ATTEMPTS", "1")])
        .await;

    orderflow_testkit::wait_until(
        "the published row is deleted",
        Duration::from_secs(20),
        || async { world.published().await == 0 },
    )
    .await;
    assert_eq!(world.scalar("SELECT count(*) FROM outbox_pending").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_lost_when_database_connections_are_killed_mid_stream() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;
    let _relay = world.relay(&[]).await;
    let aggs: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let admin = world.sql().await;

    // 100 rounds of 100 events; every relay backend (pool and LISTEN) is
    // terminated twice while they flow, as a database restart would.
    let mut killed = 0;
    for n in 0..100 {
        let round: Vec<(Uuid, i32)> = aggs.iter().map(|a| (*a, n)).collect();
        insert(&admin, &round, "test.happened").await;
        if n == 30 || n == 70 {
            orderflow_testkit::wait_until("the relay has database connections", Duration::from_secs(20), || async {
                world.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay/%'").await > 0
            })
            .await;
            killed += world
                .scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name LIKE 'outbox-relay/%') t",
                )
                .await;
        }
    }
    let duplicates =
        crate::helpers::assert_all_delivered_in_order(&world, &consumer, 100, 100).await;
    assert!(killed >= 2, "{killed} relay backends terminated");
    eprintln!(
        "database connections killed ({killed} backends): 10000 events, {duplicates} duplicate deliveries"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_insert_is_queued_and_a_pending_entry_without_its_event_blocks_nothing() {
    let world = World::new().await;
    let client = world.sql().await;
    let agg = Uuid::new_v4();
    // Two statements, three rows: the trigger queues every row it wrote.
    insert(&client, &[(agg, 0), (agg, 1)], "test.happened").await;
    insert(&client, &[(Uuid::new_v4(), 0)], "test.happened").await;
    assert_eq!(
        world
            .scalar(
                "SELECT count(*) FROM outbox o JOIN outbox_pending p
                 ON p.seq = o.seq AND p.id = o.id AND p.aggregate_id = o.aggregate_id
                    AND p.partition = o.partition AND p.created_at = o.created_at"
            )
            .await,
        3
    );
    // The aggregate's head loses its event (retention racing a replay):
    // its pending entry must not hold the aggregate's next event back.
    client
        .execute(
            "DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox)",
            &[],
        )
        .await
        .unwrap();

    let consumer = Consumer::start(&world.broker, &["#"]).await;
    let _relay = world.relay(&[]).await;
    consumer.wait_for(2, Duration::from_secs(20)).await;
    let bodies: Vec<i64> = consumer
        .snapshot()
        .iter()
        .filter(|m| m.body["agg"] == agg.to_string())
        .map(|m| m.body["n"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(bodies, [1]);
    orderflow_testkit::wait_until(
        "nothing is left pending",
        Duration::from_secs(10),
        || async { world.scalar("SELECT count(*) FROM outbox_pending").await == 0 },
    )
    .await;
}
