//! The import's SQL. Each chunk is one transaction: lock the import's row,
//! skip rows an earlier stream committed, upsert the good rows with one
//! statement over arrays (which also finds SKUs the source gave before),
//! record the rejected rows, bump the counts, append the chunk's event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _, QueryableByName,
    result::DatabaseErrorKind,
    sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_db::Pool;
use uuid::Uuid;

use orderflow_events::inventory::{IMPORTED_COLUMNS, ImportedProduct, StockImported};

use super::rows::{Chunk, GoodRows};
use crate::{EVENT_SOURCE, store::InventoryError};

/// An import's progress and counts, as committed.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ImportRecord {
    #[diesel(sql_type = SqlUuid)]
    pub import_id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub last_row_number: i64,
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    #[diesel(sql_type = BigInt)]
    pub inserted: i64,
    #[diesel(sql_type = BigInt)]
    pub updated: i64,
    #[diesel(sql_type = BigInt)]
    pub unchanged: i64,
    #[diesel(sql_type = BigInt)]
    pub rejected: i64,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A rejected row, as stored.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RowErrorRecord {
    #[diesel(sql_type = BigInt)]
    pub row_number: i64,
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
}

const IMPORT_COLUMNS: &str = "import_id, last_row_number, rows, inserted, updated, unchanged, \
     rejected, started_at, updated_at, finished_at";

/// Creates the import's row unless it exists (a resumed import keeps the
/// source of its first stream).
///
/// # Errors
/// Database errors.
pub async fn begin(
    pool: &Pool,
    import_id: Uuid,
    source: Option<Uuid>,
) -> Result<(), InventoryError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO stock_imports (import_id, source) VALUES ($1, $2) \
         ON CONFLICT (import_id) DO NOTHING",
    )
    .bind::<SqlUuid, _>(import_id)
    .bind::<Nullable<SqlUuid>, _>(source)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// # Errors
/// [`InventoryError::ImportNotFound`].
pub async fn get(pool: &Pool, import_id: Uuid) -> Result<ImportRecord, InventoryError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(format!(
        "SELECT {IMPORT_COLUMNS} FROM stock_imports WHERE import_id = $1"
    ))
    .bind::<SqlUuid, _>(import_id)
    .get_result(&mut conn)
    .await
    .optional()?
    .ok_or(InventoryError::ImportNotFound(import_id))
}

/// Marks the import finished (no rows may follow) and returns it.
///
/// # Errors
/// Database errors.
pub async fn finish(pool: &Pool, import_id: Uuid) -> Result<ImportRecord, InventoryError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(format!(
        "UPDATE stock_imports SET finished_at = coalesce(finished_at, now()), updated_at = now() \
         WHERE import_id = $1 RETURNING {IMPORT_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(import_id)
    .get_result(&mut conn)
    .await
    .optional()?
    .ok_or(InventoryError::ImportNotFound(import_id))
}

/// Up to `limit` rejected rows after row `after`, by row number.
///
/// # Errors
/// Database errors.
pub async fn errors(
    pool: &Pool,
    import_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<RowErrorRecord>, InventoryError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT row_number, sku, reason FROM stock_import_errors \
         WHERE import_id = $1 AND row_number > $2 ORDER BY row_number LIMIT $3",
    )
    .bind::<SqlUuid, _>(import_id)
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}

/// Why a chunk's transaction did not commit.
enum ChunkError {
    /// A deadlock or serialization failure: try again.
    Retry(diesel::result::Error),
    /// At commit time the import's `last_row_number` showed that a row
    /// before the chunk is not committed (the stream's previous chunk
    /// failed or was rolled back) or that one of the chunk's rows is (a
    /// concurrent stream of the import committed it): roll back, wait for
    /// the previous chunk, run again.
    OutOfOrder,
    Failed(InventoryError),
}

impl From<diesel::result::Error> for ChunkError {
    fn from(err: diesel::result::Error) -> Self {
        match &err {
            diesel::result::Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                Self::Retry(err)
            }
            diesel::result::Error::DatabaseError(_, info)
                if info.message().contains("deadlock detected") =>
            {
                Self::Retry(err)
            }
            _ => Self::Failed(err.into()),
        }
    }
}

