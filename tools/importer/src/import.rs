//! Streaming a stock file to ImportStock, resuming after failures.
//!
//! A blocking thread reads the file into messages of `rows_per_message`
//! rows and hands them to the gRPC request stream through a channel of
//! `channel_messages`: when the server reads slower than the file is read,
//! the channel fills, the thread blocks, and memory stays bounded whatever
//! the file's size.
//!
//! When the call fails in a way a retry can cure (the connection dropped,
//! the server restarted or is unavailable), the importer waits, asks the
//! server how far the import got (GetStockImport: the last committed row),
//! seeks back to a message boundary at or before it and streams the rest on
//! a new connection under the same import id. The server skips rows it has
//! committed already, so an overlap is harmless and the counts stay exact.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use orderflow_proto::inventory::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

use crate::file::{Position, RowReader};

/// Message boundaries remembered for seeking back on resume.
const BOUNDARIES: usize = 4096;

#[derive(Debug, Clone)]
pub struct Options {
    /// e.g. `http://127.0.0.1:50052`.
    pub addr: String,
    /// The service's `GRPC_ADMIN_TOKEN` (ImportStock is an admin RPC).
    pub token: Option<String>,
    pub path: PathBuf,
    /// A new one, or the id of an import to resume.
    pub import_id: Uuid,
    /// What identifies the file's content (`source`); `None`: its SHA-256,
    /// worked out before the first call.
    pub source: Option<String>,
    pub rows_per_message: usize,
    /// Messages buffered between the file reader and the network.
    pub channel_messages: usize,
    /// Calls made at most, the first one included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles up to 10 s.
    pub backoff: Duration,
}

impl Options {
    pub fn new(addr: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            path: path.into(),
            import_id: Uuid::new_v4(),
            source: None,
            rows_per_message: 1000,
            channel_messages: 8,
            max_attempts: 10,
            backoff: Duration::from_millis(500),
        }
    }
}

/// How an import ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// The server's totals for the whole import.
    pub import: pb::StockImport,
    /// Its first rejected rows (all of them: [`all_errors`]).
    pub first_errors: Vec<pb::RowError>,
    /// Calls made (1 when nothing failed).
    pub attempts: u32,
}

/// Streams the file, retrying and resuming as needed.
///
/// # Errors
/// When the server refuses the stream (INVALID_ARGUMENT, FAILED_PRECONDITION),
/// when the file cannot be read, or after `max_attempts` failed calls.
pub async fn run(opts: &Options, progress: &ProgressBar) -> anyhow::Result<Report> {
    let mut opts = opts.clone();
    if opts.source.is_none() {
        let path = opts.path.clone();
        opts.source = Some(
            tokio::task::spawn_blocking(move || crate::file::fingerprint(&path))
                .await
                .context("fingerprinting the file")??,
        );
    }
    let opts = &opts;
    let boundaries = Arc::new(Mutex::new(VecDeque::new()));
    let mut resume_after = 0i64;
    let mut backoff = opts.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match stream_once(opts, resume_after, &boundaries, progress).await {
            Ok(response) => {
                let import = response
                    .import
                    .context("the server's response has no import")?;
                return Ok(Report {
                    import,
                    first_errors: response.errors,
                    attempts: attempt,
                });
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(status)) if attempt < opts.max_attempts => {
                say(
                    progress,
                    format!(
                        "import {}: call {attempt} failed ({}: {}); resuming in {backoff:?}",
                        opts.import_id,
                        status.code(),
                        status.message()
                    ),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match committed(opts).await {
                    Ok(Some(last)) => {
                        resume_after = last;
                        say(
                            progress,
                            format!(
                                "import {}: the server has committed through line {last}",
                                opts.import_id
                            ),
                        );
                    }
                    // The first message never arrived: start over.
                    Ok(None) => resume_after = 0,
                    // Still unreachable: the next call fails fast, or
                    // resumes from the last known point (the server skips
                    // what it already has).
                    Err(_) => {}
                }
            }
            Err(Failure::Retry(status)) => {
                bail!(
                    "import {}: giving up after {attempt} calls; last error {}: {} (rerun with --import-id {} to resume)",
                    opts.import_id,
                    status.code(),
                    status.message(),
                    opts.import_id
                )
            }
        }
    }
}

/// A line for the person running the import, above the bar if one shows.
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
}

enum Failure {
    Retry(Status),
    Fatal(anyhow::Error),
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::ResourceExhausted
    )
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = InventoryServiceClient<InterceptedService<Channel, BearerToken>>;

async fn connect(addr: &str, token: Option<&str>) -> Result<Client, Status> {
    let token = token
        .map(|t| {
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    Status::invalid_argument("the admin token is not a valid header value")
                })
        })
        .transpose()?;
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
    Ok(InventoryServiceClient::with_interceptor(
        channel,
        BearerToken(token),
    ))
}

