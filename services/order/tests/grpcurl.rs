//! End to end: the built `order` binary, started as a process on its own
//! database, driven with real grpcurl through server reflection (no proto
//! files). grpcurl comes from `GRPCURL` or PATH; `cargo xtask test` installs it.

use orderflow_testkit::{ServiceBinary, TestBroker, TestDatabase};
use uuid::Uuid;

const BIN: ServiceBinary = ServiceBinary::new(env!("CARGO_BIN_EXE_order"));
const SERVICE: &str = "orderflow.order.v1.OrderService";

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_migrates_serves_and_answers_grpcurl() {
    // Arrange: a blank database, migrated by the binary itself.
    let db = TestDatabase::empty("order").await;
    // `serve` also consumes the saga's events: its queues go to a vhost of
    // this test's own.
    let broker = TestBroker::new();
    BIN.migrate(&db).await;
    let served = BIN.serve(&db, &broker).await;
    let grpcurl = served.grpcurl(SERVICE);

    // Reflection and health.
    grpcurl.assert_reflection_and_health("CreateOrder").await;

    // Create, get, list, cancel.
    let customer = Uuid::new_v4().to_string();
    let create = serde_json::json!({
        "request_id": Uuid::new_v4().to_string(),
        "customer_id": customer,
        "customer_email": "ada@example.com",
        "lines": [{"product_id": Uuid::new_v4().to_string(), "quantity": 2,
                   "unit_price": {"amount_minor": 1250, "currency": "EUR"}}]
    });
    let created = grpcurl.call("CreateOrder", &create).await;
    let id = created["order"]["id"]
        .as_str()
        .expect("order id")
        .to_owned();
    assert_eq!(created["order"]["status"], "ORDER_STATUS_PENDING");
    assert_eq!(created["order"]["total"]["amountMinor"], "2500");
    assert_eq!(
        grpcurl.call("CreateOrder", &create).await,
        created,
        "a retry returns the same order"
    );

    let got = grpcurl
        .call("GetOrder", &serde_json::json!({"order_id": id}))
        .await;
    assert_eq!(got["order"], created["order"]);
    let listed = grpcurl
        .call("ListOrders", &serde_json::json!({"customer_id": customer}))
        .await;
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(1));

    let cancelled = grpcurl
        .call(
            "CancelOrder",
            &serde_json::json!({"order_id": id, "reason": "test"}),
        )
        .await;
    assert_eq!(cancelled["order"]["status"], "ORDER_STATUS_CANCELLED");
    assert_eq!(
        cancelled["order"]["cancelReason"],
        "cancelled by the customer: test"
    );

    // An invalid request: INVALID_ARGUMENT with field violations grpcurl can decode.
    let bad = grpcurl
        .run(
            &["-d", r#"{"request_id":"nope","lines":[]}"#],
            &[&format!("{SERVICE}/CreateOrder")],
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
            && bad.stderr.contains("\"field\":\"request_id\""),
        "{}",
        bad.stderr
    );
    let missing = grpcurl
        .run(
            &[
                "-d",
                &serde_json::json!({"order_id": Uuid::new_v4().to_string()}).to_string(),
            ],
            &[&format!("{SERVICE}/GetOrder")],
        )
        .await;
    assert!(
        missing.stderr.contains("Code: NotFound"),
        "{}",
        missing.stderr
    );

    // SIGTERM: the process drains and exits cleanly.
    let exit = served.terminate().await;
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}
