//! A consumer killed between its commit and its ack.

use std::time::Duration;

use crate::harness::{SETTLE, System};

#[tokio::test(flavor = "multi_thread")]
async fn inventory_killed_between_commit_and_ack_reserves_once() {
    let mut system =
        System::start_with(&[("inventory", "CONSUMER_FAULT_EXIT_AFTER_COMMIT", "1")]).await;
    let product = system.stock_product(10).await;

    let order_id = system.create_order(&[(product, 3)], "tok_visa").await;
    // reserve-stock commits, then the process exits before the ack.
    let mut crashed = system.take_proc("inventory");
    let status = crashed.wait_exit(SETTLE).await;
    assert_eq!(
        status.code(),
        Some(86),
        "CONSUMER_FAULT_EXIT_AFTER_COMMIT exits with 86 after the first commit, got {status}"
    );
    assert_eq!(
        system
            .scalar(
                "inventory",
                "SELECT count(*) FROM inbox WHERE handler = 'reserve-stock'",
                &[],
            )
            .await,
        1,
        "the reservation committed before the exit"
    );

    system.restart("inventory").await;
    let order = system.wait_until_settled(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "GetOrder: {order}"
    );
    system.wait_idle(Duration::from_secs(30)).await;

    // The broker redelivered the unacked order.placed: a duplicate.
    let logs = system.logs("inventory");
    assert_eq!(
        logs.count_containing(&["duplicate delivery", "reserve-stock"]),
        1,
        "the restarted inventory absorbs the redelivered order.placed as a duplicate"
    );
    let reservations = system
        .sql("inventory")
        .query(
            "SELECT r.status, l.quantity FROM reservations r \
             JOIN reservation_lines l USING (order_id) WHERE r.order_id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    let seen: Vec<(String, i32)> = reservations.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        seen,
        vec![("COMMITTED".to_owned(), 3)],
        "one reservation of 3 units, committed"
    );
    assert_eq!(
        system
            .scalar(
                "inventory",
                "SELECT count(*) FROM outbox WHERE event_type = 'inventory.reserved'",
                &[],
            )
            .await,
        1,
        "one inventory.reserved"
    );
    assert_eq!(system.stock(product).await, (7, 0), "stock moved once");
    assert_eq!(
        system
            .scalar(
                "payment",
                "SELECT count(*) FROM payments WHERE status = 'COMPLETED'",
                &[],
            )
            .await,
        1,
        "charged once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_killed_after_committing_a_batch_applies_each_order_once() {
    let mut system = System::start().await;
    let product = system.stock_product(100).await;
    // Inventory is away while 20 orders are placed: their order.placed wait
    // in its queue, so the restarted consumer takes them in batches.
    system.kill("inventory").await;
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(system.create_order(&[(product, 1)], "tok_visa").await);
    }
    crate::harness::wait_for(
        "the relay published the 20 order.placed",
        SETTLE,
        || async {
            match system
                .scalar("order", "SELECT count(*) FROM outbox_pending", &[])
                .await
            {
                0 => Ok(()),
                n => Err(format!("{n} pending")),
            }
        },
    )
    .await;
    // Commits a batch of several, then exits before acking it.
    system
        .restart_with("inventory", &[("CONSUMER_FAULT_EXIT_AFTER_BATCH", "1")])
        .await;
    let mut crashed = system.take_proc("inventory");
    let status = crashed.wait_exit(SETTLE).await;
    assert_eq!(
        status.code(),
        Some(86),
        "exits after the batch, got {status}"
    );
    let committed = system
        .scalar(
            "inventory",
            "SELECT count(*) FROM inbox WHERE handler = 'reserve-stock'",
            &[],
        )
        .await;
    assert!(
        committed >= 2,
        "a batch committed before the exit: {committed} reservations"
    );

    system.restart("inventory").await;
    for order_id in &orders {
        let order = system.wait_until_settled(*order_id).await;
        assert_eq!(
            order["status"], "ORDER_STATUS_CONFIRMED",
            "GetOrder: {order}"
        );
    }
    system.wait_idle(Duration::from_secs(30)).await;
    assert!(
        system
            .logs("inventory")
            .count_containing(&["duplicate delivery", "reserve-stock"])
            >= 2,
        "the unacked batch came back and was absorbed as duplicates"
    );
    let count = |sql: &'static str| system.scalar("inventory", sql, &[]);
    assert_eq!(
        count("SELECT count(*) FROM reservations WHERE status = 'COMMITTED'").await,
        20
    );
    assert_eq!(count("SELECT count(*) FROM reservation_lines").await, 20);
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE event_type = 'inventory.reserved'").await,
        20,
        "one inventory.reserved per order"
    );
    assert_eq!(
        system.stock(product).await,
        (80, 0),
        "stock moved once per order"
    );
    assert_eq!(
        system
            .scalar(
                "payment",
                "SELECT count(*) FROM payments WHERE status = 'COMPLETED'",
                &[]
            )
            .await,
        20,
        "charged once per order"
    );
}
