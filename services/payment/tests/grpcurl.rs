//! End to end: the built `payment` binary, started as a process on its own
//! database and RabbitMQ vhost, driven with real grpcurl through server
//! reflection (no proto files). grpcurl comes from `GRPCURL` or PATH;
//! `cargo xtask test` installs it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_consumer::Handler as _;
use orderflow_events::{
    CloudEvent,
    inventory::{InventoryReserved, ReservedLine},
};
use orderflow_payment::handlers::Charge;
use orderflow_testkit::{ServiceBinary, TestBroker, TestDatabase};
use serde_json::json;
use uuid::Uuid;

const BIN: ServiceBinary = ServiceBinary::new(env!("CARGO_BIN_EXE_payment"));
const SERVICE: &str = "orderflow.payment.v1.PaymentService";

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_migrates_serves_and_answers_grpcurl() {
    // Arrange: a blank database, migrated by the binary itself.
    let db = TestDatabase::empty("payment").await;
    let broker = TestBroker::new();
    BIN.migrate(&db).await;
    let served = BIN.serve(&db, &broker).await;
    let grpcurl = served.grpcurl(SERVICE);

    // Reflection and health.
    grpcurl.assert_reflection_and_health("ListPayments").await;

    // A payment taken by the charge handler on the binary's database.
    let customer = Uuid::new_v4();
    let order = Uuid::new_v4();
    let reserved = InventoryReserved {
        order_id: order,
        customer_id: customer,
        customer_email: "ada@example.com".into(),
        currency: "EUR".into(),
        total_minor: 2500,
        payment_token: "tok_visa".into(),
        lines: vec![ReservedLine {
            product_id: Uuid::new_v4(),
            quantity: 1,
            stock: None,
        }],
    };
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let event = CloudEvent::new("orderflow/inventory", reserved);
    conn.transaction(async |conn| Charge::default().handle(conn, event).await)
        .await
        .unwrap();

    let listed = grpcurl
        .call(
            "ListPayments",
            &json!({"customer_id": customer.to_string()}),
        )
        .await;
    let payments = listed["payments"].as_array().expect("payments");
    assert_eq!(payments.len(), 1, "{listed}");
    assert_eq!(payments[0]["status"], "PAYMENT_STATUS_COMPLETED");
    assert_eq!(payments[0]["amount"]["amountMinor"], "2500");
    let got = grpcurl
        .call("GetPayment", &json!({"order_id": order.to_string()}))
        .await;
    assert_eq!(got["payment"], payments[0]);

    // Invalid requests: INVALID_ARGUMENT with field violations grpcurl decodes.
    let bad = grpcurl
        .run(
            &["-d", r#"{"customer_id":"nope","page_size":501}"#],
            &[&format!("{SERVICE}/ListPayments")],
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
    let missing = grpcurl
        .run(
            &[
                "-d",
                &json!({"payment_id": Uuid::new_v4().to_string()}).to_string(),
            ],
            &[&format!("{SERVICE}/GetPayment")],
        )
        .await;
    assert!(
        missing.stderr.contains("Code: NotFound"),
        "{}",
        missing.stderr
    );

    // SIGTERM: the server and the consumer stop, and the process exits cleanly.
    let exit = served.terminate().await;
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}
