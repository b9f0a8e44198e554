#![doc = include_str!("../README.md")]

use std::time::Duration;

use anyhow::Context as _;
use diesel::{
    ConnectionError,
    migration::{Migration, MigrationSource},
    pg::Pg,
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod, deadpool},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use diesel_async::AsyncPgConnection as PgConnection;

mod after_commit;
mod cached;
mod pool_metrics;
mod tx_span;

pub use after_commit::{after_commit, with_after_commit};
pub use cached::{Cached, CachedExt};
pub use pool_metrics::PoolMetrics;
pub use tx_span::{replace_transaction_span, transaction_span};

pub type Pool = deadpool::Pool<AsyncPgConnection>;
pub type PooledConnection = deadpool::Object<AsyncPgConnection>;
pub type PoolError = deadpool::PoolError;

/// The outbox and inbox tables and the outbox NOTIFY trigger.
pub static COMMON_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../../migrations/common");

/// How to reach one service database.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub url: String,
    pub max_size: usize,
    pub wait_timeout: Duration,
    pub statement_timeout: Duration,
    pub application_name: String,
    /// More session settings, `(name, value)`, set on every connection.
    pub settings: &'static [(&'static str, &'static str)],
}

/// A lazily connecting pool.
///
/// # Errors
/// When the pool cannot be built (invalid settings); connecting happens later.
pub fn build_pool(config: &PoolConfig) -> anyhow::Result<Pool> {
    let mut settings = format!(
        "SET application_name = '{}'; SET statement_timeout = {}",
        config.application_name.replace('\'', ""),
        config.statement_timeout.as_millis()
    );
    for (name, value) in config.settings {
        settings.push_str(&format!("; SET {name} = '{}'", value.replace('\'', "")));
    }
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // `Fast` skips a `SELECT 1` round trip per checkout; closed connections
    // are still detected (`is_closed`) and replaced.
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(move |url| {
        let settings = settings.clone();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &settings)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            // A `db.transaction` span per transaction (see `tx_span`).
            conn.set_instrumentation(tx_span::TransactionSpans::default());
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        &config.url,
        manager_config,
    );
    deadpool::Pool::builder(manager)
        .max_size(config.max_size)
        .wait_timeout(Some(config.wait_timeout))
        .create_timeout(Some(config.wait_timeout))
        .runtime(::deadpool::Runtime::Tokio1)
        .build()
        .context("failed to build the database pool")
}

/// The common migrations followed by one service's own. Versions in the two
/// folders must never collide: both record into `__diesel_schema_migrations`.
#[derive(Clone, Copy)]
pub struct ServiceMigrations {
    pub service: &'static EmbeddedMigrations,
}

impl MigrationSource<Pg> for ServiceMigrations {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = MigrationSource::<Pg>::migrations(&COMMON_MIGRATIONS)?;
        all.extend(MigrationSource::<Pg>::migrations(self.service)?);
        Ok(all)
    }
}

/// Arbitrary but fixed: the advisory lock that serialises migration runs.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_7266_6c6f; // "orderflo"

/// Applies the pending migrations and returns their names.
///
/// Needs the multi-thread runtime (the harness blocks in place).
///
/// # Errors
/// When the database cannot be reached or a migration fails; a failed
/// migration is rolled back.
pub async fn run_migrations(
    url: &str,
    migrations: ServiceMigrations,
) -> anyhow::Result<Vec<String>> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .with_context(|| format!("failed to connect to {}", redact(url)))?;
    // Session lock: released when the connection closes, even on a crash.
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .execute(&mut conn)
        .await
        .context("failed to take the migration lock")?;
    let applied = tokio::task::spawn_blocking(move || {
        let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(migrations)
            .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
    })
    .await
    .context("migration task panicked")??;
    Ok(applied)
}

/// The names of the migrations not yet applied to the database at `url`.
///
/// # Errors
/// When the database cannot be reached.
pub async fn pending_migrations(
    url: &str,
    migrations: ServiceMigrations,
) -> anyhow::Result<Vec<String>> {
    let conn = AsyncPgConnection::establish(url)
        .await
        .with_context(|| format!("failed to connect to {}", redact(url)))?;
    tokio::task::spawn_blocking(move || {
        let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
        harness
            .pending_migrations(migrations)
            .map(|pending| pending.iter().map(|m| m.name().to_string()).collect())
            .map_err(|e| anyhow::anyhow!("cannot read the applied migrations: {e}"))
    })
    .await
    .context("migration check panicked")?
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Is this error a lost or unreachable database rather than a bad query?
/// Callers answer UNAVAILABLE (retry) for these and INTERNAL otherwise.
/// True when every pooled connection was busy for the whole wait: the
/// database is up but the process has more work than connections. A
/// caller should hear "busy, retry later" (RESOURCE_EXHAUSTED), not
/// "unavailable": the database may be perfectly healthy.
pub fn is_busy(err: &PoolError) -> bool {
    matches!(
        err,
        PoolError::Timeout(::deadpool::managed::TimeoutType::Wait)
    )
}

pub fn is_unavailable(err: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match err {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure,
            _,
        )
        | Error::BrokenTransactionManager => true,
        // diesel exposes no SQLSTATE, so the server's messages for
        // query_canceled (statement_timeout), admin/crash shutdown,
        // cannot_connect_now and too_many_connections are matched here.
        Error::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("statement timeout")
                || m.contains("terminating connection")
                || m.contains("connection closed")
                || m.contains("the database system is")
                || m.contains("too many clients")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn common_migrations_come_first() {
        let m = ServiceMigrations {
            service: &COMMON_MIGRATIONS,
        };
        let names: Vec<_> = m
            .migrations()
            .unwrap()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        assert!(names[0].contains("outbox_inbox"), "{names:?}");
    }
}
