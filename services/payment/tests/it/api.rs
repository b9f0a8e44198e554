use std::collections::HashSet;

use orderflow_proto::payment::v1::{self as pb, get_payment_request::Key};
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{TestApp, reserved};

fn fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|f| f.field)
        .collect()
}

async fn get(app: &TestApp, key: Option<Key>) -> Result<pb::Payment, tonic::Status> {
    Ok(app
        .client()
        .get_payment(pb::GetPaymentRequest { key })
        .await?
        .into_inner()
        .payment
        .expect("payment in response"))
}

async fn list(
    app: &TestApp,
    customer: &str,
    order: &str,
    page_size: i32,
    token: &str,
) -> Result<pb::ListPaymentsResponse, tonic::Status> {
    let req = pb::ListPaymentsRequest {
        customer_id: customer.into(),
        order_id: order.into(),
        page_size,
        page_token: token.into(),
    };
    Ok(app.client().list_payments(req).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_payment_by_payment_id_or_by_order_id() {
    let app = TestApp::serve().await;
    let customer = Uuid::new_v4();
    let event = reserved(customer, "tok_insufficient_funds", 4200);
    let order_id = event.order_id;
    app.charge(event).await;

    let by_order = get(&app, Some(Key::OrderId(order_id.to_string())))
        .await
        .unwrap();
    assert_eq!(by_order.order_id, order_id.to_string());
    assert_eq!(by_order.customer_id, customer.to_string());
    assert_eq!(by_order.status(), pb::PaymentStatus::Failed);
    assert_eq!(by_order.reason, "insufficient funds");
    assert_eq!(
        by_order.amount,
        Some(pb::Money {
            amount_minor: 4200,
            currency: "EUR".into()
        })
    );
    assert!(by_order.created_at.is_some() && by_order.updated_at.is_some());
    let by_id = get(&app, Some(Key::PaymentId(by_order.payment_id.clone())))
        .await
        .unwrap();
    assert_eq!(by_id, by_order);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_payment_is_not_found() {
    let app = TestApp::serve().await;
    for key in [
        Key::PaymentId(Uuid::new_v4().to_string()),
        Key::OrderId(Uuid::new_v4().to_string()),
    ] {
        let err = get(&app, Some(key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(err.get_details_resource_info().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_payment_needs_exactly_one_valid_key() {
    let app = TestApp::serve().await;
    assert_eq!(fields(&get(&app, None).await.unwrap_err()), ["payment_id"]);
    assert_eq!(
        fields(
            &get(&app, Some(Key::PaymentId("nope".into())))
                .await
                .unwrap_err()
        ),
        ["payment_id"]
    );
    assert_eq!(
        fields(
            &get(&app, Some(Key::OrderId(String::new())))
                .await
                .unwrap_err()
        ),
        ["order_id"]
    );
    assert_eq!(
        fields(
            &get(&app, Some(Key::OrderId(Uuid::nil().to_string())))
                .await
                .unwrap_err()
        ),
        ["order_id"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_customer_and_order_and_pages_newest_first() {
    let app = TestApp::serve().await;
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut ada_orders = Vec::new();
    for i in 0..5 {
        let event = reserved(
            ada,
            if i % 2 == 0 {
                "tok_visa"
            } else {
                "tok_declined"
            },
            100 + i,
        );
        ada_orders.push(event.order_id.to_string());
        app.charge(event).await;
    }
    let bob_event = reserved(bob, "tok_visa", 999);
    let bob_order = bob_event.order_id.to_string();
    app.charge(bob_event).await;

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&app, &ada.to_string(), "", 2, &token).await.unwrap();
        sizes.push(page.payments.len());
        assert!(
            page.payments
                .iter()
                .all(|p| p.customer_id == ada.to_string())
        );
        seen.extend(page.payments.into_iter().map(|p| p.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, [2, 2, 1]);
    ada_orders.reverse();
    assert_eq!(seen, ada_orders, "newest first, each once");

    let all = list(&app, "", "", 0, "").await.unwrap();
    assert_eq!(all.payments.len(), 6);
    assert!(all.next_page_token.is_empty());
    let ids: HashSet<_> = all.payments.iter().map(|p| &p.payment_id).collect();
    assert_eq!(ids.len(), 6);

    let bobs = list(&app, "", &bob_order, 0, "").await.unwrap();
    assert_eq!(bobs.payments.len(), 1);
    assert_eq!(bobs.payments[0].status(), pb::PaymentStatus::Completed);
    let none = list(&app, &ada.to_string(), &bob_order, 0, "")
        .await
        .unwrap();
    assert!(none.payments.is_empty(), "both filters apply");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_requests_are_invalid_argument() {
    let app = TestApp::serve().await;
    let ada = Uuid::new_v4();
    for _ in 0..2 {
        app.charge(reserved(ada, "tok_visa", 100)).await;
    }
    let token = list(&app, &ada.to_string(), "", 1, "")
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());

    let err = list(&app, "nope", "x", 501, "").await.unwrap_err();
    assert_eq!(fields(&err), ["customer_id", "order_id", "page_size"]);
    assert_eq!(
        fields(&list(&app, "", "", -1, "").await.unwrap_err()),
        ["page_size"]
    );
    assert_eq!(
        fields(
            &list(&app, &ada.to_string(), "", 0, "garbage")
                .await
                .unwrap_err()
        ),
        ["page_token"]
    );
    // A token is bound to the filter it was issued for.
    let other = Uuid::new_v4().to_string();
    assert_eq!(
        fields(&list(&app, &other, "", 1, &token).await.unwrap_err()),
        ["page_token"]
    );
    assert_eq!(
        fields(&list(&app, "", "", 1, &token).await.unwrap_err()),
        ["page_token"]
    );
    let page = list(&app, &ada.to_string(), "", 1, &token).await.unwrap();
    assert_eq!(page.payments.len(), 1);
    assert!(list(&app, "", "", 500, "").await.is_ok());
}
