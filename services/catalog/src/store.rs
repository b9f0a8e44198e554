//! The catalog's reads: search, one product, category counts. Every read
//! sees the generation being served (`catalog_generations`), and only
//! entries whose data has arrived.
//!
//! A search first matches the query's words with PostgreSQL full-text
//! search (the `search` tsvector, GIN-indexed; ranked by `ts_rank`, a name
//! match above a category or tag match above a description match). When
//! that finds nothing and the query has words a product must hold, it
//! replaces each word it does not know by the most similar word it knows
//! (pg_trgm over `catalog_words`) and searches again: typo tolerance.

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    pg::Pg,
    query_builder::BoxedSqlQuery,
    sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use orderflow_db::{Pool, PoolError};
use uuid::Uuid;

use crate::{
    query::Query,
    request::{Filters, Search, Sort},
};

/// A catalog entry as the API shows it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Entry {
    #[diesel(sql_type = SqlUuid)]
    pub product_id: Uuid,
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub description: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub category: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub tags: Vec<String>,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub unit_price_minor: i64,
    #[diesel(sql_type = BigInt)]
    pub available: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// A search hit: the entry, its relevance and its snippet.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Hit {
    #[diesel(embed)]
    pub entry: Entry,
    #[diesel(sql_type = Double)]
    pub relevance: f64,
    #[diesel(sql_type = Text)]
    pub snippet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct CategoryCount {
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = BigInt)]
    pub product_count: i64,
}

/// Why a read did not succeed. Mapped to a gRPC status in one place (`api`).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("product {0} is not in the catalog")]
    NotFound(Uuid),
    #[error("no rebuild {}", .0.map_or_else(|| "yet".to_owned(), |id| id.to_string()))]
    RebuildNotFound(Option<Uuid>),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every pooled connection stayed busy for the pool's wait timeout.
    #[error("every database connection is busy: {0}")]
    Busy(String),
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for CatalogError {
    fn from(err: diesel::result::Error) -> Self {
        if orderflow_db::is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

impl From<PoolError> for CatalogError {
    fn from(err: PoolError) -> Self {
        if orderflow_db::is_busy(&err) {
            Self::Busy(err.to_string())
        } else {
            Self::Unavailable(err.to_string())
        }
    }
}

const ENTRY_COLUMNS: &str = "p.product_id, p.sku, p.name, p.description, p.category, p.tags, \
     p.currency, p.unit_price_minor, p.available, greatest(p.data_version, p.stock_version) AS version, p.updated_at";

/// The entries of the generation being served whose data has arrived.
const VISIBLE: &str = "p.generation = (SELECT generation FROM catalog_generations \
     WHERE state = 'SERVING') AND p.name IS NOT NULL";

/// Options of the snippet: matched words marked, one fragment of up to 24
/// words.
const HEADLINE: &str =
    "StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=8, ShortWord=2, MaxFragments=1";

/// A bound value of a statement built at run time.
enum Bind {
    Text(String),
    BigInt(i64),
}

/// A statement built from parts, with its binds numbered as they come.
#[derive(Default)]
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends `$n` for `value`.
    fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        let n = self.binds.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    fn into_query(self) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
        let mut q = diesel::sql_query(self.text).into_boxed::<Pg>();
        for b in self.binds {
            q = match b {
                Bind::Text(v) => q.bind::<Text, _>(v),
                Bind::BigInt(v) => q.bind::<BigInt, _>(v),
            };
        }
        q
    }
}

/// How a search matches: the query's words, or everything.
enum Matching {
    All,
    /// The query's tsquery.
    Words(String),
}

impl Matching {
    /// The relevance column.
    fn relevance(&self, sql: &mut Sql) {
        match self {
            Self::All => {
                sql.push("0::float8 AS relevance, ");
            }
            Self::Words(all) => {
                sql.push("ts_rank(p.search, to_tsquery('english', ")
                    .bind(Bind::Text(all.clone()))
                    .push("))::float8 AS relevance, ");
            }
        }
    }

    /// The `WHERE` conditions (after `AND`).
    /// `in_names`: the words must be in the name (the first candidates).
    fn condition(&self, sql: &mut Sql, in_names: bool) {
        match self {
            Self::All => {}
            Self::Words(all) => {
                if in_names {
                    sql.push(" AND p.name_search @@ to_tsquery('english', ")
                        .bind(Bind::Text(all.clone()))
                        .push(")");
                }
                // Also for name candidates: an excluded word counts anywhere.
                sql.push(" AND p.search @@ to_tsquery('english', ")
                    .bind(Bind::Text(all.clone()))
                    .push(")");
            }
        }
    }
}