/// The last committed row, or `None` when the server does not know the import.
async fn committed(opts: &Options) -> Result<Option<i64>, Status> {
    let mut client = connect(&opts.addr, opts.token.as_deref()).await?;
    match client
        .get_stock_import(pb::GetStockImportRequest {
            import_id: opts.import_id.to_string(),
        })
        .await
    {
        Ok(res) => Ok(res.into_inner().import.map(|i| i.last_row_number)),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

/// (first row of a message, where its first record starts), oldest first.
type Boundaries = Arc<Mutex<VecDeque<(i64, Position)>>>;

async fn stream_once(
    opts: &Options,
    resume_after: i64,
    boundaries: &Boundaries,
    progress: &ProgressBar,
) -> Result<pb::ImportStockResponse, Failure> {
    let mut client = connect(&opts.addr, opts.token.as_deref())
        .await
        .map_err(classify)?;
    let (tx, rx) = mpsc::channel(opts.channel_messages.max(1));
    let reader = {
        let (path, per_message) = (opts.path.clone(), opts.rows_per_message.clamp(1, 1000));
        let first = pb::ImportStockRequest {
            import_id: opts.import_id.to_string(),
            source: opts.source.clone().unwrap_or_default(),
            rows: Vec::new(),
        };
        let boundaries = Arc::clone(boundaries);
        tokio::task::spawn_blocking(move || {
            read_file(&path, first, per_message, resume_after, &boundaries, &tx)
        })
    };
    let shown = progress.clone();
    let requests = ReceiverStream::new(rx).map(move |msg: pb::ImportStockRequest| {
        if let Some(last) = msg.rows.last() {
            // Lines after the header, so a resume moves the bar back.
            shown.set_position(u64::try_from(last.row_number - 1).unwrap_or(0));
        }
        msg
    });
    let call = client.import_stock(requests);
    tokio::pin!(call, reader);
    let mut reading = true;
    loop {
        tokio::select! {
            read = &mut reader, if reading => {
                reading = false;
                match read {
                    Ok(Ok(())) => {}
                    // Dropping the call resets the stream: the server
                    // commits nothing of the chunk in progress.
                    Ok(Err(e)) => return Err(Failure::Fatal(e)),
                    Err(e) => return Err(Failure::Fatal(anyhow::anyhow!("file reader failed: {e}"))),
                }
            }
            result = &mut call => {
                return match result {
                    Ok(res) => Ok(res.into_inner()),
                    Err(status) => Err(classify(status)),
                };
            }
        }
    }
}

fn classify(status: Status) -> Failure {
    if retryable(&status) {
        Failure::Retry(status)
    } else {
        Failure::Fatal(anyhow::anyhow!(
            "the server refused the import: {}: {}",
            status.code(),
            status.message()
        ))
    }
}

/// Reads rows after `resume_after` into messages until the file ends or
/// the call is gone (the channel closed).
fn read_file(
    path: &std::path::Path,
    first: pb::ImportStockRequest,
    per_message: usize,
    resume_after: i64,
    boundaries: &Boundaries,
    tx: &mpsc::Sender<pb::ImportStockRequest>,
) -> anyhow::Result<()> {
    let mut reader = RowReader::open(path)?;
    if resume_after > 0 {
        let start = lock(boundaries)
            .iter()
            .rev()
            .find(|(first, _)| *first <= resume_after + 1)
            .map(|(_, position)| position.clone());
        if let Some(position) = start {
            reader.seek(position)?;
        }
    }
    // The first message names the import and its source; the others only
    // carry rows.
    let mut header = Some(first);
    let mut rows = Vec::with_capacity(per_message);
    let mut start = reader.position();
    let mut sent_any = false;
    loop {
        let row = reader
            .next_row()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let done = row.is_none();
        if let Some(row) = row {
            if row.row_number <= resume_after {
                start = reader.position();
                continue;
            }
            rows.push(row);
        }
        if rows.len() == per_message || (done && (!rows.is_empty() || !sent_any)) {
            if let Some(first) = rows.first() {
                let mut b = lock(boundaries);
                if b.back().is_none_or(|(last, _)| *last < first.row_number) {
                    b.push_back((first.row_number, start.clone()));
                    if b.len() > BOUNDARIES {
                        b.pop_front();
                    }
                }
            }
            let mut msg = header.take().unwrap_or_default();
            msg.rows = std::mem::replace(&mut rows, Vec::with_capacity(per_message));
            if tx.blocking_send(msg).is_err() {
                return Ok(());
            }
            sent_any = true;
            start = reader.position();
        }
        if done {
            return Ok(());
        }
    }
}

fn lock(b: &Boundaries) -> std::sync::MutexGuard<'_, VecDeque<(i64, Position)>> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every rejected row of the import, page by page, to `each`.
///
/// # Errors
/// The first failed call.
pub async fn all_errors(
    addr: &str,
    admin_token: Option<&str>,
    import_id: Uuid,
    mut each: impl FnMut(pb::RowError) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut client = connect(addr, admin_token).await?;
    let mut token = String::new();
    let mut n = 0;
    loop {
        let page = client
            .list_stock_import_errors(pb::ListStockImportErrorsRequest {
                import_id: import_id.to_string(),
                page_size: 10_000,
                page_token: token,
            })
            .await?
            .into_inner();
        for e in page.errors {
            n += 1;
            each(e)?;
        }
        if page.next_page_token.is_empty() {
            return Ok(n);
        }
        token = page.next_page_token;
    }
}
