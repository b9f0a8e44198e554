#![doc = include_str!("../README.md")]

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orderflow_events::{CloudEvent, Event};
use orderflow_telemetry::TraceHeaders;
use tracing::Instrument as _;
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
            seq -> Int8,
            partition -> Int2,
        }
    }
}

pub mod relay;

use schema::outbox;

/// No `Option` fields, so `treat_none_as_default_value = false` keeps the
/// statement cacheable: diesel does not cache an insert whose columns may
/// vary, and re-parsing this one on every append costs the database.
#[derive(Insertable)]
#[diesel(table_name = outbox, treat_none_as_default_value = false)]
struct NewOutboxRow {
    id: Uuid,
    aggregate_type: &'static str,
    aggregate_id: Uuid,
    event_type: &'static str,
    payload: JsonbBytes,
    headers: JsonbBytes,
}

tokio::task_local! {
    /// Set while [`deferring`] runs: appends are collected here.
    static DEFERRED: std::cell::RefCell<Vec<NewOutboxRow>>;
}

/// Events appended while [`deferring`] ran, not yet inserted.
#[must_use = "the events are lost unless inserted"]
pub struct Deferred(Vec<NewOutboxRow>);

/// Runs `work` with every [`append`] in it collected instead of inserted,
/// and returns them for one multi-row insert ([`Deferred::insert`]) in the
/// same transaction: a consumer applying a batch of messages writes its
/// events with one statement (and one run of the outbox trigger) instead
/// of one per event. The events keep their order, and with it their `seq`.
pub async fn deferring<T>(work: impl Future<Output = T>) -> (T, Deferred) {
    DEFERRED
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let out = work.await;
            (out, Deferred(DEFERRED.with(std::cell::RefCell::take)))
        })
        .await
}

impl Deferred {
    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts the events, in the order they were appended, with one
    /// prepared statement per 64 (so a connection keeps at most 64 shapes
    /// of it prepared).
    ///
    /// # Errors
    /// The database error of the insert.
    pub async fn insert(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        use orderflow_db::CachedExt as _;
        for chunk in self.0.chunks(64) {
            diesel::insert_into(outbox::table)
                .values(chunk)
                .cached()
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// JSON already serialized, sent as `jsonb`: serializing straight to bytes
/// skips building a `serde_json::Value` tree per event.
#[derive(Debug, diesel::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Jsonb)]
struct JsonbBytes(Vec<u8>);

impl JsonbBytes {
    fn of<T: serde::Serialize>(value: &T) -> QueryResult<Self> {
        serde_json::to_vec(value)
            .map(Self)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonbBytes {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write as _;
        // jsonb's binary format: a version byte, then the JSON text.
        out.write_all(&[1])?;
        out.write_all(&self.0)?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// Appends `event` from `source` (CloudEvents `source`, e.g. `orderflow/order`)
/// to the outbox in the caller's transaction and returns the event id.
///
/// Runs in an `outbox.append` span, the child of the transaction's span
/// (`orderflow_db::transaction_span`) when one is traced, else of the
/// current span; that span's trace context is what the row's `headers`
/// carry, so the relay's publish and the consumer continue the trace here.
///
/// # Errors
/// The database error of the insert, or a serialization error (which only a
/// payload type that cannot be JSON would cause).
pub async fn append<E: Event>(
    conn: &mut AsyncPgConnection,
    source: &str,
    event: E,
) -> QueryResult<Uuid> {
    let span = match orderflow_db::transaction_span(conn) {
        Some(tx) => {
            tracing::info_span!(parent: &tx, "outbox.append", event.type = E::TYPE, event.id = tracing::field::Empty)
        }
        None => {
            tracing::info_span!("outbox.append", event.type = E::TYPE, event.id = tracing::field::Empty)
        }
    };
    insert(conn, source, event).instrument(span).await
}

async fn insert<E: Event>(
    conn: &mut AsyncPgConnection,
    source: &str,
    event: E,
) -> QueryResult<Uuid> {
    let aggregate_id = event.aggregate_id();
    let envelope = CloudEvent::new(source, event);
    let id = envelope.id;
    tracing::Span::current().record("event.id", tracing::field::display(id));
    let row = NewOutboxRow {
        id,
        aggregate_type: E::AGGREGATE_TYPE,
        aggregate_id,
        event_type: E::TYPE,
        payload: JsonbBytes::of(&envelope)?,
        headers: JsonbBytes::of(&TraceHeaders::capture())?,
    };
    // Inside `deferring`: collected for one insert later.
    if DEFERRED.try_with(|_| ()).is_ok() {
        DEFERRED.with(|rows| rows.borrow_mut().push(row));
        return Ok(id);
    }
    diesel::insert_into(outbox::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(id)
}
