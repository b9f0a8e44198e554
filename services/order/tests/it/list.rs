use std::collections::HashSet;

use orderflow_proto::order::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

async fn list(
    app: &TestApp,
    customer: &str,
    page_size: i32,
    token: &str,
) -> Result<pb::ListOrdersResponse, tonic::Status> {
    let req = pb::ListOrdersRequest {
        customer_id: customer.into(),
        page_size,
        page_token: token.into(),
    };
    Ok(app.client.clone().list_orders(req).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_customer_and_pages_newest_first() {
    let app = TestApp::spawn().await;
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create(order_request(ada)).await.unwrap().id);
    }
    for _ in 0..3 {
        app.create(order_request(bob)).await.unwrap();
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = list(&app, &ada.to_string(), 3, &token).await.unwrap();
        pages.push(page.orders.len());
        seen.extend(page.orders.iter().map(|o| o.id.clone()));
        assert!(
            page.orders
                .iter()
                .all(|o| o.customer_id == ada.to_string() && o.lines.len() == 2)
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }

    assert_eq!(pages, [3, 3, 1]);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    let all = list(&app, "", 0, "").await.unwrap();
    assert_eq!(all.orders.len(), 10);
    assert!(all.next_page_token.is_empty());
    assert_eq!(
        all.orders
            .iter()
            .map(|o| &o.id)
            .collect::<HashSet<_>>()
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_page_tokens_and_sizes_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let ada = Uuid::new_v4();
    for _ in 0..2 {
        app.create(order_request(ada)).await.unwrap();
    }
    let token = list(&app, &ada.to_string(), 1, "")
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());

    for (customer, size, token) in [
        (Uuid::new_v4().to_string(), 1, token.as_str()),
        (String::new(), 1, token.as_str()),
        (ada.to_string(), 1, "garbage"),
        (ada.to_string(), -1, ""),
        ("not-a-uuid".to_owned(), 1, ""),
    ] {
        let status = list(&app, &customer, size, token).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{customer} {size} {token}: {status:?}"
        );
    }
    // An oversized page is reduced, not refused.
    assert_eq!(list(&app, "", 100_000, "").await.unwrap().orders.len(), 2);
}
