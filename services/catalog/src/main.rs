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
            Command::Migrate => {
                let applied =
                    orderflow_db::run_migrations(&config.service.database_url, MIGRATIONS).await?;
                tracing::info!(count = applied.len(), applied = ?applied, "migrations applied");
                Ok(())
            }
        },
    )
}
