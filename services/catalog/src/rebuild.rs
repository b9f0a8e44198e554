//! Rebuilding the catalog from scratch while it serves: a new generation,
//! filled from inventory's snapshot, switched to when complete.
//!
//! 1. [`start`] (RebuildCatalog) creates generation n+1 (BUILDING, its own
//!    partition) and appends `catalog.rebuild_requested` to the catalog's
//!    outbox, in one transaction. From then on live events apply to both
//!    generations.
//! 2. Inventory answers with `inventory.catalog_snapshot` pages
//!    (inventory's `snapshot` module). [`ApplySnapshot`] writes each into
//!    generation n+1 only, each product ordered against live events by its
//!    version, and counts it.
//! 3. When every page is applied (the last page says how many there are),
//!    the same transaction makes n+1 SERVING, n RETIRED, and drops n's
//!    partition. Searches read the new generation from the next statement.
//!
//! A new, empty catalog replica is backfilled the same way: its first
//! generation is empty, and a rebuild fills the next.

use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, QueryableByName, sql_types};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_db::Pool;
use orderflow_events::{CloudEvent, catalog::CatalogRebuildRequested, inventory::CatalogSnapshot};
use uuid::Uuid;

use crate::{
    EVENT_SOURCE,
    apply::{self, Product, Target},
    store::CatalogError,
};

/// A generation made by a rebuild, as stored.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Rebuild {
    #[diesel(sql_type = sql_types::Uuid)]
    pub rebuild_id: Uuid,
    #[diesel(sql_type = sql_types::Integer)]
    pub generation: i32,
    /// SERVING, BUILDING or RETIRED.
    #[diesel(sql_type = sql_types::Text)]
    pub state: String,
    #[diesel(sql_type = sql_types::BigInt)]
    pub products_total: i64,
    #[diesel(sql_type = sql_types::BigInt)]
    pub products_applied: i64,
    #[diesel(sql_type = sql_types::BigInt)]
    pub pages_applied: i64,
    #[diesel(sql_type = sql_types::Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "rebuild_id, generation, state, products_total, products_applied, \
     pages_applied, created_at, finished_at";

/// Starts a rebuild, or returns the one running (`false`).
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "catalog.rebuild", skip_all)]
pub async fn start(pool: &Pool) -> Result<(Rebuild, bool), CatalogError> {
    let mut conn = pool.get().await?;
    let started = conn
        .transaction(async |conn| {
            // One rebuild at a time: concurrent calls queue here.
            diesel::sql_query("LOCK TABLE catalog_generations IN SHARE ROW EXCLUSIVE MODE")
                .execute(conn)
                .await?;
            if let Some(running) = diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM catalog_generations WHERE state = 'BUILDING'"
            ))
            .get_result::<Rebuild>(conn)
            .await
            .optional()?
            {
                return Ok::<_, diesel::result::Error>((running, false));
            }
            let rebuild_id = Uuid::now_v7();
            let rebuild: Rebuild = diesel::sql_query(format!(
                "INSERT INTO catalog_generations (generation, state, rebuild_id) \
                 SELECT max(generation) + 1, 'BUILDING', $1 FROM catalog_generations \
                 RETURNING {COLUMNS}"
            ))
            .bind::<sql_types::Uuid, _>(rebuild_id)
            .get_result(conn)
            .await?;
            // The generation is a trusted integer: DDL takes no binds.
            diesel::sql_query(format!(
                "CREATE TABLE catalog_products_g{0} PARTITION OF catalog_products \
                 FOR VALUES IN ({0})",
                rebuild.generation
            ))
            .execute(conn)
            .await?;
            orderflow_outbox::append(
                conn,
                EVENT_SOURCE,
                CatalogRebuildRequested {
                    rebuild_id,
                    generation: rebuild.generation,
                },
            )
            .await?;
            Ok((rebuild, true))
        })
        .await?;
    if started.1 {
        tracing::info!(rebuild.id = %started.0.rebuild_id, generation = started.0.generation, "catalog rebuild started");
    }
    Ok(started)
}

/// A rebuild, or the latest when `id` is `None`.
///
/// # Errors
/// [`CatalogError::RebuildNotFound`].
pub async fn get(pool: &Pool, id: Option<Uuid>) -> Result<Rebuild, CatalogError> {
    let mut conn = pool.get().await?;
    let found: Option<Rebuild> = match id {
        Some(id) => diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM catalog_generations WHERE rebuild_id = $1"
        ))
        .bind::<sql_types::Uuid, _>(id)
        .get_result(&mut conn)
        .await
        .optional()?,
        None => diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM catalog_generations WHERE rebuild_id IS NOT NULL \
             ORDER BY generation DESC LIMIT 1"
        ))
        .get_result(&mut conn)
        .await
        .optional()?,
    };
    found.ok_or(CatalogError::RebuildNotFound(id))
}

