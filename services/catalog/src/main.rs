//! `catalog serve` runs the gRPC server and the consumer of inventory's events;
//! `catalog migrate` applies the migrations. Configuration comes from the
//! environment: see README.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orderflow_catalog::{MIGRATIONS, app::Application, config};
use orderflow_config::Env;

#[derive(Parser)]
#[command(name = "catalog", version, about = "orderflow catalog service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and apply inventory's events until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Rebuild the catalog from inventory's snapshot while it serves (or
    /// backfill an empty one), showing the progress until searches read the
    /// new entries.
    Rebuild {
        /// The catalog's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50055")]
        addr: String,
        /// The catalog's GRPC_ADMIN_TOKEN (RebuildCatalog is an admin RPC).
        #[arg(long, env = "GRPC_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    orderflow_grpc::run_binary(
        "orderflow-catalog",
        config::from_source(&Env),
        async |config| match cli.command {
            Command::Serve => {
                let app = Application::build(&config).await?;
                tracing::info!(
                    grpc.addr = %app.grpc_addr()?,
                    metrics.addr = %app.metrics_addr()?,
                    "catalog service listening"
                );
                app.run_until(orderflow_grpc::shutdown_signal()).await
            }
            Command::Rebuild { addr, token, quiet } => {
                orderflow_catalog::cli::rebuild(&addr, token.as_deref(), quiet).await
            }
            Command::Migrate => {
                let applied =
                    orderflow_db::run_migrations(&config.service.database_url, MIGRATIONS).await?;
                tracing::info!(count = applied.len(), applied = ?applied, "migrations applied");
                Ok(())
            }
        },
    )
}
