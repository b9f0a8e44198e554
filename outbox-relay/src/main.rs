//! `outbox-relay` (or `outbox-relay serve`): publish until SIGTERM, serving
//! the dashboard. The other subcommands are the dashboard's actions on the
//! command line, run against the same configuration (RELAY_SOURCES,
//! AMQP_URL, RELAY_RABBITMQ_MANAGEMENT_URL); each prints JSON and is
//! recorded in the audit log under `--by` (default: $USER).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use orderflow_config::Env;
use orderflow_outbox_relay::{
    config::RelayConfig,
    ops::{
        Actor, Ops, OpsError,
        dlq::DlqSelection,
        events::{EventQuery, ReplayRequest},
    },
};

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

#[derive(Args)]
struct Who {
    /// Recorded in the audit log as who acted.
    #[arg(long, env = "USER", default_value = "cli")]
    by: String,
}

#[derive(Subcommand)]
enum Command {
    /// Publish until SIGTERM or SIGINT (the default).
    Serve,
    /// Find outbox events of a source (newest first).
    Events {
        #[arg(long)]
        source: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        aggregate: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
        /// RFC 3339, e.g. 2026-11-23T16:00:00Z.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// pending, published or parked.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "50")]
        limit: String,
    },
    /// Retry parked events of a source: all of them, or those listed.
    Unpark {
        #[arg(long)]
        source: String,
        #[arg(long = "id")]
        ids: Vec<uuid::Uuid>,
        #[command(flatten)]
        who: Who,
    },
    /// Publish already published events again (same message ids, so
    /// consumers deduplicate): by id, by aggregate or by creation time.
    Replay {
        #[arg(long)]
        source: String,
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long)]
        aggregate: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Stop publishing a source on every replica.
    Pause {
        #[arg(long)]
        source: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Publish a paused source again.
    Resume {
        #[arg(long)]
        source: String,
        #[command(flatten)]
        who: Who,
    },
    /// Dead-letter queues of the consumers.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Operator actions (replays, pauses, dead-letter fixes), newest first.
    Audit {
        /// Only this action, e.g. replay.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Every DLQ with its depth.
    List,
    /// The first messages of a DLQ, with the error that parked them.
    Show {
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Move messages back to their work queue.
    Retry {
        queue: String,
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        who: Who,
    },
    /// Remove messages, recording each (with its body) in the audit log.
    Discard {
        queue: String,
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
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
            other => {
                let ops = Ops::new(&config)?;
                let out = operate(&ops, other)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
        },
    )
}

fn actor(who: Who) -> Result<Actor, OpsError> {
    let operator =
        orderflow_outbox_relay::dashboard::auth::operator_name(&who.by).ok_or_else(|| {
            OpsError::BadRequest("--by: 1 to 64 letters, digits, spaces or . @ _ -".to_owned())
        })?;
    Ok(Actor { operator })
}

async fn operate(ops: &Ops, command: Command) -> Result<serde_json::Value, OpsError> {
    match command {
        Command::Serve => Ok(serde_json::Value::Null),
        Command::Events {
            source,
            id,
            aggregate,
            event_type,
            from,
            to,
            status,
            limit,
        } => {
            ops.search_events(&EventQuery {
                source: Some(source),
                id,
                aggregate_id: aggregate,
                event_type,
                from,
                to,
                status,
                limit: Some(limit),
                before_seq: None,
            })
            .await
        }
        Command::Unpark { source, ids, who } => ops.unpark(&actor(who)?, &source, &ids).await,
        Command::Replay {
            source,
            ids,
            aggregate,
            from,
            to,
            reason,
            who,
        } => {
            let req = ReplayRequest {
                source: Some(source),
                reason: Some(reason),
                ids,
                aggregate_id: aggregate,
                from,
                to,
            };
            ops.replay(&actor(who)?, &req).await
        }
        Command::Pause {
            source,
            reason,
            who,
        } => {
            ops.set_paused(&actor(who)?, &source, true, Some(&reason))
                .await
        }
        Command::Resume { source, who } => ops.set_paused(&actor(who)?, &source, false, None).await,
        Command::Dlq { command } => match command {
            DlqCommand::List => ops.dlq.dead_letter_queues().await,
            DlqCommand::Show { queue, limit } => {
                ops.peek_dead_letters(&queue, limit.clamp(1, 200)).await
            }
            DlqCommand::Retry {
                queue,
                ids,
                all,
                who,
            } => {
                let sel = DlqSelection {
                    message_ids: ids,
                    all,
                    reason: None,
                };
                ops.retry_dead_letters(&actor(who)?, &queue, &sel).await
            }
            DlqCommand::Discard {
                queue,
                ids,
                all,
                reason,
                who,
            } => {
                let sel = DlqSelection {
                    message_ids: ids,
                    all,
                    reason: Some(reason),
                };
                ops.discard_dead_letters(&actor(who)?, &queue, &sel).await
            }
        },
        Command::Audit { action, limit } => {
            ops.audit(action.as_deref(), limit.clamp(1, 1000)).await
        }
    }
}