impl From<InventoryError> for ChunkError {
    fn from(err: InventoryError) -> Self {
        Self::Failed(err)
    }
}

const ATTEMPTS: u32 = 5;
/// Each out-of-order attempt follows a commit of another chunk (or the
/// failure of the previous one, which ends the stream).
const OUT_OF_ORDER_ATTEMPTS: u32 = 20;

/// Where a chunk stands in its stream: chunks of one stream run in
/// overlapping transactions on their own connections but must commit in
/// row order, or a stream cut between two commits would leave a
/// `last_row_number` above rows that never committed.
///
/// Each chunk's transaction first takes the transaction-level advisory lock
/// `(stream, seq)`, its *token*, and just before it locks the import's row
/// and commits it waits for its predecessor's token (`seq - 1`, shared).
/// The wait is a lock wait PostgreSQL sees: when the predecessor waits for a
/// product row this chunk has locked (a SKU in both chunks, or any third
/// transaction in between), the deadlock detector breaks the cycle and the
/// chunk it aborts runs again. Ending the wait proves only that the
/// predecessor's transaction ended, not that it committed: the chunk then
/// checks `last_row_number` under the import's row lock (see
/// [`ChunkError::OutOfOrder`]).
#[derive(Debug)]
pub struct Order {
    /// Random per stream, never 0: two streams of one import use different
    /// tokens. 0: a chunk with no other in flight, which takes no token.
    pub stream: i32,
    /// The chunk's place in its stream (0, 1, ...).
    pub seq: i32,
    /// The last row of the stream's previous chunk (0 for the first): it
    /// must be committed before this chunk commits.
    pub after_row: i64,
    /// Set when the chunk holds its token (the next chunk may start).
    pub token: Option<tokio::sync::oneshot::Sender<()>>,
    /// The previous chunk's outcome once it is known: true when committed.
    pub previous: Option<tokio::sync::watch::Receiver<Option<bool>>>,
    /// The SKUs the previous chunk upserts, while it may be in flight: this
    /// chunk's rows with one of them are upserted only after it ended.
    pub previous_skus: Option<std::sync::Arc<std::collections::HashSet<String>>>,
}

impl Order {
    /// A chunk with nothing before it in its stream.
    pub fn first() -> Self {
        Self {
            stream: 0,
            seq: 0,
            after_row: 0,
            token: None,
            previous: None,
            previous_skus: None,
        }
    }

    /// Waits until the previous chunk has finished; false if it failed.
    async fn previous_done(&mut self) -> bool {
        match &mut self.previous {
            None => true,
            Some(rx) => match rx.wait_for(Option::is_some).await {
                Ok(outcome) => *outcome == Some(true),
                // The previous chunk's task is gone without an outcome.
                Err(_) => false,
            },
        }
    }
}

/// Commits one chunk: its good rows upserted, its rejected rows recorded,
/// the import's counts and last row, and its event, in one transaction,
/// after the stream's previous chunk (see [`Order`]).
///
/// # Errors
/// [`InventoryError::ImportFinished`] for new rows sent to a finished
/// import; database errors; UNAVAILABLE when the previous chunk of the
/// stream did not commit (the client resumes after the last committed row).
#[tracing::instrument(name = "inventory.import_chunk", skip_all,
    fields(import.id = %import_id, rows = chunk.len(), first_row = chunk.first_row, last_row = chunk.last_row))]
