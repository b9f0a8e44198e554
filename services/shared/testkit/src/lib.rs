#![doc = include_str!("../README.md")]

mod broker;
pub mod grpcurl;
pub mod hostile;
mod process;
mod server;

pub use broker::TestBroker;
pub use process::{ServedBinary, ServiceBinary, spawn_until_logged};
pub use server::{
    ADMIN_TOKEN, AdminChannel, Shutdown, TestServer, admin_channel, admin_header, as_admin,
    service_env,
};

use std::{
    future::Future,
    hash::{Hash as _, Hasher as _},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use diesel::migration::MigrationSource as _;
use orderflow_db::ServiceMigrations;
use rand::Rng as _;
use tokio_postgres::NoTls;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Serialises template creation across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x6f66_5f74_706c; // "of_tpl"
const STALE_AFTER: Duration = Duration::from_secs(3600);

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `admin_url` with its database replaced by `database`.
fn url_for(database: &str) -> String {
    let admin = admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let without_db = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base.as_str(),
    };
    format!("{without_db}/{database}{query}")
}

async fn admin() -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// One test's own database. Keep it the last field of any struct that also
/// holds pools on it, so the pools close first.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh database with the common migrations and `service`'s.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable: the test cannot run.
    pub async fn new(service: &str, migrations: ServiceMigrations) -> Self {
        Self::try_new(service, migrations)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database (is PostgreSQL up?): {e:#}"))
    }

    /// A fresh database with no tables, for tests of the migrations themselves.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable: the test cannot run.
    pub async fn empty(service: &str) -> Self {
        Self::try_create(service, None)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database (is PostgreSQL up?): {e:#}"))
    }

    async fn try_new(service: &str, migrations: ServiceMigrations) -> anyhow::Result<Self> {
        Self::try_create(service, Some(migrations)).await
    }

    async fn try_create(
        service: &str,
        migrations: Option<ServiceMigrations>,
    ) -> anyhow::Result<Self> {
        let admin = admin().await?;
        let template = match migrations {
            Some(migrations) => {
                let template = template_name(service, migrations)?;
                ensure_template(&admin, &template, migrations).await?;
                template
            }
            None => "template0".to_owned(),
        };
        sweep_stale(&admin).await;

        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(10)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let name = format!("of_t_{service}_{now}_{suffix}");
        admin
            .batch_execute(&format!(
                r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#
            ))
            .await?;
        let url = url_for(&name);
        Ok(Self { name, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be single-threaded or
        // already shutting down: use a runtime of our own on a plain thread.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                admin()
                    .await?
                    .batch_execute(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| anyhow::anyhow!("panicked")) {
            eprintln!("warning: could not drop test database {}: {e:#}", self.name);
        }
    }
}

fn template_name(service: &str, migrations: ServiceMigrations) -> anyhow::Result<String> {
    // The hash covers every migration's name and SQL, so an edited migration
    // never reuses a template migrated with the old text.
    let mut hasher = std::hash::DefaultHasher::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../migrations");
    for m in migrations
        .migrations()
        .map_err(|e| anyhow::anyhow!("cannot list migrations: {e}"))?
    {
        let name = m.name().to_string();
        name.hash(&mut hasher);
        for folder in ["common", service] {
            if let Ok(sql) = std::fs::read_to_string(root.join(folder).join(&name).join("up.sql")) {
                sql.hash(&mut hasher);
            }
        }
    }
    Ok(format!("of_tpl_{service}_{:016x}", hasher.finish()))
}

async fn template_exists(admin: &tokio_postgres::Client, template: &str) -> anyhow::Result<bool> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await?
        .is_some())
}

async fn ensure_template(
    admin: &tokio_postgres::Client,
    template: &str,
    migrations: ServiceMigrations,
) -> anyhow::Result<()> {
    if template_exists(admin, template).await? {
        return Ok(());
    }
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
        .await?;
    let result = async {
        if template_exists(admin, template).await? {
            return Ok(());
        }
        // Migrate under a temporary name and rename when done, so a crash
        // mid-way never leaves a half-migrated template behind.
        let building = format!("{template}_building");
        admin
            .batch_execute(&format!(
                r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#
            ))
            .await?;
        admin
            .batch_execute(&format!(r#"CREATE DATABASE "{building}""#))
            .await?;
        orderflow_db::run_migrations(&url_for(&building), migrations).await?;
        admin
            .batch_execute(&format!(
                r#"ALTER DATABASE "{building}" RENAME TO "{template}""#
            ))
            .await?;
        anyhow::Ok(())
    }
    .await;
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
        .await?;
    result
}

/// Drops test databases from runs that died without cleaning up.
async fn sweep_stale(admin: &tokio_postgres::Client) {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return;
    };
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'of\\_t\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .rsplit('_')
            .nth(1)
            .and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|ts| now.as_secs().saturating_sub(ts) > STALE_AFTER.as_secs()) {
            let _ = admin
                .batch_execute(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .await;
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
///
/// # Panics
/// When the deadline passes, with `what` in the message.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let holds = condition();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;
}

/// Polls `check` every 20 ms until it returns `Ok`, and returns its value.
///
/// # Panics
/// When the deadline passes, with `what` and the last `Err` (what was seen).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_for_replaces_only_the_database() {
        assert!(url_for("x").ends_with("/x"));
        assert!(!url_for("x").contains("/postgres/"));
    }
}
