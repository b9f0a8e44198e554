#![doc = include_str!("../README.md")]

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orderflow_events::{CloudEvent, Event};
use orderflow_telemetry::TraceHeaders;
use uuid::Uuid;

pub mod schema {
    diesel::table! {
        outbox (id) {
            id -> Uuid,
            aggregate_type -> Text,
            aggregate_id -> Uuid,
            event_type -> Text,
            payload -> Jsonb,
            headers -> Jsonb,
            created_at -> Timestamptz,
            published_at -> Nullable<Timestamptz>,
            attempts -> Int4,
            last_error -> Nullable<Text>,
            seq -> Int8,
            partition -> Int2,
            next_attempt_at -> Nullable<Timestamptz>,
            parked_at -> Nullable<Timestamptz>,
        }
    }
}

pub mod relay;

use schema::outbox;

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    id: Uuid,
    aggregate_type: &'a str,
    aggregate_id: Uuid,
    event_type: &'a str,
    payload: serde_json::Value,
    headers: serde_json::Value,
}

/// Appends `event` from `source` (CloudEvents `source`, e.g. `orderflow/order`)
/// to the outbox in the caller's transaction and returns the event id.
///
/// # Errors
/// The database error of the insert, or a serialization error (which only a
/// payload type that cannot be JSON would cause).
#[tracing::instrument(name = "outbox.append", skip_all, fields(event.type = E::TYPE, event.id))]
pub async fn append<E: Event>(
    conn: &mut AsyncPgConnection,
    source: &str,
    event: E,
) -> QueryResult<Uuid> {
    let aggregate_id = event.aggregate_id();
    let envelope = CloudEvent::new(source, event);
    let id = envelope.id;
    tracing::Span::current().record("event.id", tracing::field::display(id));
    let payload = serde_json::to_value(&envelope)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let headers = serde_json::to_value(TraceHeaders::capture())
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::insert_into(outbox::table)
        .values(NewOutboxRow {
            id,
            aggregate_type: E::AGGREGATE_TYPE,
            aggregate_id,
            event_type: E::TYPE,
            payload,
            headers,
        })
        .execute(conn)
        .await?;
    Ok(id)
}
