//! The product table and the operator use cases that change it. Each use
//! case is one transaction; the event it causes is appended to the outbox
//! inside it, while the product's row lock is held (per-product order).

use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*, result::DatabaseErrorKind};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use orderflow_db::{Pool, PoolError};
use orderflow_events::inventory::{ProductUpserted, StockAdjusted};
use uuid::Uuid;

use crate::{
    EVENT_SOURCE,
    request::{Adjustment, ListQuery, ProductData},
    schema::products,
};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct Product {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub currency: String,
    pub unit_price_minor: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub version: i64,
}

impl Product {
    /// True when storing `data` would change nothing (details not given
    /// are kept, so they cannot differ).
    fn has(&self, data: &ProductData) -> bool {
        let d = &data.details;
        self.sku == data.sku
            && self.name == data.name
            && self.currency == data.currency
            && self.unit_price_minor == data.unit_price_minor
            && self.on_hand == data.on_hand
            && d.description
                .as_ref()
                .is_none_or(|v| *v == self.description)
            && d.category.as_ref().is_none_or(|v| *v == self.category)
            && d.tags.as_ref().is_none_or(|v| *v == self.tags)
    }

    /// The event of an upsert that left the product as it is now.
    pub fn upserted(&self) -> ProductUpserted {
        ProductUpserted {
            product_id: self.product_id,
            sku: self.sku.clone(),
            name: self.name.clone(),
            currency: self.currency.clone(),
            unit_price_minor: self.unit_price_minor,
            on_hand: self.on_hand,
            description: self.description.clone(),
            category: self.category.clone(),
            tags: self.tags.clone(),
            version: self.version,
        }
    }
}