pub async fn write_chunk(
    pool: &Pool,
    import_id: Uuid,
    mut chunk: Chunk,
    mut order: Order,
) -> Result<(), InventoryError> {
    let mut conn = pool.get().await?;
    let mut attempt = 0;
    let mut out_of_order = 0;
    loop {
        attempt += 1;
        let result = conn
            .transaction(async |conn| write_once(conn, import_id, &mut chunk, &mut order).await)
            .await;
        // However it went, the next chunk may start now (it normally
        // starts as soon as this one holds its token).
        if let Some(token) = order.token.take() {
            let _ = token.send(());
        }
        match result {
            Ok(()) => return Ok(()),
            // A deadlock with a concurrent writer (the saga locks products
            // in id order, an import in SKU order; or the previous chunk of
            // this stream): the transaction is gone, run it again.
            Err(ChunkError::Retry(e)) if attempt < ATTEMPTS => {
                tracing::warn!(error.message = %e, attempt, "import chunk conflicted; retrying");
            }
            Err(ChunkError::Retry(e)) => return Err(e.into()),
            Err(ChunkError::OutOfOrder) if out_of_order < OUT_OF_ORDER_ATTEMPTS => {
                out_of_order += 1;
                attempt -= 1;
                tracing::info!(
                    out_of_order,
                    "import chunk ran ahead of a commit; waiting for the previous chunk"
                );
                if !order.previous_done().await {
                    return Err(not_committed());
                }
            }
            Err(ChunkError::OutOfOrder) => return Err(not_committed()),
            Err(ChunkError::Failed(e)) => return Err(e),
        }
    }
}

fn not_committed() -> InventoryError {
    InventoryError::Unavailable(
        "an earlier chunk of the import did not commit; resume after its last committed row"
            .to_owned(),
    )
}

#[derive(QueryableByName)]
struct ImportState {
    #[diesel(sql_type = BigInt)]
    last_row_number: i64,
    #[diesel(sql_type = Bool)]
    finished: bool,
    #[diesel(sql_type = SqlUuid)]
    source: Uuid,
}

/// A product the upsert inserted or touched. Its name, price and stock are
/// the chunk's row (the upsert wrote exactly that) unless the row repeats
/// a SKU (`import_row` is then an earlier row), so they do not come back;
/// its details do (a row may keep the stored ones), and its version.
#[derive(QueryableByName)]
struct Changed {
    #[diesel(sql_type = SqlUuid)]
    product_id: Uuid,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Bool)]
    inserted: bool,
    #[diesel(sql_type = Bool)]
    changed: bool,
    #[diesel(sql_type = BigInt)]
    import_row: i64,
    #[diesel(sql_type = Nullable<Text>)]
    description: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    category: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    tags: Vec<String>,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Joins a row's tags for binding as one `text` (PostgreSQL arrays of
/// arrays must be rectangular); a tag has no control characters.
const TAG_SEPARATOR: char = '\u{1f}';

