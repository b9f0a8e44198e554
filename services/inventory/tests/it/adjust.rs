use orderflow_proto::inventory::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::{helpers::TestApp, upsert::violations};

fn adjust(product: Uuid, delta: i64, reason: &str) -> pb::AdjustStockRequest {
    pb::AdjustStockRequest {
        product_id: product.to_string(),
        delta,
        reason: reason.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn adjust_adds_and_removes_stock_with_a_stock_adjusted_event() {
    let app = TestApp::spawn().await;
    let id = app.product(10).await;
    let mut client = app.client.clone();

    let added = client
        .adjust_stock(adjust(id, 5, "delivery 42"))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((added.on_hand, added.reserved), (15, 0));
    let removed = client
        .adjust_stock(adjust(id, -15, "  water damage "))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(removed.on_hand, 0);
    assert_eq!(app.stock(id).await, (0, 0));

    let events = app.events().await;
    let adjusted: Vec<_> = events
        .iter()
        .filter(|(t, _)| t == "inventory.stock_adjusted")
        .map(|(_, body)| &body["data"])
        .collect();
    assert_eq!(adjusted.len(), 2);
    assert_eq!(adjusted[0]["delta"], 5);
    assert_eq!(adjusted[0]["on_hand"], 15);
    assert_eq!(adjusted[0]["reason"], "delivery 42");
    assert_eq!(adjusted[1]["delta"], -15);
    assert_eq!(adjusted[1]["on_hand"], 0);
    assert_eq!(adjusted[1]["reason"], "water damage");
    assert_eq!(adjusted[1]["product_id"], id.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn adjust_below_zero_is_failed_precondition_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.product(3).await;
    let before = app.get(id).await;
    let events_before = app.count("outbox").await;

    let err = app
        .client
        .clone()
        .adjust_stock(adjust(id, -4, "stock take"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let failure = err
        .get_details_precondition_failure()
        .expect("PreconditionFailure detail");
    assert_eq!(failure.violations[0].subject, format!("products/{id}"));
    assert!(err.message().contains("3 on hand"), "{}", err.message());

    assert_eq!(app.get(id).await, before, "nothing changed");
    assert_eq!(app.count("outbox").await, events_before, "no event");
}

#[tokio::test(flavor = "multi_thread")]
async fn adjust_overflow_is_failed_precondition() {
    let app = TestApp::spawn().await;
    let id = app.product(i64::MAX - 1).await;
    let err = app
        .client
        .clone()
        .adjust_stock(adjust(id, 2, "too many"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(app.stock(id).await, (i64::MAX - 1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn adjust_of_an_unknown_product_is_not_found() {
    let app = TestApp::spawn().await;
    let err = app
        .client
        .clone()
        .adjust_stock(adjust(Uuid::new_v4(), 1, "delivery"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.count("outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_adjustment_lists_every_bad_field() {
    let app = TestApp::spawn().await;
    let id = app.product(3).await;
    let mut client = app.client.clone();
    let err = client
        .adjust_stock(pb::AdjustStockRequest {
            product_id: String::new(),
            delta: 0,
            reason: "   ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["product_id", "delta", "reason"]);
    let err = client
        .adjust_stock(adjust(id, 1, &"r".repeat(501)))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["reason"]);
    let err = client
        .adjust_stock(adjust(id, 1, "line\nbreak"))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["reason"]);
    assert_eq!(app.stock(id).await, (3, 0));
}
