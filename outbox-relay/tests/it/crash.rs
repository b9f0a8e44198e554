use std::time::Duration;

use rand::Rng as _;
use uuid::Uuid;

use crate::helpers::{Consumer, World, first_seen_by_aggregate, insert};

#[tokio::test(flavor = "multi_thread")]
async fn every_event_survives_five_sigkills_of_the_relay() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 6_250; // 50,000 events in all
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;

    // Concurrent writers, 25 events per transaction, each on its own aggregates.
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let url = world.db.url().to_owned();
            tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                let aggs: Vec<Uuid> = (0..25).map(|_| Uuid::new_v4()).collect();
                for n in 0..(PER_WRITER / 25) as i32 {
                    let round: Vec<String> = aggs.iter().map(ToString::to_string).collect();
                    let ns = vec![n; 25];
                    client
                        .execute(
                            "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
                             SELECT gen_random_uuid(), 'test', a::uuid, 'test.happened', jsonb_build_object('agg', a, 'n', n)
                             FROM unnest($1::text[], $2::int[]) AS t(a, n)",
                            &[&round, &ns],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();

    // Kill the relay five times at random points of the stream: each time
    // after it has delivered a random 1,000 to 6,000 more events.
    let mut relay = world.relay(&[]).await;
    let mut kills = 0;
    while kills < 5 {
        let target = consumer.distinct() + rand::rng().random_range(1_000..6_000);
        consumer.wait_for(target, Duration::from_secs(120)).await;
        relay.kill().await;
        kills += 1;
        relay = world.relay(&[]).await;
    }
    for w in writers {
        w.await.unwrap();
    }

    let total = WRITERS * PER_WRITER;
    consumer.wait_for(total, Duration::from_secs(240)).await;
    relay.terminate().await;

    let received = consumer.snapshot();
    let (by_agg, duplicates) = first_seen_by_aggregate(&received);
    let ids: Vec<String> = world
        .sql()
        .await
        .query("SELECT id::text FROM outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let seen: std::collections::HashSet<&str> =
        received.iter().map(|m| m.message_id.as_str()).collect();
    let missing = ids.iter().filter(|id| !seen.contains(id.as_str())).count();
    eprintln!(
        "crash test: {} events written, {} delivered, {} distinct, {duplicates} duplicates, {missing} missing, {kills} SIGKILLs",
        ids.len(),
        received.len(),
        seen.len()
    );
    assert_eq!(ids.len(), total);
    assert_eq!(missing, 0);
    for (agg, ns) in &by_agg {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "aggregate {agg} out of order: {ns:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_keep_per_aggregate_order_when_one_is_killed() {
    const AGGREGATES: usize = 200;
    const EVENTS: i32 = 100;
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["#"]).await;
    let replicas = vec![
        world.relay(&[]).await,
        world.relay(&[]).await,
        world.relay(&[]).await,
    ];
    // Wait until the three replicas share the partitions.
    orderflow_testkit::wait_until(
        "three replicas hold leases",
        Duration::from_secs(20),
        || async {
            world
                .scalar("SELECT count(DISTINCT owner) FROM outbox_lease WHERE expires_at > now()")
                .await
                == 3
        },
    )
    .await;

    let client = world.sql().await;
    let aggs: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::new_v4()).collect();
    let mut replicas = replicas.into_iter();
    let victim = replicas.next().unwrap();
    let survivors: Vec<_> = replicas.collect();
    let mut victim = Some(victim);
    for n in 0..EVENTS {
        let round: Vec<(Uuid, i32)> = aggs.iter().map(|a| (*a, n)).collect();
        insert(&client, &round, "test.happened").await;
        if n == EVENTS / 3 {
            victim.take().unwrap().kill().await;
        }
    }

    let total = AGGREGATES * EVENTS as usize;
    consumer.wait_for(total, Duration::from_secs(240)).await;

    let (by_agg, duplicates) = first_seen_by_aggregate(&consumer.snapshot());
    assert_eq!(by_agg.len(), AGGREGATES);
    for (agg, ns) in &by_agg {
        assert_eq!(
            ns,
            &(0..i64::from(EVENTS)).collect::<Vec<_>>(),
            "aggregate {agg}: out of order or missing"
        );
    }
    eprintln!(
        "3 replicas, one SIGKILLed: {total} events in order per aggregate, {duplicates} duplicate deliveries"
    );
    for r in survivors {
        r.terminate().await;
    }
}
