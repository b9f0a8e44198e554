//! The payment tables, the read use cases of the API and the saga steps the
//! handlers run. A saga step runs on the consumer's connection, inside the
//! transaction that also holds its inbox row, and appends its events there.

use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orderflow_db::{CachedExt as _, Pool, PoolError};
use orderflow_events::{
    inventory::InventoryReserved,
    order::OrderCancelled,
    payment::{PaymentCompleted, PaymentFailed, PaymentRefunded},
};
use orderflow_grpc::page_token::Keyset;
use uuid::Uuid;

use crate::{
    gateway::{self, ChargeError, Decision, Gateway},
    request::{ListQuery, PaymentKey},
};

/// CloudEvents `source` of every event this service writes.
pub const EVENT_SOURCE: &str = "orderflow/payment";

pub mod schema {
    diesel::table! {
        payments (payment_id) {
            payment_id -> Uuid,
            order_id -> Uuid,
            customer_id -> Uuid,
            currency -> Text,
            amount_minor -> Int8,
            status -> Text,
            reason -> Nullable<Text>,
            gateway_reference -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        cancelled_orders (order_id) {
            order_id -> Uuid,
            reason -> Text,
            cancelled_at -> Timestamptz,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(payments, cancelled_orders);
}

use schema::{cancelled_orders, payments};

pub mod status {
    pub const COMPLETED: &str = "COMPLETED";
    pub const FAILED: &str = "FAILED";
    pub const REFUNDED: &str = "REFUNDED";
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = payments, check_for_backend(diesel::pg::Pg))]
pub struct Payment {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub amount_minor: i64,
    pub status: String,
    pub reason: Option<String>,
    pub gateway_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an API use case did not succeed. Mapped to a gRPC status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("payment not found: {0}")]
    NotFound(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for PaymentError {
    fn from(err: diesel::result::Error) -> Self {
        if orderflow_db::is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

impl From<PoolError> for PaymentError {
    fn from(err: PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// # Errors
/// [`PaymentError::NotFound`] when no payment has that id (or order).
#[tracing::instrument(name = "payment.get", skip(pool))]
pub async fn get_payment(pool: &Pool, key: PaymentKey) -> Result<Payment, PaymentError> {
    let mut conn = pool.get().await?;
    let query = payments::table.select(Payment::as_select()).into_boxed();
    let (query, name) = match key {
        PaymentKey::PaymentId(id) => (
            query.filter(payments::payment_id.eq(id)),
            format!("payments/{id}"),
        ),
        PaymentKey::OrderId(id) => (
            query.filter(payments::order_id.eq(id)),
            format!("orders/{id}/payment"),
        ),
    };
    query
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(PaymentError::NotFound(name))
}

/// A page of payments, newest first, and where the next page starts.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "payment.list", skip(pool))]
pub async fn list_payments(
    pool: &Pool,
    query: &ListQuery,
) -> Result<(Vec<Payment>, Option<Keyset>), PaymentError> {
    let mut conn = pool.get().await?;
    let mut select = payments::table.select(Payment::as_select()).into_boxed();
    if let Some(customer) = query.customer_id {
        select = select.filter(payments::customer_id.eq(customer));
    }
    if let Some(order) = query.order_id {
        select = select.filter(payments::order_id.eq(order));
    }
    if let Some(after) = query.after {
        let at = DateTime::<Utc>::from_timestamp_micros(after.at_micros).unwrap_or_default();
        select = select.filter(
            payments::created_at.lt(at).or(payments::created_at
                .eq(at)
                .and(payments::payment_id.lt(after.id))),
        );
    }
    let mut rows: Vec<Payment> = select
        .order((payments::created_at.desc(), payments::payment_id.desc()))
        .limit(query.page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > query.page_size {
        rows.truncate(query.page_size as usize);
        rows.last().map(|p| Keyset {
            at_micros: p.created_at.timestamp_micros(),
            id: p.payment_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// What a saga step did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Charged {
        payment_id: Uuid,
    },
    Declined {
        payment_id: Uuid,
        reason: String,
    },
    Refunded {
        payment_id: Uuid,
    },
    /// The order was cancelled before it was charged; a tombstone remembers it.
    Tombstoned,
    /// Nothing to do, and why.
    Skipped(&'static str),
}

/// Serialises every saga step of one order (charge vs. cancel arrive on
/// different queues and may run at the same time). Held until the
/// transaction ends; READ COMMITTED then shows each step what the other
/// committed.
async fn lock_order(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<()> {
    lock_orders(conn, vec![order_id]).await
}

/// The locks of [`lock_order`] for several orders, taken in key order so
/// that two batches cannot deadlock.
///
/// # Errors
/// A database error.
pub async fn lock_orders(conn: &mut AsyncPgConnection, order_ids: Vec<Uuid>) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(k) FROM \
         (SELECT DISTINCT hashtextextended(id::text, 7) AS k FROM unnest($1::uuid[]) AS id ORDER BY k) AS keys",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(order_ids)
    .cached()
    .execute(conn)
    .await
    .map(|_| ())
}

async fn payment_of(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::order_id.eq(order_id))
        .select(Payment::as_select())
        .first(conn)
        .await
        .optional()
}

/// Why a charge step did not complete. Both are worth retrying; the caller
/// rolls the transaction back, so nothing of the step is written.
#[derive(Debug, thiserror::Error)]
pub enum ChargeStepError {
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// The gateway failed or its circuit breaker is open: no decision.
    #[error(transparent)]
    Gateway(#[from] ChargeError),
}

/// inventory.reserved: charge the order once, unless it was cancelled first.
///
/// # Errors
/// Database errors, and a gateway that took no decision (an outage, or its
/// breaker open). A declined card is [`Outcome::Declined`], not an error.
pub async fn charge(
    conn: &mut AsyncPgConnection,
    gateway: &Gateway,
    reserved: &InventoryReserved,
) -> Result<Outcome, ChargeStepError> {
    let order_id = reserved.order_id;
    lock_order(conn, order_id).await?;
    if payment_of(conn, order_id).await?.is_some() {
        return Ok(Outcome::Skipped("the order already has a payment"));
    }
    let cancelled: Option<Uuid> = cancelled_orders::table
        .find(order_id)
        .select(cancelled_orders::order_id)
        .first(conn)
        .await
        .optional()?;
    if cancelled.is_some() {
        return Ok(Outcome::Skipped(
            "the order was cancelled before it was charged",
        ));
    }
    let payment_id = Uuid::now_v7();
    let decision = gateway.charge(gateway::Charge {
        payment_id,
        token: &reserved.payment_token,
        amount_minor: reserved.total_minor,
    })?;
    let (status, reason, reference) = match &decision {
        Decision::Approved { reference } => (status::COMPLETED, None, Some(reference.as_str())),
        Decision::Declined { reason } => (status::FAILED, Some(reason.as_str()), None),
    };
    diesel::insert_into(payments::table)
        .values((
            payments::payment_id.eq(payment_id),
            payments::order_id.eq(order_id),
            payments::customer_id.eq(reserved.customer_id),
            payments::currency.eq(&reserved.currency),
            payments::amount_minor.eq(reserved.total_minor),
            payments::status.eq(status),
            payments::reason.eq(reason),
            payments::gateway_reference.eq(reference),
        ))
        .cached()
        .execute(conn)
        .await?;
    match decision {
        Decision::Approved { .. } => {
            orderflow_outbox::append(
                conn,
                EVENT_SOURCE,
                PaymentCompleted {
                    payment_id,
                    order_id,
                    customer_id: reserved.customer_id,
                    customer_email: reserved.customer_email.clone(),
                    currency: reserved.currency.clone(),
                    amount_minor: reserved.total_minor,
                },
            )
            .await?;
            Ok(Outcome::Charged { payment_id })
        }
        Decision::Declined { reason } => {
            orderflow_outbox::append(
                conn,
                EVENT_SOURCE,
                PaymentFailed {
                    payment_id,
                    order_id,
                    customer_id: reserved.customer_id,
                    customer_email: reserved.customer_email.clone(),
                    currency: reserved.currency.clone(),
                    amount_minor: reserved.total_minor,
                    reason: reason.clone(),
                },
            )
            .await?;
            Ok(Outcome::Declined { payment_id, reason })
        }
    }
}

/// order.cancelled: give a completed payment back; remember an order that
/// was not charged yet so that it never will be.
///
/// # Errors
/// Database errors.
pub async fn refund(
    conn: &mut AsyncPgConnection,
    cancelled: &OrderCancelled,
) -> QueryResult<Outcome> {
    let order_id = cancelled.order_id;
    lock_order(conn, order_id).await?;
    let Some(payment) = payment_of(conn, order_id).await? else {
        diesel::insert_into(cancelled_orders::table)
            .values((
                cancelled_orders::order_id.eq(order_id),
                cancelled_orders::reason.eq(&cancelled.reason),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        return Ok(Outcome::Tombstoned);
    };
    if payment.status != status::COMPLETED {
        return Ok(Outcome::Skipped("the payment is not COMPLETED"));
    }
    diesel::update(payments::table.find(payment.payment_id))
        .set((
            payments::status.eq(status::REFUNDED),
            payments::reason.eq(&cancelled.reason),
            payments::updated_at.eq(diesel::dsl::now),
        ))
        .cached()
        .execute(conn)
        .await?;
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        PaymentRefunded {
            payment_id: payment.payment_id,
            order_id,
            customer_id: payment.customer_id,
            currency: payment.currency,
            amount_minor: payment.amount_minor,
            reason: cancelled.reason.clone(),
        },
    )
    .await?;
    Ok(Outcome::Refunded {
        payment_id: payment.payment_id,
    })
}