/// Why a use case did not succeed. Mapped to a gRPC status in one place (`api`).
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("product {0} not found")]
    NotFound(Uuid),
    #[error("sku {sku} belongs to another product")]
    SkuTaken { sku: String, owner: Uuid },
    #[error(
        "product {product_id} has {on_hand} on hand; a change of {delta} would make it negative"
    )]
    InsufficientStock {
        product_id: Uuid,
        on_hand: i64,
        delta: i64,
    },
    #[error("product {product_id}: on hand would overflow")]
    Overflow { product_id: Uuid },
    #[error("stock import {0} not found")]
    ImportNotFound(Uuid),
    #[error("stock import {import_id} is finished (last row {last_row})")]
    ImportFinished { import_id: Uuid, last_row: i64 },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for InventoryError {
    fn from(err: diesel::result::Error) -> Self {
        if orderflow_db::is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

impl From<PoolError> for InventoryError {
    fn from(err: PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// Creates the product or replaces its catalogue data and stock on hand;
/// returns it and whether it was created. A call that changes nothing
/// writes nothing (no event), so retries are free.
///
/// `reserved` is left alone: reservations belong to orders in flight.
///
/// # Errors
/// [`InventoryError::SkuTaken`] when another product has the SKU.
#[tracing::instrument(name = "inventory.upsert_product", skip_all, fields(product.id = %data.product_id))]
pub async fn upsert_product(
    pool: &Pool,
    data: ProductData,
) -> Result<(Product, bool), InventoryError> {
    let mut conn = pool.get().await?;
    // A concurrent upsert that inserts the same product or takes the same
    // SKU between our read and our write makes the attempt fail; the next
    // attempt sees its committed row and decides again.
    for _ in 0..3 {
        match conn
            .transaction(async |conn| upsert_once(conn, &data).await)
            .await
        {
            Err(UpsertError::Raced) => {}
            Err(UpsertError::Failed(e)) => return Err(e),
            Ok(done) => return Ok(done),
        }
    }
    Err(InventoryError::Unavailable(
        "concurrent upserts of the same product or SKU; retry".to_owned(),
    ))
}

enum UpsertError {
    Raced,
    Failed(InventoryError),
}

impl From<diesel::result::Error> for UpsertError {
    fn from(err: diesel::result::Error) -> Self {
        match &err {
            diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("products_sku_key") =>
            {
                Self::Raced
            }
            _ => Self::Failed(err.into()),
        }
    }
}

async fn upsert_once(
    conn: &mut AsyncPgConnection,
    data: &ProductData,
) -> Result<(Product, bool), UpsertError> {
    let owner: Option<Uuid> = products::table
        .filter(products::sku.eq(&data.sku))
        .filter(products::product_id.ne(data.product_id))
        .select(products::product_id)
        .first(conn)
        .await
        .optional()?;
    if let Some(owner) = owner {
        return Err(UpsertError::Failed(InventoryError::SkuTaken {
            sku: data.sku.clone(),
            owner,
        }));
    }
    let (product, created) = match lock_product(conn, data.product_id).await? {
        Some(p) if p.has(data) => return Ok((p, false)),
        Some(p) => {
            let d = &data.details;
            let updated = diesel::update(products::table.find(data.product_id))
                .set((
                    products::sku.eq(&data.sku),
                    products::name.eq(&data.name),
                    products::currency.eq(&data.currency),
                    products::unit_price_minor.eq(data.unit_price_minor),
                    products::on_hand.eq(data.on_hand),
                    products::description.eq(d.description.as_ref().unwrap_or(&p.description)),
                    products::category.eq(d.category.as_ref().unwrap_or(&p.category)),
                    products::tags.eq(d.tags.as_ref().unwrap_or(&p.tags)),
                    products::version.eq(products::version + 1),
                    products::updated_at.eq(diesel::dsl::now),
                ))
                .returning(Product::as_returning())
                .get_result(conn)
                .await?;
            (updated, false)
        }
        None => {
            let d = &data.details;
            let inserted = diesel::insert_into(products::table)
                .values((
                    products::product_id.eq(data.product_id),
                    products::sku.eq(&data.sku),
                    products::name.eq(&data.name),
                    products::currency.eq(&data.currency),
                    products::unit_price_minor.eq(data.unit_price_minor),
                    products::on_hand.eq(data.on_hand),
                    products::description.eq(d.description.clone().flatten()),
                    products::category.eq(d.category.clone().flatten()),
                    products::tags.eq(d.tags.clone().unwrap_or_default()),
                    products::version.eq(1),
                ))
                .on_conflict(products::product_id)
                .do_nothing()
                .returning(Product::as_returning())
                .get_result(conn)
                .await
                .optional()?;
            (inserted.ok_or(UpsertError::Raced)?, true)
        }
    };
    orderflow_outbox::append(conn, EVENT_SOURCE, product.upserted()).await?;
    Ok((product, created))
}

async fn lock_product(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Product>, diesel::result::Error> {
    products::table
        .find(id)
        .for_update()
        .select(Product::as_select())
        .first(conn)
        .await
        .optional()
}

/// # Errors
/// [`InventoryError::NotFound`] for an unknown id.
#[tracing::instrument(name = "inventory.get_product", skip(pool))]
pub async fn get_product(pool: &Pool, id: Uuid) -> Result<Product, InventoryError> {
    let mut conn = pool.get().await?;
    products::table
        .find(id)
        .select(Product::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(InventoryError::NotFound(id))
}

/// A page of products ordered by SKU (keyset on the unique SKU, so a page
/// costs the same however deep), and the last SKU when more follow.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "inventory.list_products", skip(pool))]
pub async fn list_products(
    pool: &Pool,
    query: ListQuery,
) -> Result<(Vec<Product>, Option<String>), InventoryError> {
    let mut conn = pool.get().await?;
    let mut select = products::table.select(Product::as_select()).into_boxed();
    if let Some(after) = &query.after {
        select = select.filter(products::sku.gt(after));
    }
    let mut rows: Vec<Product> = select
        .order(products::sku)
        .limit(query.page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > query.page_size {
        rows.truncate(usize::try_from(query.page_size).unwrap_or(0));
        rows.last().map(|p| p.sku.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// Adds `delta` (negative: removes) to the units on hand.
///
/// # Errors
/// [`InventoryError::NotFound`]; [`InventoryError::InsufficientStock`] when
/// on hand would become negative (nothing is changed then).
#[tracing::instrument(name = "inventory.adjust_stock", skip_all, fields(product.id = %adj.product_id, delta = adj.delta))]
pub async fn adjust_stock(pool: &Pool, adj: Adjustment) -> Result<Product, InventoryError> {
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        let product = lock_product(conn, adj.product_id)
            .await?
            .ok_or(InventoryError::NotFound(adj.product_id))?;
        let on_hand = match product.on_hand.checked_add(adj.delta) {
            Some(n) if n >= 0 => n,
            Some(_) => {
                return Err(InventoryError::InsufficientStock {
                    product_id: adj.product_id,
                    on_hand: product.on_hand,
                    delta: adj.delta,
                });
            }
            None => {
                return Err(InventoryError::Overflow {
                    product_id: adj.product_id,
                });
            }
        };
        let product = diesel::update(products::table.find(adj.product_id))
            .set((
                products::on_hand.eq(on_hand),
                products::version.eq(products::version + 1),
                products::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Product::as_returning())
            .get_result(conn)
            .await?;
        orderflow_outbox::append(
            conn,
            EVENT_SOURCE,
            StockAdjusted {
                product_id: adj.product_id,
                delta: adj.delta,
                on_hand,
                reason: adj.reason.clone(),
                version: product.version,
            },
        )
        .await?;
        Ok(product)
    })
    .await
}