/// inventory.catalog_snapshot: one page into the rebuild's generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplySnapshot;

#[derive(QueryableByName)]
struct Progress {
    #[diesel(sql_type = sql_types::BigInt)]
    pages_applied: i64,
    #[diesel(sql_type = sql_types::Nullable<sql_types::BigInt>)]
    pages: Option<i64>,
}

#[derive(QueryableByName)]
struct Generation {
    #[diesel(sql_type = sql_types::Integer)]
    generation: i32,
}

impl Handler for ApplySnapshot {
    type Event = CatalogSnapshot;
    const NAME: &'static str = "apply-snapshot";
    /// Pages hold disjoint products; two at a time, a few per batch (each
    /// carries 1,000).
    const CONCURRENCY: Option<usize> = Some(2);
    const BATCH_SIZE: Option<usize> = Some(8);

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<CatalogSnapshot>,
    ) -> HandlerResult {
        let e = &event.data;
        let n = i64::try_from(e.products.len()).unwrap_or(i64::MAX);
        let running: Option<i32> = diesel::sql_query(
            "SELECT generation FROM catalog_generations \
             WHERE generation = $1 AND rebuild_id = $2 AND state = 'BUILDING'",
        )
        .bind::<sql_types::Integer, _>(e.generation)
        .bind::<sql_types::Uuid, _>(e.rebuild_id)
        .get_result::<Generation>(conn)
        .await
        .optional()?
        .map(|g| g.generation);
        if running.is_none() {
            tracing::info!(rebuild.id = %e.rebuild_id, page = e.page, "snapshot page of a rebuild that is not running: ignored");
            return Ok(());
        }
        let products = e
            .products
            .iter()
            .map(|p| Product::imported(p, event.time))
            .collect();
        // Pages are applied two at a time; only the count below waits for
        // the other's commit (the generation's row lock), so the two cannot
        // both miss the switch.
        apply::products(conn, Target::Generation(e.generation), products).await?;
        let progress: Option<Progress> = diesel::sql_query(
            "UPDATE catalog_generations SET pages_applied = pages_applied + 1, \
               products_applied = products_applied + $3, products_total = $4, \
               pages = CASE WHEN $5 THEN $6 ELSE pages END, updated_at = now() \
             WHERE generation = $1 AND rebuild_id = $2 AND state = 'BUILDING' \
             RETURNING pages_applied, pages",
        )
        .bind::<sql_types::Integer, _>(e.generation)
        .bind::<sql_types::Uuid, _>(e.rebuild_id)
        .bind::<sql_types::BigInt, _>(n)
        .bind::<sql_types::BigInt, _>(e.total)
        .bind::<sql_types::Bool, _>(e.last)
        .bind::<sql_types::BigInt, _>(e.page + 1)
        .get_result(conn)
        .await
        .optional()?;
        let Some(progress) = progress else {
            return Ok(());
        };
        if progress.pages == Some(progress.pages_applied) {
            switch(conn, e.generation).await?;
            tracing::info!(rebuild.id = %e.rebuild_id, generation = e.generation, pages = progress.pages_applied, "catalog rebuilt: searches read the new generation");
        }
        Ok(())
    }
}

/// Serves `generation`, retires the one served so far and drops its rows.
async fn switch(conn: &mut AsyncPgConnection, generation: i32) -> diesel::QueryResult<()> {
    #[derive(QueryableByName)]
    struct Retired {
        #[diesel(sql_type = sql_types::Integer)]
        generation: i32,
    }
    let retired: Vec<Retired> = diesel::sql_query(
        "UPDATE catalog_generations SET state = 'RETIRED', updated_at = now() \
         WHERE state = 'SERVING' RETURNING generation",
    )
    .load(conn)
    .await?;
    diesel::sql_query(
        "UPDATE catalog_generations SET state = 'SERVING', finished_at = now(), \
         updated_at = now() WHERE generation = $1",
    )
    .bind::<sql_types::Integer, _>(generation)
    .execute(conn)
    .await?;
    for r in retired {
        diesel::sql_query(format!(
            "DROP TABLE IF EXISTS catalog_products_g{}",
            r.generation
        ))
        .execute(conn)
        .await?;
    }
    Ok(())
}
