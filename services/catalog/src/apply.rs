//! Applying inventory's product state to the catalog: one statement for
//! any number of products, into every generation being served or built.
//!
//! Events of one product arrive on several queues (upserts, adjustments,
//! imports, reservations), so in any order. Each carries the product's
//! version after the change, and an entry keeps, per part (data: name,
//! price, details; stock: what is available), the newest it has seen:
//! an older event changes nothing, the same one again changes nothing. A
//! version-1 event carries no version (0), so among those the event time
//! decides.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use orderflow_db::CachedExt as _;
use std::collections::BTreeMap;
use uuid::Uuid;

/// When, in inventory's order, a state was current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub version: i64,
    pub time: DateTime<Utc>,
}

/// A product's catalogue data and stock, from an event that carries both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub currency: String,
    pub unit_price_minor: i64,
    pub on_hand: i64,
    pub stamp: Stamp,
}

impl Product {
    /// A product of an import chunk or a snapshot page, as of `time`.
    pub fn imported(p: &orderflow_events::inventory::ImportedProduct, time: DateTime<Utc>) -> Self {
        Self {
            product_id: p.product_id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            category: p.category.clone(),
            tags: p.tags.clone(),
            currency: p.currency.clone(),
            unit_price_minor: p.unit_price_minor,
            on_hand: p.on_hand,
            stamp: Stamp {
                version: p.version,
                time,
            },
        }
    }
}

/// A product's stock alone (reservations, releases, adjustments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub stamp: Stamp,
}

/// Tags travel as one text per product (arrays of arrays must be
/// rectangular in PostgreSQL); a tag has no control characters.
const TAG_SEPARATOR: &str = "\u{1f}";

/// The newest of each product's states: one statement may touch a row
/// only once, and rows go in product_id order, the lock order of every
/// writer here, so two batches cannot deadlock.
fn newest<T>(items: Vec<T>, key: impl Fn(&T) -> (Uuid, Stamp)) -> Vec<T> {
    let mut by_id: BTreeMap<Uuid, T> = BTreeMap::new();
    for item in items {
        let (id, stamp) = key(&item);
        match by_id.get(&id) {
            Some(kept) if key(kept).1 > stamp => {}
            _ => {
                by_id.insert(id, item);
            }
        }
    }
    by_id.into_values().collect()
}

/// Inserts products or, per part, updates those whose data or stock is
/// older than the statement's (ON CONFLICT can name no derived table, so
/// the comparison is written out per column).
fn upsert_products(generations: &str) -> String {
    let data = "(c.data_version, c.data_time) <= (excluded.data_version, excluded.data_time)";
    let stock = "(c.stock_version, c.stock_time) <= (excluded.stock_version, excluded.stock_time)";
    let set = |column: &str, newer: &str| {
        format!("{column} = CASE WHEN {newer} THEN excluded.{column} ELSE c.{column} END")
    };
    let mut sets: Vec<String> = [
        "sku",
        "name",
        "description",
        "category",
        "tags",
        "currency",
        "unit_price_minor",
        "data_version",
        "data_time",
    ]
    .iter()
    .map(|c| set(c, data))
    .collect();
    sets.extend(
        ["available", "stock_version", "stock_time"]
            .iter()
            .map(|c| set(c, stock)),
    );
    format!(
        "INSERT INTO catalog_products AS c (generation, product_id, sku, name, description, \
           category, tags, currency, unit_price_minor, available, data_version, data_time, \
           stock_version, stock_time) \
         SELECT g.generation, i.id, i.sku, i.name, i.description, i.category, \
                string_to_array(i.tags, chr(31)), i.currency, i.price, i.on_hand, \
                i.version, i.time, i.version, i.time \
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                       $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::timestamptz[]) \
                  AS i(id, sku, name, description, category, tags, currency, price, on_hand, \
                       version, time) \
           CROSS JOIN catalog_generations g \
          WHERE {generations} \
          ORDER BY i.id, g.generation \
         ON CONFLICT (generation, product_id) DO UPDATE SET {}, updated_at = now() \
         WHERE {data} OR {stock}",
        sets.join(", ")
    )
}

/// Where an event's states go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every generation served or being built: a live event.
    Live,
    /// One generation: a page of a rebuild's snapshot.
    Generation(i32),
}

impl Target {
    /// `$12` of [`UPSERT`]: 0 (no generation has it) for live.
    fn bind(self) -> i32 {
        match self {
            Self::Live => 0,
            Self::Generation(g) => g,
        }
    }
}

static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    upsert_products("(($12 = 0 AND g.state IN ('SERVING', 'BUILDING')) OR g.generation = $12)")
});

