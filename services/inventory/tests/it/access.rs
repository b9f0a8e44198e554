//! Admin RPCs need the bearer token (orderflow_grpc::access); a refused
//! call changes nothing.

use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{TestApp, product_request};

#[tokio::test]
async fn admin_rpcs_without_the_right_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    // A customer's client: no token.
    let mut anonymous = InventoryServiceClient::new(app.channel());
    let id = Uuid::new_v4();
    let refused = anonymous
        .upsert_product(product_request(id, "SKU-ANON", 5))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "ADMIN_TOKEN_REQUIRED"
    );

    let mut wrong = tonic::Request::new(product_request(id, "SKU-ANON", 5));
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer not-the-admin-token-at-all".parse().unwrap(),
    );
    let refused = anonymous.upsert_product(wrong).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "ADMIN_TOKEN_INVALID"
    );
    assert!(
        !refused.message().contains(orderflow_testkit::ADMIN_TOKEN),
        "the token is never echoed"
    );
    assert_eq!(app.count("products").await, 0, "nothing written");
    assert_eq!(app.count("outbox").await, 0, "no event");

    // With the token it passes, and customer RPCs need none.
    app.upsert(product_request(id, "SKU-ANON", 5))
        .await
        .unwrap();
    let got = anonymous
        .get_product(orderflow_proto::inventory::v1::GetProductRequest {
            product_id: id.to_string(),
        })
        .await
        .expect("GetProduct is a customer RPC");
    assert_eq!(got.into_inner().product.unwrap().on_hand, 5);
}
