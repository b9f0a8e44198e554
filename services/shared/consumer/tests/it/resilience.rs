use std::{sync::Arc, time::Duration};

use orderflow_amqp::lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use orderflow_consumer::ConsumerConfig;
use tokio::sync::Semaphore;

use crate::helpers::{Behavior, QUEUE, Recorder, Running, World, depth, inspector};

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_resumes_after_the_broker_closes_its_connection() {
    let world = World::new().await;
    // Slow handlers keep deliveries in flight when the connection is cut.
    let handler = Recorder::new(Behavior::Slow(Duration::from_millis(20)));
    let consumer = world.consumer(world.config(), handler);
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;

    // A steady stream (~50 messages/s) until the connection was cut twice
    // and the consumer is back a third time.
    let streaming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let publishing = {
        let publisher = world.publisher().await;
        let streaming = streaming.clone();
        tokio::spawn(async move {
            let mut n = 0;
            let mut rate = tokio::time::interval(Duration::from_millis(20));
            while streaming.load(std::sync::atomic::Ordering::Relaxed) {
                rate.tick().await;
                publisher.event(n).await;
                n += 1;
            }
            n
        })
    };
    let mut cut = Vec::new();
    for round in 0..3 {
        let mut fresh = Vec::new();
        orderflow_testkit::wait_until(
            "a new consumer connection is listed",
            Duration::from_secs(30),
            || {
                fresh = world.broker.connections_named("svc/consumer");
                fresh.retain(|c| !cut.contains(c));
                std::future::ready(!fresh.is_empty())
            },
        )
        .await;
        if round == 2 {
            break; // resumed after the second cut
        }
        let applied = metrics.applied("record");
        for name in fresh {
            assert!(world.broker.close_connection(&name), "close {name}");
            cut.push(name);
        }
        eprintln!("cut {} after {applied} applied", cut.len());
    }
    streaming.store(false, std::sync::atomic::Ordering::Relaxed);
    let messages = publishing.await.unwrap();
    assert!(
        messages > 300,
        "a stream across the cuts: {messages} messages"
    );
    orderflow_testkit::wait_until(
        "every message is applied",
        Duration::from_secs(60),
        || async {
            world
                .scalar("SELECT count(DISTINCT event_id) FROM effects")
                .await
                == i64::from(messages)
        },
    )
    .await;
    assert_eq!(
        world.scalar("SELECT count(*) FROM effects").await,
        i64::from(messages),
        "no message applied twice"
    );
    assert!(cut.len() >= 2, "the connection was cut {} times", cut.len());
    assert_eq!(metrics.dead_lettered("record"), 0);
    eprintln!(
        "{} cuts: {messages} applied, {} duplicate deliveries absorbed by the inbox",
        cut.len(),
        metrics.duplicates("record")
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_handlers_in_flight_finish_and_ack() {
    let world = World::new().await;
    let started = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::new(Behavior::Gated {
        started: started.clone(),
        gate: gate.clone(),
    });
    // Two transactions of one message each, both held at the gate.
    let config = ConsumerConfig {
        batch_size: 1,
        concurrency: 2,
        ..world.config()
    };
    let consumer = world.consumer(config, handler.clone());
    let metrics = consumer.metrics();
    let mut running = Running::start(consumer).await;
    let publisher = world.publisher().await;
    publisher.event(1).await;
    publisher.event(2).await;

    // Both handlers are running and held at the gate.
    let _both = tokio::time::timeout(Duration::from_secs(20), started.acquire_many(2))
        .await
        .expect("both messages reach the handler")
        .unwrap();
    running.shutdown();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut running.task)
            .await
            .is_err(),
        "run waits for the handlers in flight"
    );
    // Published after shutdown began: the cancelled consumer never takes it.
    publisher.event(3).await;
    gate.add_permits(10);
    running.stop().await.unwrap();

    assert_eq!(metrics.applied("record"), 2);
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 2);
    assert_eq!(handler.calls(), 2);
    let (_conn, channel) = inspector(&world).await;
    assert_eq!(
        depth(&channel, QUEUE).await,
        1,
        "the two in flight were acked; the third waits for the next consumer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_is_prompt_while_the_broker_is_unreachable() {
    let world = World::new().await;
    // A "broker" that hangs up on every connection: its accept count shows
    // the runtime failing and retrying.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hang_up = {
        let attempts = attempts.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(socket);
            }
        })
    };
    let config = ConsumerConfig {
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ..world.config()
    };
    let consumer = world.consumer(config, Recorder::new(Behavior::Apply));
    let ready = consumer.ready();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    orderflow_testkit::wait_until(
        "the runtime failed to connect and retried after its backoff",
        Duration::from_secs(10),
        || async { attempts.load(std::sync::atomic::Ordering::Relaxed) >= 3 },
    )
    .await;
    assert!(!*ready.borrow(), "not ready without a broker");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run returns promptly")
        .unwrap()
        .unwrap();
    hang_up.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_queue_with_another_ttl_stops_the_runtime_with_a_clear_error() {
    let world = World::new().await;
    let (_conn, channel) = inspector(&world).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(12_345));
    channel
        .queue_declare(
            "svc.record.retry.0".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();

    let consumer = world.consumer(world.config(), Recorder::new(Behavior::Apply));
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        consumer.run(std::future::pending()),
    )
    .await
    .expect("run gives up at once");
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("svc.record.retry.0"), "{error}");
    assert!(error.contains("CONSUMER_RETRY_DELAYS_MS"), "{error}");
}
