//! A catalog rebuild's snapshot: every product once, in id order, in pages
//! that each make the next, the last one marked.

use diesel_async::RunQueryDsl as _;
use orderflow_events::{CloudEvent, catalog::CatalogRebuildRequested, inventory::CatalogSnapshot};
use orderflow_inventory::snapshot::{NextSnapshotPage, PAGE_SIZE, SnapshotForCatalog};
use uuid::Uuid;

use crate::helpers::{TestApp, handle_on};

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_lists_every_product_once_in_pages_until_the_last() {
    let app = TestApp::spawn().await;
    let count = 2 * PAGE_SIZE + 1;
    diesel::sql_query(
        "INSERT INTO products (product_id, sku, name, currency, unit_price_minor, on_hand, \
           category, version) \
         SELECT gen_random_uuid(), 'S-' || i, 'Snapshot product ' || i, 'EUR', 100, i, 'Bulk', 1 \
         FROM generate_series(1, $1) AS i",
    )
    .bind::<diesel::sql_types::BigInt, _>(count)
    .execute(&mut app.sql().await)
    .await
    .unwrap();
    let rebuild_id = Uuid::now_v7();
    handle_on(
        &app,
        &SnapshotForCatalog,
        CatalogRebuildRequested {
            rebuild_id,
            generation: 2,
        },
    )
    .await;
    let mut seen = Vec::new();
    let mut n: i64 = 0;
    loop {
        let event = last_page(&app).await;
        let e = &event.data;
        assert_eq!(
            (e.rebuild_id, e.generation, e.page, e.total),
            (rebuild_id, 2, n, count)
        );
        seen.extend(e.products.iter().map(|p| p.product_id));
        assert_eq!(e.products[0].category.as_deref(), Some("Bulk"));
        if e.last {
            break;
        }
        handle_on(&app, &NextSnapshotPage, event.data.clone()).await;
        n += 1;
    }
    assert_eq!(n, 2, "three pages");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        (seen.len(), &seen),
        (usize::try_from(count).unwrap(), &sorted)
    );
    // The last page makes no further page.
    let before = app.count("outbox").await;
    handle_on(&app, &NextSnapshotPage, last_page(&app).await.data).await;
    assert_eq!(app.count("outbox").await, before);
}

/// The newest event of the outbox, a snapshot page.
async fn last_page(app: &TestApp) -> CloudEvent<CatalogSnapshot> {
    let events = app.events().await;
    let (event_type, body) = &events[events.len() - 1];
    assert_eq!(event_type, "inventory.catalog_snapshot");
    serde_json::from_value(body.clone()).unwrap()
}