/// One multi-row upsert over arrays (unnest), rows in SKU order.
///
/// Every product remembers the import row that last set it (source, row).
/// For a known SKU:
/// * a row of the same source whose row number is higher than the
///   remembered one repeats a SKU the file gave before (`dup`): nothing
///   changes (the SET keeps every value, so RETURNING shows the first row);
/// * otherwise a row whose data differs replaces it, with a new updated_at;
/// * an identical row of another source only moves the marker to itself
///   (a write, no new updated_at, no event), so that a repeat later in the
///   same file is recognised on this run and the next;
/// * an identical row that already holds the marker writes nothing.
///
/// RETURNING gives the inserted and touched products; `changed` (updated_at
/// is this transaction's) tells a data change from a marker move. It
/// returns no product data: the service has it (the chunk's rows), and
/// sending 2,000,000 names and currencies back cost the backend time.
/// The upsert for rows that give the details marked in `given`
/// (description, category, tags): those it sets, the others it keeps.
fn upsert_sql(given: [bool; 3]) -> String {
    // coalesce: a product no import has marked has NULLs, and a NULL would
    // make `NOT dup` NULL too.
    let dup = "coalesce(p.import_source = excluded.import_source \
         AND p.import_row < excluded.import_row, false)";
    let details: Vec<&str> = ["description", "category", "tags"]
        .into_iter()
        .zip(given)
        .filter_map(|(column, given)| given.then_some(column))
        .collect();
    let mut compared = vec!["name", "currency", "unit_price_minor", "on_hand"];
    compared.extend(&details);
    let list = |prefix: &str| {
        compared
            .iter()
            .map(|c| format!("{prefix}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let changed = format!("(({}) IS DISTINCT FROM ({}))", list("p"), list("excluded"));
    let keep = |column: &str| {
        format!("{column} = CASE WHEN {dup} THEN p.{column} ELSE excluded.{column} END")
    };
    let mut set: Vec<String> = compared.iter().map(|c| keep(c)).collect();
    set.push(format!(
        "updated_at = CASE WHEN NOT {dup} AND {changed} THEN now() ELSE p.updated_at END"
    ));
    set.push(format!(
        "version = CASE WHEN NOT {dup} AND {changed} THEN p.version + 1 ELSE p.version END"
    ));
    set.push(keep("import_source"));
    set.push(keep("import_row"));
    format!(
        "INSERT INTO products AS p \
           (product_id, sku, name, currency, unit_price_minor, on_hand, import_source, import_row, \
            description, category, tags, version) \
         SELECT i.product_id, i.sku, i.name, i.currency, i.unit_price_minor, i.on_hand, $8, i.import_row, \
                i.description, i.category, string_to_array(i.tags, chr(31)), 1 \
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], \
                       $9::text[], $10::text[], $11::text[]) \
             AS i(product_id, sku, name, currency, unit_price_minor, on_hand, import_row, \
                  description, category, tags) \
         ON CONFLICT (sku) DO UPDATE SET {} \
         WHERE {dup} OR {changed} \
            OR p.import_source IS DISTINCT FROM excluded.import_source \
            OR p.import_row IS DISTINCT FROM excluded.import_row \
         RETURNING p.product_id, p.sku, (p.xmax = 0) AS inserted, (p.updated_at = now()) AS changed, \
                   p.import_row, p.description, p.category, p.tags, p.version",
        set.join(", ")
    )
}

/// One multi-row upsert over arrays (unnest) per combination of details
/// the rows give, rows in SKU order.
///
/// Every product remembers the import row that last set it (source, row).
/// For a known SKU:
/// * a row of the same source whose row number is higher than the
///   remembered one repeats a SKU the file gave before (`dup`): nothing
///   changes (the SET keeps every value, so RETURNING shows the first row);
/// * otherwise a row whose data differs replaces it, with a new updated_at
///   and the next version;
/// * an identical row of another source only moves the marker to itself
///   (a write, no new updated_at, no event), so that a repeat later in the
///   same file is recognised on this run and the next;
/// * an identical row that already holds the marker writes nothing.
///
/// RETURNING gives the inserted and touched products; `changed` (updated_at
/// is this transaction's) tells a data change from a marker move. It
/// returns no name, price or stock: the service has them (the chunk's
/// rows), and sending 2,000,000 names and currencies back cost the backend
/// time.
static UPSERT: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..8u8)
        .map(|mask| upsert_sql([mask & 1 != 0, mask & 2 != 0, mask & 4 != 0]))
        .collect()
});

fn mask([description, category, tags]: [bool; 3]) -> usize {
    usize::from(description) | usize::from(category) << 1 | usize::from(tags) << 2
}

/// Runs [`UPSERT`] over `rows` (sorted by SKU): one statement per
/// combination of given details (a file normally has one).
async fn upsert(
    conn: &mut AsyncPgConnection,
    rows: &GoodRows,
    source: Uuid,
) -> Result<Vec<Changed>, diesel::result::Error> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); 8];
    for (i, d) in rows.details.iter().enumerate() {
        groups[mask(d.given())].push(i);
    }
    let mut changed = Vec::new();
    for (m, indices) in groups.iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let subset;
        let group = if indices.len() == rows.len() {
            rows
        } else {
            subset = rows.subset(indices);
            &subset
        };
        let description: Vec<Option<&str>> = group
            .details
            .iter()
            .map(|d| d.description.as_ref().and_then(|v| v.as_deref()))
            .collect();
        let category: Vec<Option<&str>> = group
            .details
            .iter()
            .map(|d| d.category.as_ref().and_then(|v| v.as_deref()))
            .collect();
        let tags: Vec<String> = group
            .details
            .iter()
            .map(|d| {
                d.tags
                    .as_deref()
                    .unwrap_or_default()
                    .join(&TAG_SEPARATOR.to_string())
            })
            .collect();
        changed.extend(
            diesel::sql_query(UPSERT[m].as_str())
                .bind::<Array<SqlUuid>, _>(&group.product_id)
                .bind::<Array<Text>, _>(&group.sku)
                .bind::<Array<Text>, _>(&group.name)
                .bind::<Array<Text>, _>(&group.currency)
                .bind::<Array<BigInt>, _>(&group.unit_price_minor)
                .bind::<Array<BigInt>, _>(&group.on_hand)
                .bind::<Array<BigInt>, _>(&group.row_number)
                .bind::<SqlUuid, _>(source)
                .bind::<Array<Nullable<Text>>, _>(&description)
                .bind::<Array<Nullable<Text>>, _>(&category)
                .bind::<Array<Text>, _>(&tags)
                .load::<Changed>(conn)
                .await?,
        );
    }
    Ok(changed)
}

