//! `payment serve` runs the gRPC server and the event consumer;
//! `payment migrate` applies the migrations. Configuration comes from the
//! environment: see README.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orderflow_config::Env;
use orderflow_payment::{MIGRATIONS, app::Application, config, gateway};

#[derive(Parser)]
#[command(name = "payment", version, about = "orderflow payment service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and consume events until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    orderflow_grpc::run_binary(
        "orderflow-payment",
        config::from_source(&Env).and_then(|c| Ok((c, config::breaker_from_source(&Env)?))),
        async |(config, breaker)| match cli.command {
            Command::Serve => {
                // Before `build`, which registers the gateway's metrics.
                gateway::configure_process(breaker)?;
                let app = Application::build(&config).await?;
                tracing::info!(
                    grpc.addr = %app.grpc_addr()?,
                    metrics.addr = %app.metrics_addr()?,
                    "payment service listening"
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