fn matching(query: &Query) -> Matching {
    if query.is_empty() {
        Matching::All
    } else {
        Matching::Words(query.to_tsquery())
    }
}

fn write_filters(sql: &mut Sql, f: &Filters) {
    if let Some(c) = &f.category {
        sql.push(" AND p.category = ").bind(Bind::Text(c.clone()));
    }
    if let Some(c) = &f.currency {
        sql.push(" AND p.currency = ").bind(Bind::Text(c.clone()));
    }
    if let Some(min) = f.min_price_minor {
        sql.push(" AND p.unit_price_minor >= ")
            .bind(Bind::BigInt(min));
    }
    if let Some(max) = f.max_price_minor {
        sql.push(" AND p.unit_price_minor <= ")
            .bind(Bind::BigInt(max));
    }
    if f.in_stock_only {
        sql.push(" AND p.available > 0");
    }
}

/// How many matching products a search by relevance ranks at most, per
/// kind (name matches, any matches); see [`search_with`].
const CANDIDATES: i64 = 300;

/// `SELECT` of the entries `how` matches, with their relevance and the
/// snippet's text; at most `cap`.
fn candidates(sql: &mut Sql, how: &Matching, filters: &Filters, in_names: bool, cap: Option<i64>) {
    sql.push("SELECT ").push(ENTRY_COLUMNS).push(", ");
    how.relevance(sql);
    sql.push("concat_ws(' — ', p.name, p.description) AS text FROM catalog_products p WHERE ")
        .push(VISIBLE);
    how.condition(sql, in_names);
    write_filters(sql, filters);
    if let Some(cap) = cap {
        sql.push(" LIMIT ").bind(Bind::BigInt(cap));
    }
}

/// One page of `search`, and the corrected query when the words as typed
/// found nothing and similar ones were searched instead.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "catalog.search", skip_all, fields(corrected))]
pub async fn search(
    pool: &Pool,
    search: &Search,
) -> Result<(Vec<Hit>, Option<Query>), CatalogError> {
    let mut conn = pool.get().await?;
    let hits = search_with(&mut conn, search, &matching(&search.query)).await?;
    // Typo tolerance only when the words as typed find nothing at all.
    if !hits.is_empty() || search.query.is_empty() || search.offset > 0 {
        return Ok((hits, None));
    }
    let Some(corrected) = correct(&mut conn, &search.query).await? else {
        return Ok((hits, None));
    };
    tracing::Span::current().record("corrected", tracing::field::display(&corrected));
    let hits = search_with(&mut conn, search, &matching(&corrected)).await?;
    Ok((hits, Some(corrected)))
}

#[derive(QueryableByName)]
struct Correction {
    #[diesel(sql_type = Text)]
    typed: String,
    #[diesel(sql_type = Text)]
    instead: String,
}

/// `query` with each searched word the catalog does not know replaced by
/// the most similar word it knows (`catalog_words`, pg_trgm similarity at
/// its threshold, 0.3), or `None` when there is nothing to correct.
async fn correct(
    conn: &mut AsyncPgConnection,
    query: &Query,
) -> Result<Option<Query>, CatalogError> {
    let typed: Vec<String> = query
        .searched_words()
        .into_iter()
        .filter(|w| crate::query::correctable(w))
        .collect();
    if typed.is_empty() {
        return Ok(None);
    }
    let corrections: Vec<Correction> = diesel::sql_query(
        "SELECT q.w AS typed, best.word AS instead FROM unnest($1::text[]) AS q(w) \
         CROSS JOIN LATERAL (SELECT word FROM catalog_words WHERE word % q.w \
                             ORDER BY similarity(word, q.w) DESC, word LIMIT 1) AS best \
         WHERE NOT EXISTS (SELECT 1 FROM catalog_words k WHERE k.word = q.w)",
    )
    .bind::<Array<Text>, _>(&typed)
    .load(conn)
    .await?;
    let pairs: Vec<(String, String)> = corrections
        .into_iter()
        .map(|c| (c.typed, c.instead))
        .collect();
    Ok(query.corrected(&pairs))
}

