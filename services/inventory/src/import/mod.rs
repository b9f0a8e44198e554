//! ImportStock: a client stream of rows, upserted by SKU chunk by chunk.
//!
//! Two halves run side by side on the call's task: the reader decodes and
//! validates messages into a chunk of at most [`CHUNK_ROWS`] rows, the
//! writer commits chunks two at a time in row order (`write`,
//! `store::write_chunk`). A channel of one chunk joins them, so the reader
//! prepares the next chunk while the writer commits, and at most four
//! chunks are in memory whatever the file's
//! size: when the writer falls behind, the reader stops reading and HTTP/2
//! flow control pushes back on the client.

pub mod rows;
pub mod store;

use std::time::Duration;

use orderflow_db::Pool;
use orderflow_proto::inventory::v1 as pb;
use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::store::InventoryError;
use rows::Chunk;
use store::{ImportRecord, RowErrorRecord};

/// Rows per transaction. Measured on the 2M-row benchmark: fewer means more
/// commits, more means larger events and longer row locks (see README).
pub const CHUNK_ROWS: usize = 5_000;
/// Chunks whose transactions overlap (see [`write`]).
pub const IN_FLIGHT: usize = 2;
/// A chunk that started filling this long ago is committed even if not
/// full, so a slow client loses little when its stream drops.
pub const MAX_CHUNK_AGE: Duration = Duration::from_secs(1);
/// How many rejected rows the response lists; ListStockImportErrors has all.
pub const RESPONSE_ERRORS: i64 = 100;

/// Runs one ImportStock stream to its end; returns the import's totals and
/// its first rejected rows.
///
/// # Errors
/// INVALID_ARGUMENT for a malformed stream, FAILED_PRECONDITION for rows
/// sent to a finished import, the stream's own error when the client goes
/// away, UNAVAILABLE when the database does. Chunks committed before stay.
#[tracing::instrument(name = "inventory.import_stock", skip_all, fields(import.id))]
pub async fn import_stock<S>(
    pool: &Pool,
    mut stream: S,
) -> Result<(ImportRecord, Vec<RowErrorRecord>), Status>
where
    S: Stream<Item = Result<pb::ImportStockRequest, Status>> + Unpin,
{
    let first = match stream.next().await {
        Some(first) => first?,
        None => {
            return Err(
                rows::check_message(&pb::ImportStockRequest::default(), None, 0)
                    .err()
                    .unwrap_or_else(|| Status::invalid_argument("import_id: is required")),
            );
        }
    };
    let import_id = rows::check_message(&first, None, 0)?;
    tracing::Span::current().record("import.id", tracing::field::display(import_id));
    let source = (!first.source.is_empty()).then(|| rows::source_id(&first.source));
    store::begin(pool, import_id, source).await?;

    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let (read, written) = tokio::join!(
        read(stream, first, import_id, tx),
        write(pool, import_id, rx)
    );
    // The writer's error first: when it fails, the reader just stops.
    written?;
    read?;

    let record = store::finish(pool, import_id).await?;
    let errors = store::errors(pool, import_id, 0, RESPONSE_ERRORS).await?;
    tracing::info!(
        import.id = %import_id,
        rows = record.rows,
        inserted = record.inserted,
        updated = record.updated,
        unchanged = record.unchanged,
        rejected = record.rejected,
        "stock import finished"
    );
    Ok((record, errors))
}

