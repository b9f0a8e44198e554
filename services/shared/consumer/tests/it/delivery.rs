use std::{sync::Arc, time::Duration};

use orderflow_consumer::ConsumerConfig;

use crate::helpers::{Behavior, QUEUE, Recorder, Running, World, depth, inspector};

#[tokio::test(flavor = "multi_thread")]
async fn the_same_message_published_twice_is_applied_once() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::Apply);
    let consumer = world.consumer(world.config(), handler.clone());
    let mut registry = prometheus_client::registry::Registry::default();
    let consumer = consumer.register_metrics(&mut registry);
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let publisher = world.publisher().await;

    // The second copy is what a crash between COMMIT and ack produces
    // (CONSUMER_FAULT_EXIT_AFTER_COMMIT): the same message_id again.
    let event = publisher.event(7).await;
    publisher.envelope(&event).await;

    orderflow_testkit::wait_until("both copies are settled", Duration::from_secs(20), || {
        std::future::ready(metrics.applied("record") + metrics.duplicates("record") == 2)
    })
    .await;
    assert_eq!(metrics.applied("record"), 1);
    assert_eq!(metrics.duplicates("record"), 1);
    assert_eq!(
        handler.calls(),
        1,
        "the duplicate never reaches the handler"
    );
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 1);
    let inbox = world
        .sql()
        .await
        .query_one("SELECT message_id::text, handler FROM inbox", &[])
        .await
        .unwrap();
    assert_eq!(inbox.get::<_, String>(0), event.id.to_string());
    assert_eq!(inbox.get::<_, String>(1), "record");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"consumer_messages_applied_total{handler="record"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"consumer_messages_duplicate_total{handler="record"} 1"#),
        "{text}"
    );

    running.stop().await.unwrap();
    let (_conn, channel) = inspector(&world).await;
    assert_eq!(depth(&channel, QUEUE).await, 0, "both copies were acked");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_to_concurrency_transactions_run_at_once() {
    let world = World::new().await;
    // Each call waits until 4 calls wait together: only 4 transactions in
    // flight at once (one message each) get past the barrier.
    let handler = Recorder::new(Behavior::Together(Arc::new(tokio::sync::Barrier::new(4))));
    let config = ConsumerConfig {
        prefetch: 4,
        batch_size: 1,
        concurrency: 4,
        ..world.config()
    };
    let consumer = world.consumer(config, handler);
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let publisher = world.publisher().await;
    for n in 0..4 {
        publisher.event(n).await;
    }
    orderflow_testkit::wait_until("4 messages applied", Duration::from_secs(20), || {
        std::future::ready(metrics.applied("record") == 4)
    })
    .await;
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 4);
    running.stop().await.unwrap();
}
