use std::sync::Arc;

use orderflow_inventory::handlers::{ReserveStock, status};
use uuid::Uuid;

use crate::helpers::{TestApp, handle, handle_on, placed};

#[tokio::test(flavor = "multi_thread")]
async fn reserve_takes_every_line_and_writes_inventory_reserved() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.product(10).await, app.product(3).await);
    let order = placed(&[(a, 4), (b, 3)]);

    handle_on(&app, &ReserveStock, order.clone()).await;

    assert_eq!(app.stock(a).await, (6, 4));
    assert_eq!(app.stock(b).await, (0, 3));
    assert_eq!(
        app.reservation(order.order_id).await,
        Some((status::RESERVED.to_owned(), None))
    );
    assert_eq!(app.count("reservation_lines").await, 2);
    let events = app.events().await;
    let (event_type, body) = events.last().unwrap();
    assert_eq!(event_type, "inventory.reserved");
    assert_eq!(body["source"], "orderflow/inventory");
    assert_eq!(body["subject"], order.order_id.to_string());
    let data = &body["data"];
    assert_eq!(data["order_id"], order.order_id.to_string());
    assert_eq!(data["customer_id"], order.customer_id.to_string());
    assert_eq!(data["customer_email"], "ada@example.com");
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["total_minor"], order.total_minor);
    assert_eq!(data["payment_token"], "tok_visa");
    let mut lines: Vec<(String, i64)> = data["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["product_id"].as_str().unwrap().to_owned(),
                l["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    let mut expected = vec![(a.to_string(), 4), (b.to_string(), 3)];
    expected.sort();
    assert_eq!(lines, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.product(10).await, app.product(2).await);
    let events_before = app.count("outbox").await;
    let order = placed(&[(a, 5), (b, 3)]);

    handle_on(&app, &ReserveStock, order.clone()).await;

    assert_eq!(
        app.stock(a).await,
        (10, 0),
        "the line in stock is not taken either"
    );
    assert_eq!(app.stock(b).await, (2, 0));
    let (status, reason) = app.reservation(order.order_id).await.unwrap();
    assert_eq!(status, status::REJECTED);
    let reason = reason.unwrap();
    assert!(
        reason.contains(&format!(
            "insufficient stock for product {b}: 3 requested, 2 available"
        )),
        "{reason}"
    );
    assert_eq!(app.count("reservation_lines").await, 0);
    let events = app.events().await;
    assert_eq!(events.len() as i64, events_before + 1);
    let (event_type, body) = events.last().unwrap();
    assert_eq!(event_type, "inventory.rejected");
    let data = &body["data"];
    assert_eq!(data["order_id"], order.order_id.to_string());
    assert_eq!(data["customer_id"], order.customer_id.to_string());
    assert_eq!(data["reason"], reason);
    assert_eq!(
        data["shortages"],
        serde_json::json!([{"product_id": b.to_string(), "requested": 3, "available": 2}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_product_has_nothing_available() {
    let app = TestApp::spawn().await;
    let known = app.product(10).await;
    let unknown = Uuid::new_v4();
    let order = placed(&[(known, 1), (unknown, 2)]);

    handle_on(&app, &ReserveStock, order.clone()).await;

    assert_eq!(app.stock(known).await, (10, 0));
    let (status, reason) = app.reservation(order.order_id).await.unwrap();
    assert_eq!(status, status::REJECTED);
    assert!(
        reason
            .unwrap()
            .contains(&format!("unknown product {unknown}"))
    );
    let (_, body) = app.events().await.pop().unwrap();
    assert_eq!(
        body["data"]["shortages"],
        serde_json::json!([{"product_id": unknown.to_string(), "requested": 2, "available": 0}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_listed_twice_is_reserved_as_the_sum() {
    let app = TestApp::spawn().await;
    let a = app.product(5).await;
    let too_much = placed(&[(a, 3), (a, 3)]);
    handle_on(&app, &ReserveStock, too_much.clone()).await;
    assert_eq!(
        app.reservation(too_much.order_id).await.unwrap().0,
        status::REJECTED
    );
    assert_eq!(app.stock(a).await, (5, 0));

    let fits = placed(&[(a, 2), (a, 3)]);
    handle_on(&app, &ReserveStock, fits.clone()).await;
    assert_eq!(
        app.reservation(fits.order_id).await.unwrap().0,
        status::RESERVED
    );
    assert_eq!(app.stock(a).await, (0, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_without_valid_lines_is_rejected_not_stuck() {
    let app = TestApp::spawn().await;
    let a = app.product(5).await;
    for order in [placed(&[]), placed(&[(a, 0)]), placed(&[(a, -1)])] {
        handle_on(&app, &ReserveStock, order.clone()).await;
        let (status, reason) = app.reservation(order.order_id).await.unwrap();
        assert_eq!(status, status::REJECTED);
        assert!(reason.unwrap().starts_with("invalid order: "));
    }
    assert_eq!(app.stock(a).await, (5, 0));
    let rejected = app
        .events()
        .await
        .into_iter()
        .filter(|(t, _)| t == "inventory.rejected")
        .count();
    assert_eq!(rejected, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_order_placed_of_the_same_order_reserves_nothing_more() {
    let app = TestApp::spawn().await;
    let a = app.product(10).await;
    let order = placed(&[(a, 4)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    let events = app.count("outbox").await;

    // Another delivery under a new message id (a replay): the row exists.
    handle_on(&app, &ReserveStock, order.clone()).await;

    assert_eq!(app.stock(a).await, (6, 4));
    assert_eq!(app.count("outbox").await, events);
    // A rejected order is not reconsidered when stock arrives later either.
    let short = placed(&[(a, 7)]);
    handle_on(&app, &ReserveStock, short.clone()).await;
    app.client
        .clone()
        .adjust_stock(orderflow_proto::inventory::v1::AdjustStockRequest {
            product_id: a.to_string(),
            delta: 10,
            reason: "delivery".into(),
        })
        .await
        .unwrap();
    handle_on(&app, &ReserveStock, short.clone()).await;
    assert_eq!(
        app.reservation(short.order_id).await.unwrap().0,
        status::REJECTED
    );
    assert_eq!(app.stock(a).await, (16, 4));
}

/// The oversell test: 200 orders of 1 unit race for 50 units, each in its
/// own transaction on its own connection (a pool of 40: PostgreSQL allows
/// 100 connections in all, shared with the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_concurrent_orders_never_oversell_fifty_units() {
    let app = TestApp::spawn().await;
    let product = app.product(50).await;
    let orders: Vec<_> = (0..200).map(|_| placed(&[(product, 1)])).collect();
    let start = Arc::new(tokio::sync::Barrier::new(orders.len()));

    let tasks: Vec<_> = orders
        .iter()
        .cloned()
        .map(|order| {
            let pool = app.pool.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut conn = pool.get().await.expect("pooled connection");
                handle(&mut conn, &ReserveStock, order).await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("every reservation is handled without error");
    }

    assert_eq!(app.stock(product).await, (0, 50));
    assert_eq!(
        app.count("reservations WHERE status = 'RESERVED'").await,
        50
    );
    assert_eq!(
        app.count("reservations WHERE status = 'REJECTED'").await,
        150
    );
    assert_eq!(app.count("reservation_lines").await, 50);
    assert_eq!(
        app.count("outbox WHERE event_type = 'inventory.reserved'")
            .await,
        50
    );
    assert_eq!(
        app.count("outbox WHERE event_type = 'inventory.rejected'")
            .await,
        150
    );
}

/// Two orders that want the same two products in opposite line order: the
/// locks are taken in product_id order, so they queue instead of deadlock.
#[tokio::test(flavor = "multi_thread")]
async fn crossing_orders_do_not_deadlock() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.product(1000).await, app.product(1000).await);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let lines = if i % 2 == 0 {
                [(a, 1), (b, 1)]
            } else {
                [(b, 1), (a, 1)]
            };
            let order = placed(&lines);
            let pool = app.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await.expect("pooled connection");
                handle(&mut conn, &ReserveStock, order).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no deadlock error");
    }
    assert_eq!(app.stock(a).await, (960, 40));
    assert_eq!(app.stock(b).await, (960, 40));
}
