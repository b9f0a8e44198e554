use orderflow_proto::notification::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{Order, TestApp};

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

async fn list(
    app: &TestApp,
    customer: &str,
    order: &str,
    page_size: i32,
    token: &str,
) -> Result<pb::ListNotificationsResponse, tonic::Status> {
    let req = pb::ListNotificationsRequest {
        customer_id: customer.into(),
        order_id: order.into(),
        page_size,
        page_token: token.into(),
    };
    Ok(app.client().list_notifications(req).await?.into_inner())
}

/// Every page of a listing, and the page sizes.
async fn all_pages(
    app: &TestApp,
    customer: &str,
    order: &str,
    page_size: i32,
) -> (Vec<pb::Notification>, Vec<usize>) {
    let (mut all, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = list(app, customer, order, page_size, &token).await.unwrap();
        sizes.push(page.notifications.len());
        all.extend(page.notifications);
        if page.next_page_token.is_empty() {
            return (all, sizes);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_by_customer_and_by_order_newest_first_in_pages() {
    let app = TestApp::serve().await;
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let first = Order::new(ada);
    first.happy_path(&app, "+4915112345678").await;
    let second = Order::new(ada);
    second.happy_path(&app, "").await;
    let bobs = Order::new(bob);
    bobs.happy_path(&app, "").await;
    bobs.cancel(&app).await;

    let (by_ada, sizes) = all_pages(&app, &ada.to_string(), "", 4).await;
    assert_eq!(sizes, [4, 2]);
    assert!(by_ada.iter().all(|n| n.customer_id == ada.to_string()));
    let types: Vec<_> = by_ada.iter().map(|n| n.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.confirmed",
            "payment.completed",
            "order.placed",
            "order.confirmed",
            "payment.completed",
            "order.placed"
        ],
        "newest first"
    );
    assert_eq!(by_ada[0].order_id, second.id.to_string());
    assert_eq!(by_ada[5].order_id, first.id.to_string());
    assert!(by_ada.iter().all(|n| n.channel() == pb::Channel::Sms));
    let n = &by_ada[0];
    assert!(!n.notification_id.is_empty() && !n.event_id.is_empty() && n.sent_at.is_some());

    let (by_order, sizes) = all_pages(&app, "", &bobs.id.to_string(), 1).await;
    assert_eq!(sizes, [1, 1, 1, 1]);
    assert_eq!(by_order[0].event_type, "order.cancelled");
    assert!(by_order.iter().all(|n| n.channel() == pb::Channel::Email
        && n.recipient == "ada@example.com"
        && n.order_id == bobs.id.to_string()));

    let both = list(&app, &ada.to_string(), &first.id.to_string(), 0, "")
        .await
        .unwrap();
    assert_eq!(both.notifications.len(), 3);
    assert!(both.next_page_token.is_empty());
    let none = list(&app, &bob.to_string(), &first.id.to_string(), 0, "")
        .await
        .unwrap();
    assert!(none.notifications.is_empty(), "both filters apply");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_requests_are_invalid_argument() {
    let app = TestApp::serve().await;
    let ada = Uuid::new_v4();
    Order::new(ada).happy_path(&app, "").await;
    let token = list(&app, &ada.to_string(), "", 1, "")
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());

    assert_eq!(
        fields(&list(&app, "", "", 0, "").await.unwrap_err()),
        ["customer_id"],
        "a filter is required"
    );
    assert_eq!(
        fields(
            &list(&app, "nope", &Uuid::nil().to_string(), 501, "")
                .await
                .unwrap_err()
        ),
        ["customer_id", "order_id", "page_size"]
    );
    assert_eq!(
        fields(&list(&app, &ada.to_string(), "", -5, "").await.unwrap_err()),
        ["page_size"]
    );
    assert_eq!(
        fields(
            &list(&app, &ada.to_string(), "", 0, "abc")
                .await
                .unwrap_err()
        ),
        ["page_token"]
    );
    let order = Uuid::new_v4().to_string();
    assert_eq!(
        fields(&list(&app, "", &order, 1, &token).await.unwrap_err()),
        ["page_token"],
        "a token is bound to its filter"
    );
    let next = list(&app, &ada.to_string(), "", 1, &token).await.unwrap();
    assert_eq!(next.notifications.len(), 1);
    assert!(list(&app, &ada.to_string(), "", 500, "").await.is_ok());
}