/// Messages in, chunks out. Returns `Ok` early when the writer has stopped
/// (its error is the one to report).
async fn read<S>(
    mut stream: S,
    first: pb::ImportStockRequest,
    import_id: Uuid,
    tx: mpsc::Sender<Chunk>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<pb::ImportStockRequest, Status>> + Unpin,
{
    let mut chunk = Chunk::default();
    let mut deadline = Instant::now() + MAX_CHUNK_AGE;
    let mut previous_row = 0;
    let mut next = Some(first);
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => {
                tokio::select! {
                    biased;
                    () = tx.closed() => return Ok(()),
                    () = tokio::time::sleep_until(deadline), if !chunk.is_empty() => {
                        if !send(&tx, &mut chunk).await {
                            return Ok(());
                        }
                        continue;
                    }
                    msg = stream.next() => match msg {
                        None => break,
                        Some(msg) => {
                            let msg = msg?;
                            rows::check_message(&msg, Some(import_id), previous_row)?;
                            msg
                        }
                    },
                }
            }
        };
        if let Some(last) = msg.rows.last() {
            previous_row = last.row_number;
        }
        for row in msg.rows {
            if chunk.is_empty() {
                deadline = Instant::now() + MAX_CHUNK_AGE;
            }
            chunk.push(row);
            if chunk.len() >= CHUNK_ROWS && !send(&tx, &mut chunk).await {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        send(&tx, &mut chunk).await;
    }
    Ok(())
}

/// Hands the chunk to the writer; false when the writer has stopped.
async fn send(tx: &mpsc::Sender<Chunk>, chunk: &mut Chunk) -> bool {
    let mut full = std::mem::take(chunk);
    full.seal();
    tx.send(full).await.is_ok()
}

/// Commits the chunks in order, [`IN_FLIGHT`] at a time, each in its own
/// task on its own connection: while one chunk's transaction waits for its
/// turn to commit, the next one's upsert runs, so the database works on
/// two cores instead of one. [`store::Order`] keeps the commits in row
/// order. Returns the first chunk's error (later chunks then fail too,
/// without committing).
async fn write(
    pool: &Pool,
    import_id: Uuid,
    mut rx: mpsc::Receiver<Chunk>,
) -> Result<(), InventoryError> {
    // Random and non-zero: the stream's advisory lock keys.
    let stream = match Uuid::new_v4().as_u128() as i32 {
        0 => 1,
        n => n,
    };
    let mut seq = 0i32;
    let mut after_row = 0i64;
    let mut previous: Option<watch::Receiver<Option<bool>>> = None;
    let mut previous_skus: Option<Arc<HashSet<String>>> = None;
    let mut in_flight: VecDeque<JoinHandle<Result<(), InventoryError>>> = VecDeque::new();
    let mut first_error = None;
    while let Some(chunk) = rx.recv().await {
        if in_flight.len() >= IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
            && let Err(e) = joined(oldest.await)
        {
            first_error = Some(e);
            break;
        }
        let skus = Arc::new(chunk.good.sku.iter().cloned().collect::<HashSet<_>>());
        let (token_tx, token_rx) = oneshot::channel();
        let (done_tx, done_rx) = watch::channel(None);
        let order = store::Order {
            stream,
            seq,
            after_row,
            token: Some(token_tx),
            previous: previous.replace(done_rx),
            previous_skus: previous_skus.replace(skus),
        };
        after_row = chunk.last_row;
        seq = seq.wrapping_add(1);
        let pool = pool.clone();
        in_flight.push_back(tokio::spawn(
            async move {
                let result = store::write_chunk(&pool, import_id, chunk, order).await;
                let _ = done_tx.send(Some(result.is_ok()));
                result
            }
            .in_current_span(),
        ));
        // The next chunk starts once this one holds its token (or is done),
        // so that it waits for this one before committing.
        let _ = token_rx.await;
    }
    // Stop reading on the first error; the chunks in flight end on their
    // own (after a failed one, none commits).
    drop(rx);
    for task in in_flight {
        if let Err(e) = joined(task.await)
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn joined(
    result: Result<Result<(), InventoryError>, tokio::task::JoinError>,
) -> Result<(), InventoryError> {
    result.unwrap_or_else(|e| {
        Err(InventoryError::Unavailable(format!(
            "an import chunk's task failed: {e}"
        )))
    })
}

const TOKEN_PREFIX: &str = "e1:";

/// The opaque token of the errors page after `row` of `import_id`.
pub fn encode_errors_token(import_id: Uuid, row: i64) -> String {
    format!("{TOKEN_PREFIX}{}:{row}", import_id.simple())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The row after which the page starts, if `token` was issued for `import_id`.
pub fn decode_errors_token(token: &str, import_id: Uuid) -> Option<i64> {
    if token.len() > 128 || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).ok()?;
    let (id, row) = plain.strip_prefix(TOKEN_PREFIX)?.split_once(':')?;
    (Uuid::try_parse(id).ok()? == import_id)
        .then(|| row.parse().ok())
        .flatten()
        .filter(|row: &i64| *row >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_tokens_are_bound_to_their_import() {
        let id = Uuid::new_v4();
        let token = encode_errors_token(id, 42);
        assert_eq!(decode_errors_token(&token, id), Some(42));
        assert_eq!(decode_errors_token(&token, Uuid::new_v4()), None);
        for junk in ["", "zz", "abc", &"00".repeat(100)] {
            assert_eq!(decode_errors_token(junk, id), None, "{junk}");
        }
    }
}
