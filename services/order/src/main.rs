//! `order serve` runs the gRPC server; `order migrate` applies the migrations.
//! Configuration comes from the environment: see README.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orderflow_config::Env;
use orderflow_order::{MIGRATIONS, app::Application, config};

#[derive(Parser)]
#[command(name = "order", version, about = "orderflow order service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// sysexits.h EX_CONFIG: the configuration is wrong, retrying will not help.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::from_source(&Env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = orderflow_telemetry::init("orderflow-order", &Env)?;
        match cli.command {
            Command::Serve => {
                let app = Application::build(&config).await?;
                tracing::info!(grpc.addr = %app.grpc_addr()?, "order service listening");
                app.run_until(orderflow_grpc::shutdown_signal()).await
            }
            Command::Migrate => {
                let applied =
                    orderflow_db::run_migrations(&config.database_url, MIGRATIONS).await?;
                tracing::info!(count = applied.len(), applied = ?applied, "migrations applied");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %format!("{e:#}"), "order service failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
