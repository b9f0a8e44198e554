//! A rebuild fills a new generation from inventory's snapshot while the
//! old one serves, and switches once every page is in.

use chrono::Utc;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_catalog::{handlers::Apply, rebuild::ApplySnapshot};
use orderflow_events::inventory::{
    CatalogSnapshot, IMPORTED_COLUMNS, ImportedProduct, ProductUpserted,
};
use orderflow_proto::catalog::v1::{self as pb, RebuildState};
use orderflow_testkit::as_admin;
use uuid::Uuid;

use crate::helpers::{TestApp, at, upserted};

fn product(id: Uuid, name: &str, version: i64) -> ImportedProduct {
    ImportedProduct {
        product_id: id,
        sku: format!("R-{}", &id.simple().to_string()[..8]),
        name: name.to_owned(),
        currency: "EUR".into(),
        unit_price_minor: 100,
        on_hand: 1,
        created: false,
        description: None,
        category: None,
        tags: Vec::new(),
        version,
    }
}

async fn rebuild(app: &TestApp) -> pb::CatalogRebuild {
    app.client
        .clone()
        .rebuild_catalog(as_admin(pb::RebuildCatalogRequest {}))
        .await
        .unwrap()
        .into_inner()
        .rebuild
        .unwrap()
}

async fn partitions(app: &TestApp) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        relname: String,
    }
    let mut conn = AsyncPgConnection::establish(app.db.url()).await.unwrap();
    diesel::sql_query(
        "SELECT c.relname::text AS relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'catalog_products'::regclass ORDER BY 1",
    )
    .load::<Name>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|n| n.relname)
    .collect()
}

#[tokio::test]
async fn searches_see_the_old_generation_until_the_snapshot_is_complete() {
    let app = TestApp::serve().await;
    let (kept, gone, added) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (id, name) in [(kept, "Kept lamp"), (gone, "Deleted lamp")] {
        app.apply(
            &Apply::<ProductUpserted>::new(),
            at(upserted(id, name, 1, 1), Utc::now()),
        )
        .await;
    }
    let started = rebuild(&app).await;
    assert_eq!(started.state, i32::from(RebuildState::Running));
    assert_eq!(started.generation, 2);
    // A second call follows the running rebuild.
    let again = app
        .client
        .clone()
        .rebuild_catalog(as_admin(pb::RebuildCatalogRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.started);
    assert_eq!(again.rebuild.unwrap().rebuild_id, started.rebuild_id);
    assert_eq!(
        partitions(&app).await,
        ["catalog_products_g1", "catalog_products_g2"]
    );

    let rebuild_id: Uuid = started.rebuild_id.parse().unwrap();
    let page = |page, last, products| CatalogSnapshot {
        rebuild_id,
        generation: 2,
        page,
        last,
        total: 2,
        columns: IMPORTED_COLUMNS.map(str::to_owned).to_vec(),
        products,
    };
    // The last page first (a retried page can arrive late): no switch yet.
    app.apply(
        &ApplySnapshot,
        at(
            page(1, true, vec![product(added, "Added lamp", 1)]),
            Utc::now(),
        ),
    )
    .await;
    let mut names = app.names("lamp ").await;
    names.sort();
    assert_eq!(names, ["Deleted lamp", "Kept lamp"]);
    // A live event meanwhile reaches both generations.
    app.apply(
        &Apply::<ProductUpserted>::new(),
        at(upserted(kept, "Kept lamp, renamed", 3, 1), Utc::now()),
    )
    .await;
    // Page 0, with an older state of `kept`: the live event's newer one stays.
    app.apply(
        &ApplySnapshot,
        at(
            page(0, false, vec![product(kept, "Kept lamp", 2)]),
            Utc::now(),
        ),
    )
    .await;
    let mut names = app.names("lamp ").await;
    names.sort();
    assert_eq!(names, ["Added lamp", "Kept lamp, renamed"]);
    let done = app
        .client
        .clone()
        .get_catalog_rebuild(as_admin(pb::GetCatalogRebuildRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .rebuild
        .unwrap();
    assert_eq!(done.state, i32::from(RebuildState::Serving));
    assert_eq!((done.products_applied, done.pages_applied), (2, 2));
    assert!(done.finished_at.is_some());
    assert_eq!(partitions(&app).await, ["catalog_products_g2"]);
    // A page of a rebuild that no longer runs changes nothing.
    app.apply(
        &ApplySnapshot,
        at(
            page(0, false, vec![product(gone, "Deleted lamp", 9)]),
            Utc::now(),
        ),
    )
    .await;
    assert!(
        !app.names("deleted ")
            .await
            .contains(&"Deleted lamp".to_owned())
    );
}

#[tokio::test]
async fn rebuild_rpcs_are_for_operators() {
    let app = TestApp::serve().await;
    let err = app
        .client
        .clone()
        .rebuild_catalog(pb::RebuildCatalogRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = app
        .client
        .clone()
        .get_catalog_rebuild(as_admin(pb::GetCatalogRebuildRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "no rebuild yet");
}
