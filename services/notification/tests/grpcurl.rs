//! End to end: the built `notification` binary, started as a process on its own
//! database and RabbitMQ vhost, driven with real grpcurl through server
//! reflection (no proto files). grpcurl comes from `GRPCURL` or PATH;
//! `cargo xtask test` installs it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_consumer::Handler as _;
use orderflow_events::{
    CloudEvent,
    order::{OrderPlaced, OrderPlacedLine},
};
use orderflow_notification::handlers::NotifyOrderPlaced;
use orderflow_testkit::{ServiceBinary, TestBroker, TestDatabase};
use serde_json::json;
use uuid::Uuid;

const BIN: ServiceBinary = ServiceBinary::new(env!("CARGO_BIN_EXE_notification"));
const SERVICE: &str = "orderflow.notification.v1.NotificationService";

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_migrates_serves_and_answers_grpcurl() {
    // Arrange: a blank database, migrated by the binary itself.
    let db = TestDatabase::empty("notification").await;
    let broker = TestBroker::new();
    BIN.migrate(&db).await;
    let served = BIN.serve(&db, &broker).await;
    let grpcurl = served.grpcurl(SERVICE);

    // Reflection and health.
    grpcurl
        .assert_reflection_and_health("ListNotifications")
        .await;

    // A notification sent by the order.placed handler on the binary's database.
    let customer = Uuid::new_v4();
    let order = Uuid::new_v4();
    let placed = OrderPlaced {
        order_id: order,
        customer_id: customer,
        customer_email: "ada@example.com".into(),
        currency: "EUR".into(),
        total_minor: 2500,
        lines: vec![OrderPlacedLine {
            product_id: Uuid::new_v4(),
            quantity: 2,
            unit_price_minor: 1250,
        }],
        payment_token: "tok_visa".into(),
        customer_phone: "+4915112345678".into(),
    };
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let event = CloudEvent::new("orderflow/order", placed);
    let event_id = event.id.to_string();
    conn.transaction(async |conn| NotifyOrderPlaced.handle(conn, event).await)
        .await
        .unwrap();

    for filter in [
        json!({"customer_id": customer.to_string()}),
        json!({"order_id": order.to_string(), "page_size": 10}),
    ] {
        let listed = grpcurl.call("ListNotifications", &filter).await;
        let notifications = listed["notifications"].as_array().expect("notifications");
        assert_eq!(notifications.len(), 1, "{listed}");
        let n = &notifications[0];
        assert_eq!(n["channel"], "CHANNEL_SMS");
        assert_eq!(n["recipient"], "+4915112345678");
        assert_eq!(n["eventType"], "order.placed");
        assert_eq!(n["eventId"], event_id);
        assert!(n["body"].as_str().unwrap().contains("25.00 EUR"), "{n}");
    }

    // Invalid requests: INVALID_ARGUMENT with field violations grpcurl decodes.
    let bad = grpcurl
        .run(
            &["-d", r#"{"page_size":501}"#],
            &[&format!("{SERVICE}/ListNotifications")],
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
            && bad.stderr.contains("\"field\":\"customer_id\"")
            && bad.stderr.contains("\"field\":\"page_size\""),
        "{}",
        bad.stderr
    );

    // SIGTERM: the server and the consumer stop, and the process exits cleanly.
    let exit = served.terminate().await;
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}
