//! The notification tables: the API's reads, and "sending" (storing) one
//! notification per event on the consumer's connection, inside the
//! transaction that also holds the event's inbox row.

use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orderflow_db::{Pool, PoolError};
use orderflow_grpc::page_token::Keyset;
use uuid::Uuid;

use crate::{message::Message, request::ListQuery};

pub mod schema {
    diesel::table! {
        notifications (notification_id) {
            notification_id -> Uuid,
            event_id -> Uuid,
            customer_id -> Uuid,
            order_id -> Uuid,
            channel -> Text,
            recipient -> Text,
            event_type -> Text,
            subject -> Text,
            body -> Text,
            sent_at -> Timestamptz,
        }
    }

    diesel::table! {
        contacts (customer_id) {
            customer_id -> Uuid,
            phone -> Text,
            updated_at -> Timestamptz,
        }
    }
}

use schema::{contacts, notifications};

pub mod channel {
    pub const EMAIL: &str = "EMAIL";
    pub const SMS: &str = "SMS";
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct Notification {
    pub notification_id: Uuid,
    pub event_id: Uuid,
    pub customer_id: Uuid,
    pub order_id: Uuid,
    pub channel: String,
    pub recipient: String,
    pub event_type: String,
    pub subject: String,
    pub body: String,
    pub sent_at: DateTime<Utc>,
}

/// Why a read did not succeed. Mapped to a gRPC status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for NotificationError {
    fn from(err: diesel::result::Error) -> Self {
        if orderflow_db::is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Database(err)
        }
    }
}

