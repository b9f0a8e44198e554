//! Every event delivered a second time changes nothing.

use std::time::Duration;

use uuid::Uuid;

use crate::harness::{SERVICES, System, cancel_request, create_request, line, wait_for};

/// Everything the saga's effects consist of, as comparable text.
async fn effects(system: &System) -> Vec<(String, Vec<String>)> {
    let queries = [
        (
            "order",
            "SELECT id::text || ' ' || status || ' ' || coalesce(cancel_reason, '') FROM orders ORDER BY id",
        ),
        (
            "inventory",
            "SELECT product_id::text || ' on_hand=' || on_hand || ' reserved=' || reserved FROM products ORDER BY product_id",
        ),
        (
            "inventory",
            "SELECT order_id::text || ' ' || status FROM reservations ORDER BY order_id",
        ),
        (
            "inventory",
            "SELECT order_id::text || ' ' || product_id || ' ' || quantity FROM reservation_lines ORDER BY 1",
        ),
        (
            "payment",
            "SELECT order_id::text || ' ' || status || ' ' || amount_minor FROM payments ORDER BY order_id",
        ),
        (
            "payment",
            "SELECT order_id::text FROM cancelled_orders ORDER BY order_id",
        ),
        (
            "notification",
            "SELECT event_id::text || ' ' || event_type FROM notifications ORDER BY event_id",
        ),
    ];
    let mut all = Vec::new();
    for (svc, q) in queries {
        let rows = system
            .sql(svc)
            .query(q, &[])
            .await
            .unwrap_or_else(|e| panic!("{svc}: {q}: {e}"));
        all.push((q.to_owned(), rows.iter().map(|r| r.get(0)).collect()));
    }
    for svc in SERVICES {
        for q in [
            "SELECT count(*)::text FROM outbox",
            "SELECT count(*)::text || ' rows, ' || count(DISTINCT message_id) || ' message ids' FROM inbox",
        ] {
            let row = system.sql(svc).query_one(q, &[]).await.unwrap();
            all.push((format!("{svc}: {q}"), vec![row.get(0)]));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_delivered_twice_takes_effect_once() {
    let system = System::start().await;
    let (plenty, scarce) = (
        system.stock_product(100).await,
        system.stock_product(2).await,
    );
    let mut client = system.order_client().await;
    let mut ids = Vec::new();
    // Every path of the saga: confirmed, declined, out of stock, cancelled.
    for i in 0..16 {
        let (lines, token) = match i % 4 {
            0 | 1 => (vec![line(plenty, 2)], "tok_visa"),
            2 => (vec![line(plenty, 1)], "tok_declined"),
            _ => (vec![line(scarce, 1), line(plenty, 1)], "tok_visa"),
        };
        let order = client
            .create_order(create_request(lines, token))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        if i % 8 == 1 {
            // Right away: usually before the payment; refused if too late.
            let _ = client
                .cancel_order(cancel_request(&order.id, "duplicates test"))
                .await;
        }
        ids.push(order.id.parse::<Uuid>().unwrap());
    }
    wait_for(
        "the batch leaves PENDING",
        Duration::from_secs(30),
        || async {
            let pending = system
                .scalar(
                    "order",
                    "SELECT count(*) FROM orders WHERE status = 'PENDING'",
                    &[],
                )
                .await;
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} PENDING"))
            }
        },
    )
    .await;
    system.wait_idle(Duration::from_secs(30)).await;
    system.wait_queues_drained(Duration::from_secs(30)).await;

    let before = effects(&system).await;
    let inbox = system.inbox().await;
    let expected = crate::harness::expected_consumptions(&system.routes(), &system.outbox().await);
    assert_eq!(
        inbox, expected,
        "at idle every inbox row is a routed, published event and vice versa"
    );
    let duplicates_before = system.duplicates_logged();

    let republished = system.republish_outboxes().await;
    assert!(republished > 0, "the batch published events");

    // Every consumer that applied an event gets its copy and logs it as a
    // duplicate: count those, exact, no sleeping.
    let wanted = duplicates_before + inbox.len();
    wait_for(
        &format!(
            "the consumers log {} duplicate deliveries ({republished} events republished)",
            inbox.len()
        ),
        Duration::from_secs(60),
        || async {
            let seen = system.duplicates_logged();
            if seen >= wanted {
                Ok(())
            } else {
                Err(format!(
                    "{} duplicates so far; queues: {}",
                    seen - duplicates_before,
                    system.queue_summary()
                ))
            }
        },
    )
    .await;
    system.wait_queues_drained(Duration::from_secs(30)).await;
    system.wait_idle(Duration::from_secs(10)).await;

    assert_eq!(
        system.duplicates_logged() - duplicates_before,
        inbox.len(),
        "one duplicate per (event, consumer) and nothing else"
    );
    let after = effects(&system).await;
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "changed by the duplicates: {what}");
    }
    assert_eq!(system.inbox().await, inbox, "no inbox row added");
    for svc in SERVICES {
        let (rows, ids) = {
            let r = system
                .sql(svc)
                .query_one(
                    "SELECT count(*), count(DISTINCT message_id) FROM inbox",
                    &[],
                )
                .await
                .unwrap();
            (r.get::<_, i64>(0), r.get::<_, i64>(1))
        };
        assert_eq!(rows, ids, "{svc}: one inbox row per message id");
    }
    println!(
        "duplicates: {} orders, {republished} events republished, {} duplicate deliveries absorbed",
        ids.len(),
        inbox.len()
    );
}
