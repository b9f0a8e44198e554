use std::time::Duration;

use orderflow_consumer::{ConsumerConfig, FailureKind};
use orderflow_events::CloudEvent;

use crate::helpers::{
    Behavior, DLQ, Happened, QUEUE, Recorder, Running, SERVICE, TRACEPARENT, World, depth,
    inspector, take,
};

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_wait_in_the_delay_queues_then_apply_once() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::FailFirst(2));
    let config = ConsumerConfig {
        max_attempts: 5,
        retry_delays: vec![Duration::from_millis(300), Duration::from_millis(600)],
        ..world.config()
    };
    let consumer = world.consumer(config, handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let event = world.publisher().await.event(1).await;

    orderflow_testkit::wait_until(
        "the third attempt applied it",
        Duration::from_secs(20),
        || std::future::ready(metrics.applied("record") == 1),
    )
    .await;
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 1);
    assert_eq!(metrics.retried("record"), 2);
    assert_eq!(metrics.dead_lettered("record"), 0);
    // Each retry waited for its delay queue's TTL: the first, then the second.
    let times = handler.call_times(event.data.id);
    assert_eq!(times.len(), 3, "{times:?}");
    let gaps = [times[1] - times[0], times[2] - times[1]];
    assert!(gaps[0] >= Duration::from_millis(300), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(600), "{gaps:?}");
    running.stop().await.unwrap();
    let (_conn, channel) = inspector(&world).await;
    for queue in [QUEUE, "svc.record.retry.0", "svc.record.retry.1", DLQ] {
        assert_eq!(depth(&channel, queue).await, 0, "{queue} is empty");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_failing_every_attempt_is_parked_with_its_error() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::AlwaysTransient);
    let consumer = world.consumer(world.config(), handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let publisher = world.publisher().await;
    let event = publisher.event(1).await;
    let body = serde_json::to_vec(&event).unwrap();

    let (_conn, channel) = inspector(&world).await;
    let parked = take(&channel, DLQ, 1).await;
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(p.header("x-error-kind"), "exhausted");
    assert!(
        p.header("x-error")
            .contains("the ledger is down for maintenance"),
        "{:?}",
        p.headers
    );
    assert_eq!(p.header("x-attempt"), "3");
    assert_eq!(p.header("x-handler"), "record");
    assert_eq!(p.header("x-original-exchange"), "orderflow.test");
    assert_eq!(p.header("x-original-routing-key"), "test.happened");
    assert_eq!(p.header("traceparent"), TRACEPARENT);
    chrono::DateTime::parse_from_rfc3339(p.header("x-failed-at")).unwrap();
    assert_eq!(
        p.properties.message_id().as_ref().unwrap().as_str(),
        event.id.to_string()
    );
    assert_eq!(
        p.properties.kind().as_ref().unwrap().as_str(),
        "test.happened"
    );
    assert_eq!(p.body, body, "the body is parked unchanged");

    assert_eq!(handler.calls(), 3, "max_attempts deliveries");
    assert_eq!(metrics.retried("record"), 2);
    assert_eq!(metrics.dead_lettered_of("record", "exhausted"), 1);
    assert_eq!(world.scalar("SELECT count(*) FROM inbox").await, 0);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_are_parked_at_once_and_do_not_block_the_queue() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::Apply);
    // One delivery at a time: a poison message that stayed would block all.
    let config = ConsumerConfig {
        prefetch: 1,
        ..world.config()
    };
    let consumer = world.consumer(config, handler.clone());
    let running = Running::start(consumer).await;
    let publisher = world.publisher().await;

    let good = |n| {
        CloudEvent::new(
            "orderflow/test",
            Happened {
                id: uuid::Uuid::new_v4(),
                n,
            },
        )
    };
    let id = || uuid::Uuid::new_v4().to_string();
    publisher.raw(Some(&id()), b"{\"type\": \"test.happ").await;
    publisher
        .raw(None, &serde_json::to_vec(&good(1)).unwrap())
        .await;
    publisher
        .raw(Some("not-a-uuid"), &serde_json::to_vec(&good(2)).unwrap())
        .await;
    let mut newer = serde_json::to_value(good(3)).unwrap();
    newer["dataversion"] = 2.into();
    publisher
        .raw(Some(&id()), &serde_json::to_vec(&newer).unwrap())
        .await;
    let mut other = serde_json::to_value(good(4)).unwrap();
    other["type"] = "test.vanished".into();
    publisher
        .raw(Some(&id()), &serde_json::to_vec(&other).unwrap())
        .await;
    let mut garbled = serde_json::to_value(good(5)).unwrap();
    garbled["data"]["n"] = "five".into();
    publisher
        .raw(Some(&id()), &serde_json::to_vec(&garbled).unwrap())
        .await;
    let after = publisher.event(6).await;

    let (_conn, channel) = inspector(&world).await;
    let parked = take(&channel, DLQ, 6).await;
    let kinds: Vec<&str> = parked.iter().map(|p| p.header("x-error-kind")).collect();
    assert_eq!(
        kinds,
        [
            "malformed",
            "malformed",
            "malformed",
            "unsupported",
            "unsupported",
            "malformed"
        ],
        "{parked:#?}"
    );
    assert!(parked[1].header("x-error").contains("message_id"));
    assert!(parked[3].header("x-error").contains("dataversion 2"));
    assert!(parked.iter().all(|p| p.header("x-attempt") == "1"));

    orderflow_testkit::wait_until(
        "the good message behind them is applied",
        Duration::from_secs(20),
        || async { world.scalar("SELECT count(*) FROM effects").await == 1 },
    )
    .await;
    assert_eq!(handler.call_times(after.data.id).len(), 1);
    assert_eq!(handler.calls(), 1, "no poison message reached the handler");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_message_is_parked_at_once() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::Reject);
    let consumer = world.consumer(world.config(), handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let event = world.publisher().await.event(1).await;

    let (_conn, channel) = inspector(&world).await;
    let parked = take(&channel, DLQ, 1).await;
    assert_eq!(
        parked[0].header("x-error-kind"),
        FailureKind::Rejected.as_str()
    );
    assert_eq!(
        parked[0].header("x-error"),
        format!("order {} is unknown here", event.data.id)
    );
    assert_eq!(parked[0].header("x-attempt"), "1");
    assert_eq!(handler.calls(), 1, "no retry");
    assert_eq!(metrics.retried("record"), 0);
    assert_eq!(metrics.dead_lettered_of("record", "rejected"), 1);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_fails_after_writing_leaves_nothing_behind() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::WriteThenReject);
    let running = Running::start(world.consumer(world.config(), handler.clone())).await;
    world.publisher().await.event(1).await;

    let (_conn, channel) = inspector(&world).await;
    take(&channel, DLQ, 1).await;
    assert_eq!(handler.calls(), 1);
    assert_eq!(world.scalar("SELECT count(*) FROM effects").await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM inbox").await, 0);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_transient_failure_and_loses_nothing() {
    let world = World::new().await;
    let handler = Recorder::new(Behavior::Apply);
    // Nothing listens on port 1: every checkout fails.
    let unreachable = crate::helpers::pool("postgres://postgres@127.0.0.1:1/nowhere");
    let consumer = orderflow_consumer::Consumer::new(SERVICE, unreachable, world.config())
        .with(handler.clone());
    let metrics = consumer.metrics();
    let running = Running::start(consumer).await;
    let event = world.publisher().await.event(1).await;

    let (_conn, channel) = inspector(&world).await;
    let parked = take(&channel, DLQ, 1).await;
    assert_eq!(parked[0].header("x-error-kind"), "exhausted");
    assert!(
        parked[0]
            .header("x-error")
            .contains("no database connection"),
        "{:?}",
        parked[0].headers
    );
    assert_eq!(
        parked[0].properties.message_id().as_ref().unwrap().as_str(),
        event.id.to_string()
    );
    assert_eq!(metrics.retried("record"), 2);
    assert_eq!(handler.calls(), 0);
    running.stop().await.unwrap();
}
