//! The order tables and the use cases that change them. Each use case is one
//! transaction; the events it causes are appended to the outbox inside it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use orderflow_db::{CachedExt as _, Pool, PoolError};
use orderflow_events::order::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderPlacedLine};
use uuid::Uuid;

use crate::{
    metrics::CancelCause,
    request::{ListQuery, NewOrder},
};

/// CloudEvents `source` of every event this service writes.
pub const EVENT_SOURCE: &str = "orderflow/order";

pub mod schema {
    diesel::table! {
        orders (id) {
            id -> Uuid,
            request_id -> Uuid,
            request_hash -> Bytea,
            customer_id -> Uuid,
            customer_email -> Text,
            status -> Text,
            cancel_reason -> Nullable<Text>,
            currency -> Text,
            total_minor -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        order_lines (order_id, line_no) {
            order_id -> Uuid,
            line_no -> Int4,
            product_id -> Uuid,
            quantity -> Int4,
            unit_price_minor -> Int8,
        }
    }

    diesel::joinable!(order_lines -> orders (order_id));
    diesel::allow_tables_to_appear_in_same_query!(orders, order_lines);
}

use schema::{order_lines, orders};

pub mod status {
    pub const PENDING: &str = "PENDING";
    pub const CONFIRMED: &str = "CONFIRMED";
    pub const CANCELLED: &str = "CANCELLED";
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct OrderRow {
    pub id: Uuid,
    pub request_id: Uuid,
    pub request_hash: Vec<u8>,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines, check_for_backend(diesel::pg::Pg))]
pub struct LineRow {
    pub order_id: Uuid,
    pub line_no: i32,
    pub product_id: Uuid,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// An order with its lines, as the API returns it.
#[derive(Debug, Clone)]
pub struct Order {
    pub row: OrderRow,
    pub lines: Vec<LineRow>,
}

/// Why a use case did not succeed. Mapped to a gRPC status in one place (`api`).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("request_id {0} was already used for a different request")]
    RequestIdReused(Uuid),
    #[error("order {id} is {status} and can no longer be cancelled")]
    NotCancellable { id: Uuid, status: String },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every pooled connection stayed busy for the pool's wait timeout.
    #[error("every database connection is busy: {0}")]
    Busy(String),
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for OrderError {
    fn from(err: diesel::result::Error) -> Self {
        if orderflow_db::is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

impl From<PoolError> for OrderError {
    fn from(err: PoolError) -> Self {
        if orderflow_db::is_busy(&err) {
            Self::Busy(err.to_string())
        } else {
            Self::Unavailable(err.to_string())
        }
    }
}

/// Creates the order, or returns the one created earlier with the same
/// `request_id`.
///
/// The insert of the order row races on the unique `request_id`: a
/// concurrent duplicate blocks until the first transaction ends, then inserts
/// nothing, and this call reads the winner's order. So 50 concurrent retries
/// create one order and one `order.placed`.
///
/// # Errors
/// [`OrderError::RequestIdReused`] when the request_id belongs to a different
/// request; database errors otherwise.
#[tracing::instrument(name = "order.create", skip_all, fields(order.request_id = %new.request_id, order.id))]
pub async fn create_order(pool: &Pool, new: NewOrder) -> Result<Order, OrderError> {
    let mut conn = pool.get().await?;
    let fingerprint = new.fingerprint();
    let id = Uuid::now_v7();
    let inserted = conn
        .transaction(async |conn| insert_order(conn, id, &new, &fingerprint).await)
        .await?;
    match inserted {
        Some(order) => {
            crate::metrics::placed();
            tracing::Span::current().record("order.id", tracing::field::display(id));
            Ok(order)
        }
        None => {
            let existing = orders::table
                .filter(orders::request_id.eq(new.request_id))
                .select(OrderRow::as_select())
                .first(&mut conn)
                .await?;
            if existing.request_hash != fingerprint {
                return Err(OrderError::RequestIdReused(new.request_id));
            }
            with_lines(&mut conn, existing).await
        }
    }
}

/// The transaction body of CreateOrder: `None` when the request_id exists.
async fn insert_order(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    new: &NewOrder,
    fingerprint: &[u8],
) -> Result<Option<Order>, OrderError> {
    let inserted: Option<(DateTime<Utc>, DateTime<Utc>)> = diesel::insert_into(orders::table)
        .values((
            orders::id.eq(id),
            orders::request_id.eq(new.request_id),
            orders::request_hash.eq(fingerprint),
            orders::customer_id.eq(new.customer_id),
            orders::customer_email.eq(&new.customer_email),
            orders::status.eq(status::PENDING),
            orders::currency.eq(&new.currency),
            orders::total_minor.eq(new.total_minor),
        ))
        .on_conflict(orders::request_id)
        .do_nothing()
        .returning((orders::created_at, orders::updated_at))
        .get_result(conn)
        .await
        .optional()?;
    let Some((created_at, updated_at)) = inserted else {
        return Ok(None);
    };
    let lines: Vec<LineRow> = new
        .lines
        .iter()
        .zip(0..)
        .map(|(l, line_no)| LineRow {
            order_id: id,
            line_no,
            product_id: l.product_id,
            quantity: l.quantity,
            unit_price_minor: l.unit_price_minor,
        })
        .collect();
    diesel::insert_into(order_lines::table)
        .values(&lines)
        .cached()
        .execute(conn)
        .await?;
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        OrderPlaced {
            order_id: id,
            customer_id: new.customer_id,
            customer_email: new.customer_email.clone(),
            currency: new.currency.clone(),
            total_minor: new.total_minor,
            lines: lines
                .iter()
                .map(|l| OrderPlacedLine {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            payment_token: new.payment_token.clone(),
            customer_phone: new.customer_phone.clone(),
        },
    )
    .await?;
    Ok(Some(Order {
        row: OrderRow {
            id,
            request_id: new.request_id,
            request_hash: fingerprint.to_vec(),
            customer_id: new.customer_id,
            customer_email: new.customer_email.clone(),
            status: status::PENDING.to_owned(),
            cancel_reason: None,
            currency: new.currency.clone(),
            total_minor: new.total_minor,
            created_at,
            updated_at,
        },
        lines,
    }))
}

/// # Errors
/// [`OrderError::NotFound`] for an unknown id.
#[tracing::instrument(name = "order.get", skip(pool))]
pub async fn get_order(pool: &Pool, id: Uuid) -> Result<Order, OrderError> {
    let mut conn = pool.get().await?;
    let row = orders::table
        .find(id)
        .select(OrderRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(OrderError::NotFound(id))?;
    with_lines(&mut conn, row).await
}

/// 9999-12-31T23:59:59.999999Z: the latest time a page token may hold.
const MAX_CURSOR_MICROS: i64 = 253_402_300_799_999_999;

/// Where the previous page ended: ListOrders pages by keyset
/// (`created_at`, `id`) descending, so a page costs the same however deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_micros: i64,
    pub id: Uuid,
}

impl Cursor {
    /// An opaque token that also binds the customer filter it was issued for.
    pub fn encode(&self, customer: Option<Uuid>) -> String {
        let filter = customer.map_or_else(|| "-".to_owned(), |c| c.simple().to_string());
        let plain = format!(
            "v1.{}.{}.{}",
            self.created_at_micros,
            self.id.simple(),
            filter
        );
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor and customer filter, or `None` for anything malformed.
    pub fn decode(token: &str) -> Option<(Self, Option<Uuid>)> {
        if token.len() > 256 || !token.len().is_multiple_of(2) {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let mut parts = plain.split('.');
        if parts.next()? != "v1" {
            return None;
        }
        let created_at_micros: i64 = parts.next()?.parse().ok()?;
        // Issued tokens hold a `now()` of this era; a forged time before 1970
        // or past 9999 would reach PostgreSQL out of its range (an error, not
        // an empty page).
        if !(0..=MAX_CURSOR_MICROS).contains(&created_at_micros) {
            return None;
        }
        let id = Uuid::try_parse(parts.next()?).ok()?;
        let filter = match parts.next()? {
            "-" => None,
            c => Some(Uuid::try_parse(c).ok()?),
        };
        parts.next().is_none().then_some((
            Self {
                created_at_micros,
                id,
            },
            filter,
        ))
    }
}

/// A page of orders, newest first, and the cursor of the next page.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "order.list", skip(pool))]
pub async fn list_orders(
    pool: &Pool,
    query: ListQuery,
) -> Result<(Vec<Order>, Option<Cursor>), OrderError> {
    let mut conn = pool.get().await?;
    let mut select = orders::table.select(OrderRow::as_select()).into_boxed();
    if let Some(customer) = query.customer_id {
        select = select.filter(orders::customer_id.eq(customer));
    }
    if let Some(after) = query.after {
        let at =
            DateTime::<Utc>::from_timestamp_micros(after.created_at_micros).unwrap_or_default();
        select = select.filter(
            orders::created_at
                .lt(at)
                .or(orders::created_at.eq(at).and(orders::id.lt(after.id))),
        );
    }
    let mut rows: Vec<OrderRow> = select
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(query.page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > query.page_size {
        rows.truncate(query.page_size as usize);
        rows.last().map(|r| Cursor {
            created_at_micros: r.created_at.timestamp_micros(),
            id: r.id,
        })
    } else {
        None
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let lines: Vec<LineRow> = order_lines::table
        .filter(order_lines::order_id.eq_any(&ids))
        .order((order_lines::order_id, order_lines::line_no))
        .select(LineRow::as_select())
        .load(&mut conn)
        .await?;
    let mut by_order: HashMap<Uuid, Vec<LineRow>> = HashMap::new();
    for line in lines {
        by_order.entry(line.order_id).or_default().push(line);
    }
    let orders = rows
        .into_iter()
        .map(|row| {
            let lines = by_order.remove(&row.id).unwrap_or_default();
            Order { row, lines }
        })
        .collect();
    Ok((orders, next))
}

/// Cancels a PENDING order and emits `order.cancelled`; a CANCELLED order is
/// returned unchanged, so a retried cancel is harmless.
///
/// # Errors
/// [`OrderError::NotFound`], or [`OrderError::NotCancellable`] once CONFIRMED.
#[tracing::instrument(name = "order.cancel", skip(pool, reason))]
pub async fn cancel_order(pool: &Pool, id: Uuid, reason: String) -> Result<Order, OrderError> {
    let mut conn = pool.get().await?;
    let row =
        orderflow_db::with_after_commit(conn.transaction(async |conn| {
            cancel_in_tx(conn, id, &reason, CancelCause::Customer).await
        }))
        .await?;
    with_lines(&mut conn, row).await
}

/// The body of [`cancel_order`], also run by the saga handlers inside their
/// own transaction.
///
/// # Errors
/// [`OrderError::NotFound`], or [`OrderError::NotCancellable`] once CONFIRMED.
pub async fn cancel_in_tx(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    cause: CancelCause,
) -> Result<OrderRow, OrderError> {
    // The row lock orders this event after any other event of the same
    // order (see orderflow-outbox).
    let mut row = lock_order(conn, id).await?;
    match row.status.as_str() {
        status::CANCELLED => return Ok(row),
        status::PENDING => {}
        other => {
            return Err(OrderError::NotCancellable {
                id,
                status: other.to_owned(),
            });
        }
    }
    row.updated_at = diesel::update(orders::table.find(id))
        .set((
            orders::status.eq(status::CANCELLED),
            orders::cancel_reason.eq(reason),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(orders::updated_at)
        .cached()
        .get_result(conn)
        .await?;
    row.status = status::CANCELLED.to_owned();
    row.cancel_reason = Some(reason.to_owned());
    crate::metrics::cancelled_on_commit(cause);
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        OrderCancelled {
            order_id: id,
            customer_id: row.customer_id,
            customer_email: row.customer_email.clone(),
            reason: reason.to_owned(),
        },
    )
    .await?;
    Ok(row)
}

/// Confirms a PENDING order and emits `order.confirmed`. A CANCELLED order
/// stays cancelled (its `order.cancelled` makes payment refund) and a
/// CONFIRMED one is left as it is, so the call is safe to repeat.
///
/// # Errors
/// [`OrderError::NotFound`]; database errors.
pub async fn confirm_in_tx(conn: &mut AsyncPgConnection, id: Uuid) -> Result<OrderRow, OrderError> {
    let mut row = lock_order(conn, id).await?;
    if row.status != status::PENDING {
        return Ok(row);
    }
    row.updated_at = diesel::update(orders::table.find(id))
        .set((
            orders::status.eq(status::CONFIRMED),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(orders::updated_at)
        .cached()
        .get_result(conn)
        .await?;
    row.status = status::CONFIRMED.to_owned();
    crate::metrics::confirmed_on_commit();
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        OrderConfirmed {
            order_id: id,
            customer_id: row.customer_id,
            customer_email: row.customer_email.clone(),
            currency: row.currency.clone(),
            total_minor: row.total_minor,
        },
    )
    .await?;
    Ok(row)
}

/// Locks the orders in id order: a batch of saga events takes its orders'
/// locks this way first, so two batches cannot deadlock.
///
/// # Errors
/// A database error.
pub async fn lock_orders(conn: &mut AsyncPgConnection, mut ids: Vec<Uuid>) -> QueryResult<()> {
    ids.sort_unstable();
    ids.dedup();
    orders::table
        .filter(orders::id.eq_any(&ids))
        .order(orders::id)
        .for_update()
        .select(orders::id)
        .load::<Uuid>(conn)
        .await?;
    Ok(())
}

async fn lock_order(conn: &mut AsyncPgConnection, id: Uuid) -> Result<OrderRow, OrderError> {
    orders::table
        .find(id)
        .for_update()
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(OrderError::NotFound(id))
}

async fn with_lines(conn: &mut AsyncPgConnection, row: OrderRow) -> Result<Order, OrderError> {
    let lines = order_lines::table
        .filter(order_lines::order_id.eq(row.id))
        .order(order_lines::line_no)
        .select(LineRow::as_select())
        .load(conn)
        .await?;
    Ok(Order { row, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_tokens_round_trip_and_bind_the_filter() {
        let c = Cursor {
            created_at_micros: 1_763_900_000_123_456,
            id: Uuid::new_v4(),
        };
        let customer = Uuid::new_v4();
        assert_eq!(
            Cursor::decode(&c.encode(Some(customer))),
            Some((c, Some(customer)))
        );
        assert_eq!(Cursor::decode(&c.encode(None)), Some((c, None)));
        for junk in ["", "zz", "abc", &"00".repeat(200), "76312e", "é"] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
    }
}
