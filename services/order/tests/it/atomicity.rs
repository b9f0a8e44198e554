use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

/// Makes every transaction that inserted into `outbox` fail at COMMIT, i.e.
/// after the order, its lines and the outbox row were all written.
const FAIL_AT_COMMIT: &str = r"
    CREATE FUNCTION inject_commit_failure() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;
    CREATE CONSTRAINT TRIGGER inject_commit_failure AFTER INSERT ON outbox
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION inject_commit_failure();
";

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_that_fails_after_the_outbox_insert_leaves_neither_order_nor_event() {
    let app = TestApp::spawn().await;
    app.execute(FAIL_AT_COMMIT).await;
    let req = order_request(Uuid::new_v4());

    let status = app.create(req.clone()).await.unwrap_err();

    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("order_lines").await, 0);
    assert_eq!(app.count("outbox").await, 0);

    // Once the fault is gone the same request commits all of it.
    app.execute("DROP TRIGGER inject_commit_failure ON outbox")
        .await;
    let order = app.create(req).await.unwrap();
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("order_lines").await, 2);
    assert_eq!(
        app.count(&format!("outbox WHERE aggregate_id = '{}'", order.id))
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cancel_changes_neither_the_order_nor_the_outbox() {
    let app = TestApp::spawn().await;
    let order = app.create(order_request(Uuid::new_v4())).await.unwrap();
    app.execute(FAIL_AT_COMMIT).await;

    let status = app
        .client
        .clone()
        .cancel_order(orderflow_proto::order::v1::CancelOrderRequest {
            order_id: order.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Internal);
    assert_eq!(app.count("orders WHERE status = 'PENDING'").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_and_returns() {
    let app = TestApp::spawn().await;
    app.create(order_request(Uuid::new_v4())).await.unwrap();
    app.shutdown().await;
}
