//! End to end: the built `inventory` binary, started as a process on its own
//! database and broker vhost, driven with real grpcurl through server
//! reflection (no proto files). grpcurl comes from `GRPCURL` or PATH;
//! `cargo xtask test` installs it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use lapin::{
    BasicProperties, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use orderflow_events::{
    CloudEvent, Event as _,
    order::{OrderPlaced, OrderPlacedLine},
};
use orderflow_testkit::{ServiceBinary, TestBroker, TestDatabase};
use serde_json::json;
use uuid::Uuid;

const BIN: ServiceBinary = ServiceBinary::new(env!("CARGO_BIN_EXE_inventory"));
const SERVICE: &str = "orderflow.inventory.v1.InventoryService";

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_migrates_serves_and_answers_grpcurl() {
    // Arrange: a blank database, migrated by the binary itself.
    let db = TestDatabase::empty("inventory").await;
    let broker = TestBroker::new();
    let refused = BIN
        .command("serve")
        .env("DATABASE_URL", db.url())
        .env("GRPC_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "serve must refuse an unmigrated database"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("inventory migrate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    BIN.migrate(&db).await;
    let served = BIN.serve(&db, &broker).await;
    let grpcurl = served.grpcurl(SERVICE);

    // Reflection and health.
    grpcurl.assert_reflection_and_health("AdjustStock").await;

    // Upsert, get, list, adjust.
    let id = Uuid::new_v4().to_string();
    let upsert = json!({
        "product_id": id,
        "sku": "MUG-01",
        "name": "Mug",
        "unit_price": {"amount_minor": 899, "currency": "EUR"},
        "on_hand": 12
    });
    let created = grpcurl.call("UpsertProduct", &upsert).await;
    assert_eq!(created["created"], true);
    assert_eq!(created["product"]["productId"], id.as_str());
    assert_eq!(created["product"]["onHand"], "12");
    let again = grpcurl.call("UpsertProduct", &upsert).await;
    assert_eq!(
        again["product"], created["product"],
        "a retry changes nothing"
    );
    assert_eq!(again.get("created"), None, "false is omitted in JSON");

    let got = grpcurl.call("GetProduct", &json!({"product_id": id})).await;
    assert_eq!(got["product"], created["product"]);
    let listed = grpcurl.call("ListProducts", &json!({})).await;
    assert_eq!(listed["products"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["products"][0]["sku"], "MUG-01");

    let adjusted = grpcurl
        .call(
            "AdjustStock",
            &json!({"product_id": id, "delta": "-2", "reason": "broken in transit"}),
        )
        .await;
    assert_eq!(adjusted["product"]["onHand"], "10");

    // Invalid requests: statuses with details grpcurl can decode.
    let bad = grpcurl
        .call_raw(
            "UpsertProduct",
            &json!({"product_id": "nope", "sku": "", "on_hand": -1}),
        )
        .await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("Code: InvalidArgument"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("google.rpc.BadRequest")
            && bad.stderr.contains("\"field\":\"product_id\"")
            && bad.stderr.contains("\"field\":\"on_hand\""),
        "{}",
        bad.stderr
    );
    // Admin RPCs need the bearer token; customer RPCs need none.
    let customer = served.grpcurl(SERVICE).without_token();
    let refused = customer
        .call_raw(
            "AdjustStock",
            &json!({"product_id": id, "delta": "5", "reason": "delivery"}),
        )
        .await;
    assert!(
        !refused.ok && refused.stderr.contains("Code: Unauthenticated"),
        "{}",
        refused.stderr
    );
    let seen = customer
        .call("GetProduct", &json!({"product_id": id}))
        .await;
    assert_eq!(
        seen["product"]["onHand"], "10",
        "the refused call changed nothing"
    );
    let short = grpcurl
        .call_raw(
            "AdjustStock",
            &json!({"product_id": id, "delta": "-11", "reason": "stock take"}),
        )
        .await;
    assert!(
        short.stderr.contains("Code: FailedPrecondition"),
        "{}",
        short.stderr
    );
    let missing = grpcurl
        .call_raw(
            "GetProduct",
            &json!({"product_id": Uuid::new_v4().to_string()}),
        )
        .await;
    assert!(
        missing.stderr.contains("Code: NotFound"),
        "{}",
        missing.stderr
    );

    // The consumer runs beside the server: an order.placed on the order
    // exchange reaches reserve-stock and reserves 3 of the 10 units.
    let order_id = Uuid::now_v7();
    let placed = CloudEvent::new(
        "orderflow/order",
        OrderPlaced {
            order_id,
            customer_id: Uuid::new_v4(),
            customer_email: "ada@example.com".into(),
            currency: "EUR".into(),
            total_minor: 3 * 899,
            lines: vec![OrderPlacedLine {
                product_id: id.parse().unwrap(),
                quantity: 3,
                unit_price_minor: 899,
            }],
            payment_token: "tok_visa".into(),
            customer_phone: String::new(),
        },
    );
    publish_when_routed(&broker, &placed).await;
    let sql = tokio::sync::Mutex::new(AsyncPgConnection::establish(db.url()).await.unwrap());
    orderflow_testkit::wait_until(
        "the order's stock is reserved",
        Duration::from_secs(30),
        || {
            let query = diesel::sql_query(
                "SELECT 1 FROM reservations WHERE order_id = $1 AND status = 'RESERVED'",
            )
            .bind::<diesel::sql_types::Uuid, _>(order_id);
            let sql = &sql;
            async move { query.execute(&mut *sql.lock().await).await.unwrap() == 1 }
        },
    )
    .await;
    let got = grpcurl.call("GetProduct", &json!({"product_id": id})).await;
    assert_eq!(got["product"]["onHand"], "7");
    assert_eq!(got["product"]["reserved"], "3");

    // SIGTERM: the server and the consumer stop, and the process exits cleanly.
    let exit = served.terminate().await;
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}

/// Publishes `event` on its producer's exchange (as the relay would) once a
/// queue is bound to it: a mandatory publish that nothing routes comes back,
/// so it is repeated until the consumer has declared its queues.
async fn publish_when_routed(broker: &TestBroker, event: &CloudEvent<OrderPlaced>) {
    let conn = orderflow_amqp::connect(&broker.url(), "inventory-test/publisher")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    orderflow_amqp::Topology::declare_exchange(&channel, OrderPlaced::producer())
        .await
        .unwrap();
    let body = serde_json::to_vec(event).unwrap();
    let exchange = orderflow_amqp::Topology::exchange(OrderPlaced::producer());
    orderflow_testkit::wait_until(
        "a queue is bound to order.placed",
        Duration::from_secs(30),
        || {
            let (channel, body, exchange) = (&channel, &body, &exchange);
            async move {
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        OrderPlaced::TYPE.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        body,
                        BasicProperties::default()
                            .with_message_id(event.id.to_string().into())
                            .with_type(OrderPlaced::TYPE.into())
                            .with_content_type("application/cloudevents+json".into())
                            .with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                matches!(confirm, Confirmation::Ack(None))
            }
        },
    )
    .await;
}