/// Applies each product's data and stock where they are newer than what
/// the catalog holds.
///
/// # Errors
/// Database errors.
pub async fn products(
    conn: &mut AsyncPgConnection,
    target: Target,
    products: Vec<Product>,
) -> QueryResult<()> {
    let products = newest(products, |p| (p.product_id, p.stamp));
    if products.is_empty() {
        return Ok(());
    }
    remember_words(conn, &products).await?;
    let ids: Vec<Uuid> = products.iter().map(|p| p.product_id).collect();
    let skus: Vec<&str> = products.iter().map(|p| p.sku.as_str()).collect();
    let names: Vec<&str> = products.iter().map(|p| p.name.as_str()).collect();
    let descriptions: Vec<Option<&str>> =
        products.iter().map(|p| p.description.as_deref()).collect();
    let categories: Vec<Option<&str>> = products.iter().map(|p| p.category.as_deref()).collect();
    let tags: Vec<String> = products
        .iter()
        .map(|p| p.tags.join(TAG_SEPARATOR))
        .collect();
    let currencies: Vec<&str> = products.iter().map(|p| p.currency.as_str()).collect();
    let prices: Vec<i64> = products.iter().map(|p| p.unit_price_minor).collect();
    let on_hand: Vec<i64> = products.iter().map(|p| p.on_hand).collect();
    let versions: Vec<i64> = products.iter().map(|p| p.stamp.version).collect();
    let times: Vec<DateTime<Utc>> = products.iter().map(|p| p.stamp.time).collect();
    diesel::sql_query(UPSERT.as_str())
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Nullable<Text>>, _>(&descriptions)
        .bind::<Array<Nullable<Text>>, _>(&categories)
        .bind::<Array<Text>, _>(&tags)
        .bind::<Array<Text>, _>(&currencies)
        .bind::<Array<BigInt>, _>(&prices)
        .bind::<Array<BigInt>, _>(&on_hand)
        .bind::<Array<BigInt>, _>(&versions)
        .bind::<Array<Timestamptz>, _>(&times)
        .bind::<diesel::sql_types::Integer, _>(target.bind())
        .cached()
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds the words of the products' names, categories and tags to the
/// words typo tolerance corrects to (`catalog_words`), in order (the lock
/// order of concurrent batches).
async fn remember_words(conn: &mut AsyncPgConnection, products: &[Product]) -> QueryResult<()> {
    let words: std::collections::BTreeSet<String> = products
        .iter()
        .flat_map(|p| {
            crate::query::words(&p.name)
                .chain(p.category.iter().flat_map(|c| crate::query::words(c)))
                .chain(p.tags.iter().flat_map(|t| crate::query::words(t)))
                .collect::<Vec<_>>()
        })
        .collect();
    if words.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = words.into_iter().collect();
    diesel::sql_query(
        "INSERT INTO catalog_words (word) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind::<Array<Text>, _>(&words)
    .cached()
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies each product's stock where it is newer than what the catalog
/// holds. A product the catalog has no data for yet gets an entry that
/// search does not show until its data arrives.
///
/// # Errors
/// Database errors.
pub async fn stock(conn: &mut AsyncPgConnection, stock: Vec<Stock>) -> QueryResult<()> {
    let stock = newest(stock, |s| (s.product_id, s.stamp));
    if stock.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = stock.iter().map(|s| s.product_id).collect();
    let on_hand: Vec<i64> = stock.iter().map(|s| s.on_hand).collect();
    let versions: Vec<i64> = stock.iter().map(|s| s.stamp.version).collect();
    let times: Vec<DateTime<Utc>> = stock.iter().map(|s| s.stamp.time).collect();
    diesel::sql_query(
        "INSERT INTO catalog_products AS c (generation, product_id, available, stock_version, \
           stock_time) \
         SELECT g.generation, i.id, i.on_hand, i.version, i.time \
           FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::timestamptz[]) \
                  AS i(id, on_hand, version, time) \
           CROSS JOIN catalog_generations g \
          WHERE g.state IN ('SERVING', 'BUILDING') \
          ORDER BY i.id, g.generation \
         ON CONFLICT (generation, product_id) DO UPDATE SET \
           available = excluded.available, stock_version = excluded.stock_version, \
           stock_time = excluded.stock_time, updated_at = now() \
         WHERE (c.stock_version, c.stock_time) <= (excluded.stock_version, excluded.stock_time)",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<BigInt>, _>(&on_hand)
    .bind::<Array<BigInt>, _>(&versions)
    .bind::<Array<Timestamptz>, _>(&times)
    .cached()
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_state_of_each_product_is_kept_in_id_order() {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let stamp = |version| Stamp { version, time: t };
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let kept = newest(
            vec![(a, stamp(3)), (b, stamp(1)), (a, stamp(5)), (a, stamp(4))],
            |&(id, s)| (id, s),
        );
        assert_eq!(kept, [(b, stamp(1)), (a, stamp(5))]);
    }
}