async fn write_once(
    conn: &mut AsyncPgConnection,
    import_id: Uuid,
    chunk: &mut Chunk,
    order: &mut Order,
) -> Result<(), ChunkError> {
    // The token first, so that the next chunk, which starts once we hold
    // it, waits for this transaction's end before it commits.
    if order.stream != 0 {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind::<Integer, _>(order.stream)
            .bind::<Integer, _>(order.seq)
            .execute(conn)
            .await?;
        if let Some(token) = order.token.take() {
            let _ = token.send(());
        }
    }
    // The event's jsonb is TOASTed: lz4 compresses it several times faster
    // than the default pglz (when this server has lz4; readers need no
    // setting). For this transaction only.
    diesel::sql_query(
        "SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings \
         WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)",
    )
    .execute(conn)
    .await?;
    // Without a lock: the previous chunk may not have committed yet, and
    // its rows are not ours anyway. What counts is checked under the
    // import's row lock before commit.
    let state: ImportState = diesel::sql_query(
        "SELECT last_row_number, finished_at IS NOT NULL AS finished, \
                coalesce(source, import_id) AS source \
         FROM stock_imports WHERE import_id = $1",
    )
    .bind::<SqlUuid, _>(import_id)
    .get_result(conn)
    .await
    .optional()?
    .ok_or(InventoryError::ImportNotFound(import_id))?;
    if state.finished && chunk.last_row > state.last_row_number {
        return Err(InventoryError::ImportFinished {
            import_id,
            last_row: state.last_row_number,
        }
        .into());
    }
    chunk.skip_through(state.last_row_number);
    if chunk.is_empty() {
        return Ok(());
    }

    // Rows whose SKU the previous chunk also upserts (a SKU the file
    // repeats) wait until that chunk has ended: upserting one now would
    // either wait for the previous chunk's row lock while it waits for our
    // commit order (a deadlock PostgreSQL would break, after a second), or
    // take the SKU before the previous chunk does. So the two transactions
    // never touch the same product, and the repeat is judged against the
    // committed first row, exactly as one chunk at a time would.
    chunk.good.sort_by_sku();
    let deferred: Vec<usize> = match &order.previous_skus {
        Some(skus) => (0..chunk.good.len())
            .filter(|&i| skus.contains(&chunk.good.sku[i]))
            .collect(),
        None => Vec::new(),
    };
    let mut returned: Vec<Changed> = if deferred.is_empty() {
        upsert(conn, &chunk.good, state.source).await?
    } else {
        let first: Vec<usize> = (0..chunk.good.len())
            .filter(|i| deferred.binary_search(i).is_err())
            .collect();
        upsert(conn, &chunk.good.subset(&first), state.source).await?
    };
    // Commit order: wait for the previous chunk's transaction to end (a
    // lock wait the deadlock detector sees), then check under the import's
    // row lock that every row before the chunk is committed and none of
    // its own is.
    if order.stream != 0 && order.seq > 0 {
        diesel::sql_query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind::<Integer, _>(order.stream)
            .bind::<Integer, _>(order.seq - 1)
            .execute(conn)
            .await?;
    }
    let now: ImportState = diesel::sql_query(
        "SELECT last_row_number, finished_at IS NOT NULL AS finished, \
                coalesce(source, import_id) AS source \
         FROM stock_imports WHERE import_id = $1 FOR UPDATE",
    )
    .bind::<SqlUuid, _>(import_id)
    .get_result(conn)
    .await
    .optional()?
    .ok_or(InventoryError::ImportNotFound(import_id))?;
    if now.last_row_number < order.after_row || now.last_row_number >= chunk.first_row {
        return Err(ChunkError::OutOfOrder);
    }
    if now.finished && chunk.last_row > now.last_row_number {
        return Err(InventoryError::ImportFinished {
            import_id,
            last_row: now.last_row_number,
        }
        .into());
    }
    if !deferred.is_empty() {
        returned.extend(upsert(conn, &chunk.good.subset(&deferred), state.source).await?);
    }

    // Sort what came back into inserted, changed, repeated (rejected) and
    // marker moves (unchanged).
    let index: HashMap<&str, usize> = chunk
        .good
        .sku
        .iter()
        .enumerate()
        .map(|(i, sku)| (sku.as_str(), i))
        .collect();
    let mut repeated = HashMap::new();
    let mut changed: Vec<(usize, Changed)> = Vec::new();
    for c in returned {
        let Some(&i) = index.get(c.sku.as_str()) else {
            continue;
        };
        if c.import_row < chunk.good.row_number[i] {
            repeated.insert(
                i,
                format!("sku: {} was already given on row {}", c.sku, c.import_row),
            );
        } else if c.inserted || c.changed {
            changed.push((i, c));
        }
    }
    drop(index);
    // The event's products, from the chunk's rows, before `reject` moves
    // rows around.
    let products: Vec<ImportedProduct> = changed
        .into_iter()
        .map(|(i, c)| ImportedProduct {
            product_id: c.product_id,
            sku: chunk.good.sku[i].clone(),
            name: chunk.good.name[i].clone(),
            currency: chunk.good.currency[i].clone(),
            unit_price_minor: chunk.good.unit_price_minor[i],
            on_hand: chunk.good.on_hand[i],
            created: c.inserted,
            description: c.description,
            category: c.category,
            tags: c.tags,
            version: c.version,
        })
        .collect();
    chunk.reject(&repeated);
    if !chunk.rejected.is_empty() {
        let (numbers, (skus, reasons)): (Vec<i64>, (Vec<&str>, Vec<&str>)) = chunk
            .rejected
            .iter()
            .map(|r| (r.row_number, (r.sku.as_str(), r.reason.as_str())))
            .unzip();
        diesel::sql_query(
            "INSERT INTO stock_import_errors (import_id, row_number, sku, reason) \
             SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(import_id)
        .bind::<Array<BigInt>, _>(&numbers)
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&reasons)
        .execute(conn)
        .await?;
    }

    let inserted = products.iter().filter(|p| p.created).count();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    diesel::sql_query(
        "UPDATE stock_imports SET last_row_number = greatest(last_row_number, $2), \
         rows = rows + $3, inserted = inserted + $4, updated = updated + $5, \
         unchanged = unchanged + $6, rejected = rejected + $7, updated_at = now() \
         WHERE import_id = $1",
    )
    .bind::<SqlUuid, _>(import_id)
    .bind::<BigInt, _>(chunk.last_row)
    .bind::<BigInt, _>(count(chunk.len()))
    .bind::<BigInt, _>(count(inserted))
    .bind::<BigInt, _>(count(products.len() - inserted))
    .bind::<BigInt, _>(count(chunk.good.len() - products.len()))
    .bind::<BigInt, _>(count(chunk.rejected.len()))
    .execute(conn)
    .await?;

    if !products.is_empty() {
        orderflow_outbox::append(
            conn,
            EVENT_SOURCE,
            StockImported {
                import_id,
                first_row: chunk.first_row,
                last_row: chunk.last_row,
                columns: IMPORTED_COLUMNS.map(str::to_owned).to_vec(),
                products,
            },
        )
        .await?;
    }
    Ok(())
}
