use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{Consumer, World, insert};

#[tokio::test(flavor = "multi_thread")]
async fn a_nacked_event_is_parked_and_blocks_only_its_own_aggregate() {
    let world = World::new().await;
    // `test.poison` goes to a queue that refuses it: the broker nacks it.
    let consumer = Consumer::start(&world.broker, &["test.ok"]).await;
    world.bind_refusing_queue("test.poison").await;
    let _relay = world
        .relay(&[("RELAY_MAX_ATTEMPTS", "3"), ("RELAY_RETRY_BASE", "100ms")])
        .await;
    let client = world.sql().await;
    let (poisoned, healthy) = (Uuid::new_v4(), Uuid::new_v4());

    insert(&client, &[(poisoned, 0)], "test.poison").await;
    insert(
        &client,
        &[(poisoned, 1), (healthy, 0), (healthy, 1)],
        "test.ok",
    )
    .await;

    // The other aggregate flows, the poison is parked with its error.
    consumer.wait_for(2, Duration::from_secs(20)).await;
    orderflow_testkit::wait_until(
        "the poison event is parked",
        Duration::from_secs(20),
        || async {
            world
                .scalar("SELECT count(*) FROM outbox_pending WHERE parked_at IS NOT NULL")
                .await
                == 1
        },
    )
    .await;
    let row = client
        .query_one(
            "SELECT attempts, last_error FROM outbox_pending WHERE parked_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(
        row.get::<_, String>(1).contains("nacked"),
        "{}",
        row.get::<_, String>(1)
    );
    // The poisoned aggregate's next event waits behind it: order is kept.
    let received = consumer.snapshot();
    assert!(
        received
            .iter()
            .all(|m| m.body["agg"] == healthy.to_string()),
        "{received:?}"
    );
    assert_eq!(world.scalar("SELECT count(*) FROM outbox_pending").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_nobody_subscribes_to_is_kept_in_the_unrouted_queue_not_parked() {
    let world = World::new().await;
    // Only `test.ok` has a queue; `test.nobody` is a type no consumer wants.
    let consumer = Consumer::start(&world.broker, &["test.ok"]).await;
    let _relay = world
        .relay(&[("RELAY_MAX_ATTEMPTS", "2"), ("RELAY_RETRY_BASE", "100ms")])
        .await;
    let client = world.sql().await;
    let agg = Uuid::new_v4();
    insert(&client, &[(agg, 0)], "test.nobody").await;
    insert(&client, &[(agg, 1)], "test.ok").await;

    // Published at the first attempt, so the aggregate's next event follows.
    consumer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(world.published().await, 2);
    let conn = orderflow_amqp::connect(&world.broker.url(), "test-inspector")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    orderflow_testkit::wait_until(
        "the unsubscribed event waits in orderflow.unrouted",
        Duration::from_secs(10),
        || async {
            let queue = channel
                .queue_declare(
                    orderflow_amqp::Topology::UNROUTED.into(),
                    orderflow_amqp::lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .unwrap();
            queue.message_count() == 1
        },
    )
    .await;
}
