use orderflow_proto::order::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

async fn cancel(app: &TestApp, order_id: &str, reason: &str) -> Result<pb::Order, tonic::Status> {
    let req = pb::CancelOrderRequest {
        order_id: order_id.into(),
        reason: reason.into(),
    };
    Ok(app
        .client
        .clone()
        .cancel_order(req)
        .await?
        .into_inner()
        .order
        .unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_pending_order_records_the_reason_and_emits_order_cancelled_once() {
    let app = TestApp::spawn().await;
    let order = app.create(order_request(Uuid::new_v4())).await.unwrap();

    let cancelled = cancel(&app, &order.id, "changed my mind").await.unwrap();
    let again = cancel(&app, &order.id, "").await.unwrap();

    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);
    assert_eq!(
        cancelled.cancel_reason,
        "cancelled by the customer: changed my mind"
    );
    assert_eq!(again, cancelled, "a repeated cancel changes nothing");
    assert_eq!(
        app.count("outbox WHERE event_type = 'order.cancelled'")
            .await,
        1
    );
    let fetched = app
        .client
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: order.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(fetched, cancelled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_order_cannot_be_cancelled() {
    let app = TestApp::spawn().await;
    let order = app.create(order_request(Uuid::new_v4())).await.unwrap();
    app.execute(&format!(
        "UPDATE orders SET status = 'CONFIRMED' WHERE id = '{}'",
        order.id
    ))
    .await;

    let status = cancel(&app, &order.id, "").await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        app.count("outbox WHERE event_type = 'order.cancelled'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_malformed_order_ids() {
    let app = TestApp::spawn().await;
    let unknown = Uuid::new_v4().to_string();
    let mut client = app.client.clone();

    let get = client
        .get_order(pb::GetOrderRequest {
            order_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    let cancelled = cancel(&app, &unknown, "").await.unwrap_err();
    let malformed = client
        .get_order(pb::GetOrderRequest {
            order_id: "nope".into(),
        })
        .await
        .unwrap_err();
    let too_long = cancel(&app, &unknown, &"x".repeat(501)).await.unwrap_err();

    assert_eq!(get.code(), Code::NotFound);
    assert_eq!(cancelled.code(), Code::NotFound);
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(too_long.code(), Code::InvalidArgument);
}
