use orderflow_proto::inventory::v1 as pb;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, product_request},
    upsert::violations,
};

async fn list(
    app: &TestApp,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListProductsResponse, tonic::Status> {
    Ok(app
        .client
        .clone()
        .list_products(pb::ListProductsRequest {
            page_size,
            page_token: page_token.to_owned(),
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_through_every_product_in_sku_order() {
    let app = TestApp::spawn().await;
    let mut skus: Vec<String> = (0..23)
        .map(|i| format!("SKU-{:03}", (i * 7) % 23))
        .collect();
    for sku in &skus {
        app.upsert(product_request(Uuid::new_v4(), sku, 1))
            .await
            .unwrap();
    }
    skus.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&app, 5, &token).await.unwrap();
        pages += 1;
        assert!(page.products.len() <= 5);
        seen.extend(page.products.into_iter().map(|p| p.sku));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, skus);
    assert_eq!(pages, 5);

    // Default page size covers them all.
    let all = list(&app, 0, "").await.unwrap();
    assert_eq!(all.products.len(), 23);
    assert!(all.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exact_last_page_has_no_next_token_and_an_empty_catalogue_lists_nothing() {
    let app = TestApp::spawn().await;
    let empty = list(&app, 10, "").await.unwrap();
    assert!(empty.products.is_empty() && empty.next_page_token.is_empty());
    for sku in ["A", "B"] {
        app.upsert(product_request(Uuid::new_v4(), sku, 1))
            .await
            .unwrap();
    }
    let page = list(&app, 2, "").await.unwrap();
    assert_eq!(page.products.len(), 2);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_list_requests_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let err = list(&app, -1, "not-a-token").await.unwrap_err();
    assert_eq!(violations(&err), ["page_size", "page_token"]);
    // A token that decodes but is not ours.
    let err = list(&app, 1, "6869").await.unwrap_err();
    assert_eq!(violations(&err), ["page_token"]);
}
