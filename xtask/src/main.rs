//! Developer commands for orderflow: `cargo xtask up|down|test|bench|k8s-check`.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_tracing;
mod cmd;
mod infra;
mod k8s;
mod test;
mod up;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "orderflow developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Start PostgreSQL and RabbitMQ if needed, then every service in the background.
    Up,
    /// Stop what `up` started (PostgreSQL and RabbitMQ keep running).
    Down,
    /// Run the whole test suite against real PostgreSQL and RabbitMQ (what CI runs).
    /// Arguments after `--` go to the test runner.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check the Kubernetes manifests without a cluster: render every overlay,
    /// validate against the pinned Kubernetes schemas, `kubectl apply
    /// --dry-run=client`, policy test (`test` runs it first).
    K8sCheck,
    /// Run the benchmarks.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one task from the repository root, so relative paths (target/, .run/)
/// mean the same from any subdirectory.
fn run(task: Task) -> Result<ExitCode> {
    let root = cmd::workspace_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("cannot enter the repository root {}", root.display()))?;
    match task {
        Task::Up => up::up().map(|()| ExitCode::SUCCESS),
        Task::Down => up::down().map(|()| ExitCode::SUCCESS),
        Task::Test { args } => test::run(&args),
        Task::Bench { args } => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Task::K8sCheck => k8s::check().map(|()| ExitCode::SUCCESS),
    }
}