impl From<PoolError> for NotificationError {
    fn from(err: PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// A page of notifications, newest first, and where the next page starts.
///
/// # Errors
/// Database errors.
#[tracing::instrument(name = "notification.list", skip(pool))]
pub async fn list_notifications(
    pool: &Pool,
    query: &ListQuery,
) -> Result<(Vec<Notification>, Option<Keyset>), NotificationError> {
    let mut conn = pool.get().await?;
    let mut select = notifications::table
        .select(Notification::as_select())
        .into_boxed();
    if let Some(customer) = query.customer_id {
        select = select.filter(notifications::customer_id.eq(customer));
    }
    if let Some(order) = query.order_id {
        select = select.filter(notifications::order_id.eq(order));
    }
    if let Some(after) = query.after {
        let at = DateTime::<Utc>::from_timestamp_micros(after.at_micros).unwrap_or_default();
        select = select.filter(
            notifications::sent_at.lt(at).or(notifications::sent_at
                .eq(at)
                .and(notifications::notification_id.lt(after.id))),
        );
    }
    let mut rows: Vec<Notification> = select
        .order((
            notifications::sent_at.desc(),
            notifications::notification_id.desc(),
        ))
        .limit(query.page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > query.page_size {
        rows.truncate(query.page_size as usize);
        rows.last().map(|n| Keyset {
            at_micros: n.sent_at.timestamp_micros(),
            id: n.notification_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// Is `phone` an E.164 number ('+' and 8 to 15 digits), as CreateOrder
/// accepts and the `contacts` table requires?
pub fn is_phone(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Remembers the customer's phone for the events that do not carry it.
///
/// # Errors
/// Database errors.
pub async fn upsert_phone(
    conn: &mut AsyncPgConnection,
    customer_id: Uuid,
    phone: &str,
) -> QueryResult<()> {
    diesel::insert_into(contacts::table)
        .values((
            contacts::customer_id.eq(customer_id),
            contacts::phone.eq(phone),
        ))
        .on_conflict(contacts::customer_id)
        .do_update()
        .set((
            contacts::phone.eq(phone),
            contacts::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// One customer-facing event, ready to be sent.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub customer_id: Uuid,
    pub order_id: Uuid,
    /// May be empty (events written before e-mails were carried).
    pub customer_email: &'a str,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent(Box<Notification>),
    /// This event was notified already.
    Duplicate,
    /// No phone in `contacts` and no e-mail in the event.
    NoRecipient,
}

/// [`send`] for a batch of drafts (distinct events), with two statements
/// for all of them: the customers' phones, then one multi-row insert. Each
/// draft's log line is written in its span. `Err(customer)` (and nothing
/// stored) when some draft has no recipient, so the caller can apply the
/// drafts one at a time and park that one alone.
///
/// # Errors
/// Database errors.
pub async fn send_all(
    conn: &mut AsyncPgConnection,
    drafts: Vec<(Draft<'_>, tracing::Span)>,
) -> QueryResult<Result<(), Uuid>> {
    use orderflow_db::CachedExt as _;
    let mut customers: Vec<Uuid> = drafts.iter().map(|(d, _)| d.customer_id).collect();
    customers.sort_unstable();
    customers.dedup();
    let phones: std::collections::HashMap<Uuid, String> = contacts::table
        .filter(contacts::customer_id.eq_any(&customers))
        .select((contacts::customer_id, contacts::phone))
        .load::<(Uuid, String)>(conn)
        .await?
        .into_iter()
        .collect();
    let mut rows = Vec::with_capacity(drafts.len());
    for (draft, _) in &drafts {
        let (channel, recipient) = match phones.get(&draft.customer_id) {
            Some(phone) => (channel::SMS, phone.clone()),
            None if !draft.customer_email.is_empty() => {
                (channel::EMAIL, draft.customer_email.to_owned())
            }
            None => return Ok(Err(draft.customer_id)),
        };
        rows.push((
            notifications::notification_id.eq(Uuid::now_v7()),
            notifications::event_id.eq(draft.event_id),
            notifications::customer_id.eq(draft.customer_id),
            notifications::order_id.eq(draft.order_id),
            notifications::channel.eq(channel),
            notifications::recipient.eq(recipient),
            notifications::event_type.eq(draft.event_type),
            notifications::subject.eq(draft.message.subject.clone()),
            notifications::body.eq(draft.message.body.clone()),
        ));
    }
    let sent: Vec<Notification> = diesel::insert_into(notifications::table)
        .values(rows)
        .on_conflict(notifications::event_id)
        .do_nothing()
        .returning(Notification::as_returning())
        .cached()
        .get_results(conn)
        .await?;
    for row in &sent {
        if let Some((_, span)) = drafts.iter().find(|(d, _)| d.event_id == row.event_id) {
            span.in_scope(|| log_sent(row));
        }
    }
    Ok(Ok(()))
}

/// The simulated delivery. The recipient is personal data: not logged.
fn log_sent(row: &Notification) {
    tracing::info!(
        notification.id = %row.notification_id,
        notification.channel = %row.channel,
        event.type = %row.event_type,
        order.id = %row.order_id,
        subject = %row.subject,
        "notification sent"
    );
}

/// "Sends" the notification: SMS when a phone is known for the customer,
/// else e-mail; stored once per event id; a log line stands for delivery.
///
/// # Errors
/// Database errors.
pub async fn send(conn: &mut AsyncPgConnection, draft: Draft<'_>) -> QueryResult<Outcome> {
    let phone: Option<String> = contacts::table
        .find(draft.customer_id)
        .select(contacts::phone)
        .first(conn)
        .await
        .optional()?;
    let (channel, recipient) = match phone {
        Some(phone) => (channel::SMS, phone),
        None if !draft.customer_email.is_empty() => {
            (channel::EMAIL, draft.customer_email.to_owned())
        }
        None => return Ok(Outcome::NoRecipient),
    };
    let row: Option<Notification> = diesel::insert_into(notifications::table)
        .values((
            notifications::notification_id.eq(Uuid::now_v7()),
            notifications::event_id.eq(draft.event_id),
            notifications::customer_id.eq(draft.customer_id),
            notifications::order_id.eq(draft.order_id),
            notifications::channel.eq(channel),
            notifications::recipient.eq(&recipient),
            notifications::event_type.eq(draft.event_type),
            notifications::subject.eq(&draft.message.subject),
            notifications::body.eq(&draft.message.body),
        ))
        .on_conflict(notifications::event_id)
        .do_nothing()
        .returning(Notification::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    let Some(row) = row else {
        return Ok(Outcome::Duplicate);
    };
    log_sent(&row);
    Ok(Outcome::Sent(Box::new(row)))
}
