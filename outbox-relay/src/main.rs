//! `outbox-relay` (or `outbox-relay serve`): publish until SIGTERM.
//! `outbox-relay unpark --source order [--id <uuid>...]`: put parked events
//! back in line. Configuration: see README.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_config::Env;
use orderflow_outbox_relay::config::RelayConfig;

#[derive(Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Publishes outbox events to RabbitMQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish until SIGTERM or SIGINT (the default).
    Serve,
    /// Retry parked events of a source: all of them, or those listed.
    Unpark {
        #[arg(long)]
        source: String,
        #[arg(long = "id")]
        ids: Vec<uuid::Uuid>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    orderflow_grpc::run_binary(
        "orderflow-outbox-relay",
        RelayConfig::from_source(&Env),
        async |config| match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                orderflow_outbox_relay::run(config, orderflow_grpc::shutdown_signal()).await
            }
            Command::Unpark { source, ids } => {
                let src = config
                    .sources
                    .iter()
                    .find(|s| s.name == source)
                    .ok_or_else(|| anyhow::anyhow!("no source named {source} in RELAY_SOURCES"))?;
                let mut conn = AsyncPgConnection::establish(&src.database_url).await?;
                let ids = (!ids.is_empty()).then_some(ids);
                let n = orderflow_outbox::relay::unpark(&mut conn, ids.as_deref()).await?;
                println!("{n} parked event(s) of {source} will be retried");
                Ok(())
            }
        },
    )
}
