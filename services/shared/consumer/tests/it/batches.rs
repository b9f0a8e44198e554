//! What applying many messages in one transaction must not break.

use std::time::Duration;

use orderflow_consumer::ConsumerConfig;
use orderflow_events::CloudEvent;

use crate::helpers::{
    Behavior, DLQ, Happened, QUEUE, Recorder, Running, World, depth, inspector, take,
};

/// Publishes `n` events while no consumer runs (the queue exists from an
/// earlier start), so that the next consumer finds them waiting and takes
/// them as batches.
async fn waiting(world: &World, config: &ConsumerConfig, n: i32) -> Vec<CloudEvent<Happened>> {
    Running::start(world.consumer(config.clone(), Recorder::new(Behavior::Apply)))
        .await
        .stop()
        .await
        .unwrap();
    let publisher = world.publisher().await;
    let mut events = Vec::new();
    for i in 0..n {
        events.push(publisher.event(i).await);
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_messages_are_applied_in_batches_once_each() {
    let world = World::new().await;
    let config = ConsumerConfig {
        prefetch: 64,
        batch_size: 16,
        ..world.config()
    };
    waiting(&world, &config, 40).await;
    let handler = Recorder::new(Behavior::Apply);
    let consumer = world.consumer(config, handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    orderflow_testkit::wait_until("40 messages applied", Duration::from_secs(20), || {
        std::future::ready(metrics.applied("record") == 40)
    })
    .await;
    running.stop().await.unwrap();
    assert!(
        metrics.batches("record") >= 1,
        "some transaction applied more than one message"
    );
    assert!(metrics.batches("record") < 40);
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 40);
    assert_eq!(
        world
            .scalar("SELECT count(DISTINCT event_id) FROM effects")
            .await,
        40
    );
    assert_eq!(world.scalar("SELECT count(*) FROM inbox").await, 40);
    let (_conn, channel) = inspector(&world).await;
    assert_eq!(depth(&channel, QUEUE).await, 0, "every message was acked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_in_a_batch_is_parked_alone_and_its_neighbours_are_applied() {
    let world = World::new().await;
    let config = ConsumerConfig {
        prefetch: 64,
        batch_size: 32,
        ..world.config()
    };
    let events = waiting(&world, &config, 20).await;
    // The 8th message's handler rejects it: its whole batch rolls back, and
    // each message of the batch is applied again alone.
    let poison = events[7].data.id;
    let handler = Recorder::new(Behavior::RejectOne(poison));
    let consumer = world.consumer(config, handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;

    let (_conn, channel) = inspector(&world).await;
    let parked = take(&channel, DLQ, 1).await;
    assert_eq!(parked[0].header("x-error-kind"), "rejected");
    assert_eq!(
        parked[0].properties.message_id().as_ref().unwrap().as_str(),
        events[7].id.to_string()
    );
    orderflow_testkit::wait_until("the 19 others are applied", Duration::from_secs(20), || {
        std::future::ready(metrics.applied("record") == 19)
    })
    .await;
    running.stop().await.unwrap();
    assert!(metrics.batches("record") >= 1, "the poison was in a batch");
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 19);
    assert_eq!(
        world
            .scalar(&format!(
                "SELECT count(*) FROM effects WHERE event_id = '{poison}'"
            ))
            .await,
        0
    );
    assert_eq!(world.scalar("SELECT count(*) FROM inbox").await, 19);
    assert_eq!(metrics.dead_lettered_of("record", "rejected"), 1);
    assert_eq!(depth(&channel, QUEUE).await, 0);
    assert_eq!(depth(&channel, DLQ).await, 0, "the one parked was taken");
}
