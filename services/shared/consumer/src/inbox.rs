//! The one transaction per delivery: inbox row, handler, commit.

use diesel::ExpressionMethods as _;
use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use orderflow_db::CachedExt as _;
use orderflow_events::CloudEvent;
use uuid::Uuid;

use crate::{Handler, HandlerError, Traced};

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

/// One message of a batch: its inbox key and its event, with the span its
/// handling runs in (the message's own trace).
pub(crate) type Item<E> = (Uuid, Traced<E>);

/// Applies a batch in one transaction: one multi-row inbox insert (the
/// rows it did not insert are duplicates), the handler's
/// [`Handler::before_batch`] for the new events, then each new event
/// through the handler in order, each under its own span; one commit.
/// Returns what happened to each item, in order. All or nothing: on any
/// error nothing of the batch is committed, and the caller applies the
/// messages one at a time instead, so that a failing message is retried or
/// parked alone.
///
/// # Errors
/// The first handler error, or [`HandlerError::Transient`] for the pool
/// and every database error.
pub(crate) async fn apply_batch<H: Handler>(
    handler: &H,
    pool: &orderflow_db::Pool,
    items: Vec<Item<H::Event>>,
) -> Result<Vec<Applied>, HandlerError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| HandlerError::Transient(format!("no database connection: {e}")))?;
    orderflow_db::with_after_commit(conn.transaction(async |conn| {
        let rows: Vec<_> = items
            .iter()
            .map(|(message_id, _)| {
                (
                    inbox::message_id.eq(*message_id),
                    inbox::handler.eq(H::NAME),
                )
            })
            .collect();
        let mut new: std::collections::HashSet<Uuid> = diesel::insert_into(inbox::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .returning(inbox::message_id)
            .cached()
            .get_results(conn)
            .await?
            .into_iter()
            .collect();
        // A message twice in one batch (a redelivered copy) is new once.
        let mut seen = std::collections::HashSet::new();
        let outcomes: Vec<Applied> = items
            .iter()
            .map(|(message_id, _)| {
                if new.contains(message_id) && seen.insert(*message_id) {
                    Applied::Effect
                } else {
                    Applied::Duplicate
                }
            })
            .collect();
        let mut fresh = Vec::with_capacity(items.len());
        for ((message_id, traced), outcome) in items.into_iter().zip(&outcomes) {
            if *outcome == Applied::Effect && new.remove(&message_id) {
                fresh.push(traced);
            }
        }
        let events: Vec<&CloudEvent<H::Event>> = fresh.iter().map(|t| &t.event).collect();
        handler.before_batch(conn, &events).await?;
        drop(events);
        // The batch's events go to the outbox in one statement at the end.
        let (handled, events) =
            orderflow_outbox::deferring(handler.handle_batch(conn, fresh)).await;
        handled?;
        events.insert(conn).await?;
        Ok(outcomes)
    }))
    .await
}