async fn search_with(
    conn: &mut AsyncPgConnection,
    search: &Search,
    how: &Matching,
) -> Result<Vec<Hit>, CatalogError> {
    // The page first (ranked, filtered, limited), then the snippets of
    // its rows only: ts_headline re-parses the text, which costs.
    //
    // Ranking reads every candidate's row (its tsvector), so a broad query
    // ("lamp": 25,000 of 1,000,000 products) would read them all for one
    // page: 90 ms. By relevance the candidates are therefore capped: the
    // first CANDIDATES products whose names hold the words, and the first
    // CANDIDATES that hold them anywhere, ranked together (20 ms with 1,000
    // each, 6 ms with 300). A name match
    // still ranks above a description match; among more name matches than
    // the cap the page is the best of those read, not of all.
    let mut sql = Sql::default();
    sql.push("WITH page AS (SELECT * FROM (");
    let capped = search.sort == Sort::Relevance && !matches!(how, Matching::All);
    let cap = CANDIDATES.max(search.offset + search.page_size + 1);
    if capped {
        if matches!(how, Matching::Words(_)) {
            sql.push("(");
            candidates(&mut sql, how, &search.filters, true, Some(cap));
            sql.push(") UNION ");
        }
        sql.push("(");
        candidates(&mut sql, how, &search.filters, false, Some(cap));
        sql.push(")");
    } else {
        candidates(&mut sql, how, &search.filters, false, None);
    }
    sql.push(") AS c");
    sql.push(match search.sort {
        Sort::Relevance => " ORDER BY relevance DESC, product_id",
        Sort::PriceAscending => " ORDER BY unit_price_minor, product_id",
        Sort::PriceDescending => " ORDER BY unit_price_minor DESC, product_id",
        Sort::Name => " ORDER BY name, product_id",
    });
    sql.push(" LIMIT ")
        .bind(Bind::BigInt(search.page_size + 1))
        .push(" OFFSET ")
        .bind(Bind::BigInt(search.offset))
        .push(") SELECT page.*, ");
    match how {
        Matching::Words(all) => {
            sql.push("ts_headline('english', page.text, to_tsquery('english', ")
                .bind(Bind::Text(all.clone()))
                .push("), ")
                .bind(Bind::Text(HEADLINE.to_owned()))
                .push(")");
        }
        _ => {
            sql.push("left(page.text, 160)");
        }
    }
    sql.push(" AS snippet FROM page");
    sql.push(match search.sort {
        Sort::Relevance => " ORDER BY relevance DESC, product_id",
        Sort::PriceAscending => " ORDER BY unit_price_minor, product_id",
        Sort::PriceDescending => " ORDER BY unit_price_minor DESC, product_id",
        Sort::Name => " ORDER BY name, product_id",
    });
    Ok(sql.into_query().load::<Hit>(conn).await?)
}

/// # Errors
/// [`CatalogError::NotFound`] when the catalog has no data for the product.
#[tracing::instrument(name = "catalog.get", skip(pool))]
pub async fn get(pool: &Pool, product_id: Uuid) -> Result<Entry, CatalogError> {
    let mut conn = pool.get().await?;
    let mut rows: Vec<Entry> = diesel::sql_query(format!(
        "SELECT {ENTRY_COLUMNS} FROM catalog_products p WHERE {VISIBLE} AND p.product_id = $1"
    ))
    .bind::<SqlUuid, _>(product_id)
    .load(&mut conn)
    .await?;
    rows.pop().ok_or(CatalogError::NotFound(product_id))
}

/// The categories of the products `query` finds (with typo tolerance, as
/// a search), most products first; at most 100.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "catalog.categories", skip_all)]
pub async fn categories(
    pool: &Pool,
    query: &Query,
    filters: &Filters,
) -> Result<Vec<CategoryCount>, CatalogError> {
    let mut conn = pool.get().await?;
    let counts = categories_with(&mut conn, &matching(query), filters).await?;
    if !counts.is_empty() || query.is_empty() {
        return Ok(counts);
    }
    match correct(&mut conn, query).await? {
        Some(corrected) => categories_with(&mut conn, &matching(&corrected), filters).await,
        None => Ok(counts),
    }
}

async fn categories_with(
    conn: &mut AsyncPgConnection,
    how: &Matching,
    filters: &Filters,
) -> Result<Vec<CategoryCount>, CatalogError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT coalesce(p.category, '') AS category, count(*) AS product_count \
         FROM catalog_products p WHERE ",
    )
    .push(VISIBLE);
    how.condition(&mut sql, false);
    write_filters(&mut sql, filters);
    sql.push(" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 100");
    Ok(sql.into_query().load(conn).await?)
}
