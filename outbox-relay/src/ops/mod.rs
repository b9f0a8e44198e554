//! What an operator can see and do, shared by the dashboard's JSON API and
//! the command line: find events, pause and resume a source, unpark and
//! replay events, and inspect, retry or discard dead letters. Every action
//! is recorded in the source database's `outbox_audit`.

pub mod dlq;
pub mod events;

use std::sync::Arc;

use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use orderflow_db::Pool;
use serde_json::Value;

use crate::config::RelayConfig;

/// Why an operation did not happen. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// 400: the message names the field.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// 409: valid, but nothing to act on.
    #[error("{0}")]
    Conflict(String),
    /// 502: a database or RabbitMQ could not be reached or failed.
    #[error("{0}")]
    Upstream(String),
}

impl From<diesel::result::Error> for OpsError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Upstream(format!("database: {e}"))
    }
}

impl From<orderflow_db::PoolError> for OpsError {
    fn from(e: orderflow_db::PoolError) -> Self {
        Self::Upstream(format!("database: {e}"))
    }
}

pub type OpsResult<T> = Result<T, OpsError>;

/// One source database as operators see it.
pub struct OpsSource {
    pub name: String,
    pub pool: Pool,
    /// The URL without its password.
    pub database: String,
}

/// The sources and the broker, for operator actions.
#[derive(Clone)]
pub struct Ops {
    pub sources: Arc<Vec<OpsSource>>,
    pub dlq: dlq::DeadLetters,
}

impl Ops {
    /// Pools for every source; nothing connects until first used.
    ///
    /// # Errors
    /// When a pool cannot be built (a malformed URL).
    pub fn new(config: &RelayConfig) -> anyhow::Result<Self> {
        let sources = config
            .sources
            .iter()
            .map(|s| {
                Ok(OpsSource {
                    name: s.name.clone(),
                    pool: orderflow_db::build_pool(&orderflow_db::PoolConfig {
                        url: s.database_url.clone(),
                        max_size: 2,
                        wait_timeout: std::time::Duration::from_secs(5),
                        statement_timeout: std::time::Duration::from_secs(30),
                        application_name: format!("outbox-relay/ops/{}", s.name),
                        settings: &[],
                    })?,
                    database: orderflow_db::redact(&s.database_url),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            sources: Arc::new(sources),
            dlq: dlq::DeadLetters::new(config)?,
        })
    }

    /// # Errors
    /// [`OpsError::NotFound`] for a name that is not in `RELAY_SOURCES`.
    pub fn source(&self, name: &str) -> OpsResult<&OpsSource> {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| OpsError::NotFound(format!("no source named {name:?}")))
    }

    /// Where actions on `queue` (`<service>.<handler>[.dlq]`) are recorded:
    /// the source of that service, else the first source (a relay that
    /// publishes only some services still lets operators fix every DLQ).
    ///
    /// # Errors
    /// [`OpsError::NotFound`] only without any source.
    pub fn source_of_queue(&self, queue: &str) -> OpsResult<&OpsSource> {
        let service = queue.split('.').next().unwrap_or_default();
        self.sources
            .iter()
            .find(|s| s.name == service)
            .or_else(|| self.sources.iter().next())
            .ok_or_else(|| OpsError::NotFound("no source in RELAY_SOURCES".to_owned()))
    }
}

#[derive(QueryableByName)]
struct JsonText {
    #[diesel(sql_type = Text)]
    json: String,
}

/// Runs a query whose only column `json` is JSON text, and parses it.
async fn json_value<'q, Q>(conn: &mut AsyncPgConnection, query: Q) -> OpsResult<Value>
where
    Q: diesel_async::methods::LoadQuery<'q, AsyncPgConnection, JsonText> + 'q,
{
    let row: JsonText = query.get_result(conn).await?;
    serde_json::from_str(&row.json)
        .map_err(|e| OpsError::Upstream(format!("database returned malformed JSON: {e}")))
}

/// Who acts and why: every action is recorded with both.
#[derive(Debug, Clone)]
pub struct Actor {
    pub operator: String,
}

/// Checks an operator name or reason: trimmed, non-empty, bounded.
///
/// # Errors
/// [`OpsError::BadRequest`] naming `field`.
pub fn required_text(field: &str, value: Option<&str>, max: usize) -> OpsResult<String> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(OpsError::BadRequest(format!("{field} is required")));
    }
    if value.chars().count() > max {
        return Err(OpsError::BadRequest(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(OpsError::BadRequest(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value.to_owned())
}
