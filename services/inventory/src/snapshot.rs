//! Inventory's side of a catalog rebuild: a snapshot of every product,
//! written to the outbox (the only way data leaves the service) one page
//! per transaction.
//!
//! `catalog.rebuild_requested` makes page 0; each page, consumed back
//! from inventory's own exchange, makes the next one, until a page is the
//! last. So the snapshot needs no job of its own: each step is a consumer
//! transaction with its inbox row (a crash repeats nothing and skips
//! nothing), pages are keyed by the rebuild (published in order), and the
//! saga's events flow between them. Each product carries its version, so
//! the catalog orders a snapshot page and a live event of the same product
//! like any two events.

use diesel::{QueryableByName, sql_types};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_events::{
    CloudEvent,
    catalog::CatalogRebuildRequested,
    inventory::{CatalogSnapshot, IMPORTED_COLUMNS, ImportedProduct},
};
use uuid::Uuid;

use crate::EVENT_SOURCE;

/// Products per page: a page is one transaction and one event (about
/// 150 bytes a product).
pub const PAGE_SIZE: i64 = 1000;

/// catalog.rebuild_requested: the first page.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotForCatalog;

impl Handler for SnapshotForCatalog {
    type Event = CatalogRebuildRequested;
    const NAME: &'static str = "catalog-snapshot";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<CatalogRebuildRequested>,
    ) -> HandlerResult {
        let e = &event.data;
        let total = count(conn).await?;
        tracing::info!(rebuild.id = %e.rebuild_id, generation = e.generation, total, "catalog snapshot begins");
        write_page(conn, e.rebuild_id, e.generation, 0, None, total).await
    }
}

/// inventory.catalog_snapshot: the page after it, unless it was the last.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextSnapshotPage;

impl Handler for NextSnapshotPage {
    type Event = CatalogSnapshot;
    const NAME: &'static str = "catalog-snapshot-next";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<CatalogSnapshot>,
    ) -> HandlerResult {
        let e = &event.data;
        if e.last {
            tracing::info!(rebuild.id = %e.rebuild_id, pages = e.page + 1, "catalog snapshot written");
            return Ok(());
        }
        let after = e.products.last().map(|p| p.product_id);
        write_page(conn, e.rebuild_id, e.generation, e.page + 1, after, e.total).await
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = sql_types::BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
    Ok(diesel::sql_query("SELECT count(*) AS n FROM products")
        .get_result::<Count>(conn)
        .await?
        .n)
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = sql_types::Uuid)]
    product_id: Uuid,
    #[diesel(sql_type = sql_types::Text)]
    sku: String,
    #[diesel(sql_type = sql_types::Text)]
    name: String,
    #[diesel(sql_type = sql_types::Text)]
    currency: String,
    #[diesel(sql_type = sql_types::BigInt)]
    unit_price_minor: i64,
    #[diesel(sql_type = sql_types::BigInt)]
    on_hand: i64,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    description: Option<String>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    category: Option<String>,
    #[diesel(sql_type = sql_types::Array<sql_types::Text>)]
    tags: Vec<String>,
    #[diesel(sql_type = sql_types::BigInt)]
    version: i64,
}

/// Appends page `page`: the products after `after` in id order, as
/// committed now (no locks: a product changed meanwhile has a newer event,
/// with a newer version).
async fn write_page(
    conn: &mut AsyncPgConnection,
    rebuild_id: Uuid,
    generation: i32,
    page: i64,
    after: Option<Uuid>,
    total: i64,
) -> HandlerResult {
    // The first page with its own statement: `$1 IS NULL OR id > $1`
    // would keep the planner from walking the primary key from `$1`.
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT product_id, sku, name, currency, unit_price_minor, on_hand, description, \
                category, tags, version \
         FROM products WHERE {} ORDER BY product_id LIMIT $2",
        if after.is_some() {
            "product_id > $1"
        } else {
            "$1::uuid IS NULL"
        }
    ))
    .bind::<sql_types::Nullable<sql_types::Uuid>, _>(after)
    .bind::<sql_types::BigInt, _>(PAGE_SIZE + 1)
    .load(conn)
    .await?;
    let last = i64::try_from(rows.len()).unwrap_or(i64::MAX) <= PAGE_SIZE;
    let products: Vec<ImportedProduct> = rows
        .into_iter()
        .take(usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX))
        .map(|r| ImportedProduct {
            product_id: r.product_id,
            sku: r.sku,
            name: r.name,
            currency: r.currency,
            unit_price_minor: r.unit_price_minor,
            on_hand: r.on_hand,
            created: false,
            description: r.description,
            category: r.category,
            tags: r.tags,
            version: r.version,
        })
        .collect();
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        CatalogSnapshot {
            rebuild_id,
            generation,
            page,
            last,
            total,
            columns: IMPORTED_COLUMNS.map(str::to_owned).to_vec(),
            products,
        },
    )
    .await?;
    Ok(())
}
