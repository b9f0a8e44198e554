//! Events of a product in any order, twice, or in an older payload
//! version: the catalog keeps the newest state.

use chrono::{Duration, Utc};
use orderflow_catalog::handlers::Apply;
use orderflow_events::inventory::{
    IMPORTED_COLUMNS, ImportedProduct, InventoryReserved, ProductUpserted, ReservedLine,
    StockAdjusted, StockImported, StockLevel,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, at, upserted};

#[tokio::test]
async fn reordered_and_repeated_events_leave_the_newest_state() {
    let app = TestApp::serve().await;
    let id = Uuid::now_v7();
    let t = Utc::now();
    let v1 = at(upserted(id, "Old name", 1, 10), t);
    let v3 = at(upserted(id, "New name", 3, 8), t + Duration::seconds(2));
    let adjusted = |version, on_hand| {
        at(
            StockAdjusted {
                product_id: id,
                delta: 0,
                on_hand,
                reason: "count".into(),
                version,
            },
            t + Duration::seconds(1),
        )
    };
    // A stock event before any data: kept, not shown.
    app.apply(&Apply::<StockAdjusted>::new(), adjusted(2, 9))
        .await;
    assert_eq!(app.get(id).await.unwrap_err().code(), Code::NotFound);
    // The newest data, then the oldest: the oldest changes nothing.
    app.apply(&Apply::<ProductUpserted>::new(), v3.clone())
        .await;
    app.apply(&Apply::<ProductUpserted>::new(), v1).await;
    let p = app.get(id).await.unwrap();
    assert_eq!(
        (p.name.as_str(), p.available, p.version),
        ("New name", 8, 3)
    );
    // The same events again (a redelivery past the inbox) change nothing.
    app.apply(&Apply::<ProductUpserted>::new(), v3).await;
    app.apply(&Apply::<StockAdjusted>::new(), adjusted(2, 9))
        .await;
    assert_eq!(app.get(id).await.unwrap().available, 8);
    // A newer stock level from a reservation applies.
    app.apply(
        &Apply::<InventoryReserved>::new(),
        at(
            InventoryReserved {
                order_id: Uuid::new_v4(),
                customer_id: Uuid::new_v4(),
                customer_email: "c@example.com".into(),
                currency: "EUR".into(),
                total_minor: 1000,
                payment_token: "tok_visa".into(),
                lines: vec![ReservedLine {
                    product_id: id,
                    quantity: 2,
                    stock: Some(StockLevel {
                        on_hand: 6,
                        version: 4,
                    }),
                }],
            },
            t,
        ),
    )
    .await;
    let p = app.get(id).await.unwrap();
    assert_eq!((p.name.as_str(), p.available), ("New name", 6));
}

#[tokio::test]
async fn an_old_and_a_new_payload_version_are_applied_side_by_side() {
    let app = TestApp::serve().await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    let t = Utc::now();
    // dataversion 1, as an inventory from before the catalog wrote it.
    let v1: orderflow_events::CloudEvent<ProductUpserted> =
        serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": Uuid::now_v7(), "source": "orderflow/inventory",
            "type": "inventory.product_upserted", "subject": old, "time": t,
            "datacontenttype": "application/json", "dataversion": 1,
            "data": {"product_id": old, "sku": "OLD-1", "name": "Enamel mug", "currency": "EUR",
                     "unit_price_minor": 800, "on_hand": 4}
        }))
        .unwrap();
    assert_eq!(v1.dataversion, 1);
    app.apply(&Apply::<ProductUpserted>::new(), v1).await;
    let mut v2 = upserted(new, "Stoneware mug", 1, 2);
    v2.category = Some("Kitchen".into());
    app.apply(&Apply::<ProductUpserted>::new(), at(v2, t)).await;
    assert_eq!(app.names("mug ").await.len(), 2);
    assert_eq!(app.get(old).await.unwrap().category, "");
    assert_eq!(app.get(new).await.unwrap().category, "Kitchen");
    // A later versioned event overrides the unversioned one.
    app.apply(
        &Apply::<ProductUpserted>::new(),
        at(upserted(old, "Enamel cup", 1, 4), t - Duration::seconds(60)),
    )
    .await;
    assert_eq!(app.get(old).await.unwrap().name, "Enamel cup");
}

#[tokio::test]
async fn an_import_chunk_applies_every_product_it_lists() {
    let app = TestApp::serve().await;
    let products: Vec<ImportedProduct> = (0..50)
        .map(|i| ImportedProduct {
            product_id: Uuid::now_v7(),
            sku: format!("IMP-{i}"),
            name: format!("Imported lamp {i}"),
            currency: "EUR".into(),
            unit_price_minor: 100 + i,
            on_hand: i,
            created: true,
            description: None,
            category: Some(if i % 2 == 0 { "Lighting" } else { "Garden" }.into()),
            tags: vec!["lamp".into()],
            version: 1,
        })
        .collect();
    app.apply(
        &Apply::<StockImported>::new(),
        at(
            StockImported {
                import_id: Uuid::new_v4(),
                first_row: 1,
                last_row: 50,
                columns: IMPORTED_COLUMNS.map(str::to_owned).to_vec(),
                products,
            },
            Utc::now(),
        ),
    )
    .await;
    let page = app
        .search(orderflow_proto::catalog::v1::SearchProductsRequest {
            query: "lamp ".into(),
            in_stock_only: true,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // Lamp 0 has no stock.
    assert_eq!(page.hits.len(), 49);
}
