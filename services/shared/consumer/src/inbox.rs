//! The one transaction per delivery: inbox row, handler, commit.

use diesel::ExpressionMethods as _;
use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use orderflow_events::CloudEvent;
use uuid::Uuid;

use crate::{Handler, HandlerError};

diesel::table! {
    inbox (message_id, handler) {
        message_id -> Uuid,
        handler -> Text,
        processed_at -> Timestamptz,
    }
}

/// What the transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The handler ran and its effect is committed.
    Effect,
    /// The inbox already had this message for this handler: nothing changed.
    Duplicate,
}

/// Inserts the inbox row and runs `handler` in one transaction, committed
/// when this returns `Ok`; then what the handler registered with
/// `orderflow_db::after_commit` runs. A concurrent copy of the same message waits on
/// the inbox row's key and then finds it: exactly one of them applies.
///
/// # Errors
/// The handler's error, or [`HandlerError::Transient`] for the pool and
/// every database error (the transaction is rolled back).
pub(crate) async fn apply<H: Handler>(
    handler: &H,
    pool: &orderflow_db::Pool,
    message_id: Uuid,
    event: CloudEvent<H::Event>,
) -> Result<Applied, HandlerError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| HandlerError::Transient(format!("no database connection: {e}")))?;
    orderflow_db::with_after_commit(conn.transaction(async |conn| {
        let inserted = diesel::insert_into(inbox::table)
            .values((inbox::message_id.eq(message_id), inbox::handler.eq(H::NAME)))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Ok(Applied::Duplicate);
        }
        handler.handle(conn, event).await?;
        Ok(Applied::Effect)
    }))
    .await
}
