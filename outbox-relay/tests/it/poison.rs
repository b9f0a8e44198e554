use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{Consumer, World, insert};

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_event_is_parked_and_blocks_only_its_own_aggregate() {
    let world = World::new().await;
    // Only `test.ok` is routed anywhere: `test.poison` is unroutable.
    let consumer = Consumer::start(&world.broker, &["test.ok"]).await;
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
                .scalar("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
                .await
                == 1
        },
    )
    .await;
    let row = client
        .query_one(
            "SELECT attempts, last_error FROM outbox WHERE parked_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(
        row.get::<_, String>(1).contains("unroutable"),
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
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        2
    );
}
