//! `loadgen`: a closed-loop load generator for the order service.
//!
//! `create-orders` keeps `--concurrency` CreateOrder calls in flight for a
//! fixed time and reports throughput and latency percentiles; `idempotency`
//! fires many identical calls with one request_id at once and checks that a
//! single order comes back; `otlp-sink` receives and counts OTLP spans for
//! benchmarks with trace export on. `loadgen <subcommand> --help` lists the options.

mod duration;
mod open_loop;
mod request;
mod run;
mod search;
mod settle;
mod sink;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the orderflow order service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed loop: each worker sends CreateOrder, waits for the answer, repeats.
    CreateOrders(CreateOrdersArgs),
    /// Open loop: CreateOrder at a fixed rate, each call sent when due whatever
    /// the earlier ones are doing; latency counted from when a call was due.
    OpenLoop(OpenLoopArgs),
    /// Waits until every order is terminal, every outbox published and every
    /// routed message applied (inbox rows); prints how long that took as JSON.
    Settle(SettleArgs),
    /// Sends N concurrent CreateOrder calls with the same request_id and body;
    /// exits non-zero unless all succeed with one and the same order id.
    Idempotency(IdempotencyArgs),
    /// An OTLP/gRPC trace receiver that counts spans and keeps nothing (for
    /// benchmarks with trace export on).
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
    },
    /// Closed loop: each worker sends SearchProducts to the catalog (or, with
    /// --ilike-database, the plain ILIKE baseline over SQL), cycling through
    /// the queries; prints the latency as JSON.
    Search(SearchArgs),
}

#[derive(Args)]
struct SearchArgs {
    /// gRPC endpoint of the catalog service.
    #[arg(long, default_value = "http://127.0.0.1:50055")]
    target: String,
    /// Instead: the catalog's database, searched with `name ILIKE ALL(...)`.
    #[arg(long)]
    ilike_database: Option<String>,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    #[arg(long, default_value = "10s", value_parser = duration::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = duration::parse_duration)]
    warmup: Duration,
    /// A query; give it several times. Workers cycle through them.
    #[arg(long = "query", required = true)]
    queries: Vec<String>,
    #[arg(long, default_value_t = 20)]
    page_size: i32,
}

/// Where to connect and how; shared by both subcommands.
#[derive(Args)]
struct ConnArgs {
    /// gRPC endpoint of the order service.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// HTTP/2 connections, workers assigned round-robin. One connection can
    /// become the bottleneck at high concurrency. Default: min(concurrency, 8).
    #[arg(long)]
    connections: Option<usize>,
    /// Deadline of each call (sent as grpc-timeout); a late call counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value = "10s", value_parser = duration::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct CreateOrdersArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Workers, i.e. calls in flight at any time.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Measured time after the warmup, e.g. 20s, 500ms, 2m.
    #[arg(long, default_value = "20s", value_parser = duration::parse_duration)]
    duration: Duration,
    /// Time at full load before measuring, so connection set-up, pool growth
    /// and caches do not pollute the numbers.
    #[arg(long, default_value = "3s", value_parser = duration::parse_duration)]
    warmup: Duration,
    /// Lines per order, each on a distinct product (at most the product pool size).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=request::PRODUCT_POOL as i64))]
    lines: u32,
    /// Also write the results as a JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct OpenLoopArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Calls per second.
    #[arg(long)]
    rate: f64,
    /// How long to send, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = duration::parse_duration)]
    duration: Duration,
    /// A file with one product id per line; lines are drawn from them.
    #[arg(long)]
    products: PathBuf,
    /// Each order has 1..=N lines of quantity 1 on distinct products.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_lines: u32,
    /// Unit price of every line, in minor units (EUR).
    #[arg(long, default_value_t = 100)]
    unit_price_minor: i64,
    /// Customers the orders are spread over (random ids).
    #[arg(long, default_value_t = 1000)]
    customers: usize,
    /// Calls outstanding at most; a call due beyond that is skipped and counted.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Write the results as a JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SettleArgs {
    /// `service=postgres://...`, once per service; the order service's first.
    #[arg(long = "database", required = true)]
    databases: Vec<String>,
    /// `service:event.type=N`: the queues an event type of that producer is
    /// routed to (from the broker's bindings).
    #[arg(long = "fanout", value_delimiter = ',')]
    fanout: Vec<String>,
    #[arg(long, default_value = "180s", value_parser = duration::parse_duration)]
    timeout: Duration,
    #[arg(long, default_value = "50ms", value_parser = duration::parse_duration)]
    every: Duration,
    /// Write the result as a JSON object to this file (else stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct IdempotencyArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Concurrent calls, all with the same request_id.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    calls: u32,
    /// Lines in the (single) order.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=request::PRODUCT_POOL as i64))]
    lines: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CreateOrders(args) => create_orders(args).await,
        Command::OpenLoop(args) => open_loop(args).await,
        Command::Settle(args) => settle(args).await,
        Command::Idempotency(args) => idempotency(args).await,
        Command::OtlpSink { listen } => sink::run(listen).await.map(|()| ExitCode::SUCCESS),
        Command::Search(args) => search(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn create_orders(args: CreateOrdersArgs) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency as usize;
    if args.duration.is_zero() {
        bail!("--duration must be greater than zero");
    }
    let clients = connect(&args.conn, concurrency).await?;
    eprintln!(
        "loadgen: target={} concurrency={concurrency} connections={} lines={} warmup={:?} duration={:?}",
        args.conn.target,
        clients.len(),
        args.lines,
        args.warmup,
        args.duration,
    );
    let plan = run::Plan {
        concurrency,
        lines: args.lines as usize,
        warmup: args.warmup,
        duration: args.duration,
    };
    let report = run::create_orders(&clients, &plan).await?;
    for (code, message) in &report.sample_errors {
        eprintln!("loadgen: first {code}: {message}");
    }
    println!("{}", report.summary.human_line());
    if let Some(path) = &args.json {
        let mut json = serde_json::to_string_pretty(&report.summary)?;
        json.push('\n');
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    // Errors are results worth reporting, not a failure of the tool; a run
    // where nothing succeeded measured nothing, so scripts should notice.
    Ok(if report.summary.ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn open_loop(args: OpenLoopArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.products)
        .with_context(|| format!("reading {}", args.products.display()))?;
    let products: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if products.is_empty() {
        bail!("{} lists no product ids", args.products.display());
    }
    let clients = connect(&args.conn, usize::MAX).await?;
    let plan = open_loop::Plan {
        rate: args.rate,
        duration: args.duration,
        products,
        max_lines: args.max_lines as usize,
        unit_price_minor: args.unit_price_minor,
        customers: args.customers,
        max_in_flight: args.max_in_flight,
    };
    let summary = open_loop::run(&clients, &plan).await?;
    let json = serde_json::to_string_pretty(&summary)?;
    match &args.json {
        Some(path) => {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => println!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn settle(args: SettleArgs) -> anyhow::Result<ExitCode> {
    let databases = args
        .databases
        .iter()
        .map(|d| {
            d.split_once('=')
                .map(|(s, u)| (s.to_owned(), u.to_owned()))
                .with_context(|| format!("--database {d:?}: expected service=postgres://..."))
        })
        .collect::<anyhow::Result<_>>()?;
    let fanout = args
        .fanout
        .iter()
        .map(|f| {
            let parsed = f.split_once(':').and_then(|(service, rest)| {
                let (event_type, n) = rest.split_once('=')?;
                Some((service.to_owned(), event_type.to_owned(), n.parse().ok()?))
            });
            parsed.with_context(|| format!("--fanout {f:?}: expected service:event.type=N"))
        })
        .collect::<anyhow::Result<_>>()?;
    let plan = settle::Plan {
        databases,
        fanout,
        timeout: args.timeout,
        every: args.every,
    };
    let summary = settle::run(&plan).await?;
    let json = serde_json::to_string_pretty(&summary)?;
    match &args.json {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn idempotency(args: IdempotencyArgs) -> anyhow::Result<ExitCode> {
    let calls = args.calls as usize;
    let clients = connect(&args.conn, calls).await?;
    let outcome = run::idempotency(&clients, calls, args.lines as usize).await;
    for (code, message) in &outcome.errors {
        eprintln!("loadgen: {code}: {message}");
    }
    println!(
        "calls={calls} connections={} request_id={} ok={} errors={} distinct_order_ids={}{}",
        clients.len(),
        outcome.request_id,
        outcome.ok,
        outcome.errors.len(),
        outcome.order_ids.len(),
        outcome
            .order_ids
            .iter()
            .map(|id| format!(" {id}"))
            .collect::<String>(),
    );
    if outcome.mismatched_request_ids > 0 {
        eprintln!(
            "loadgen: {} responses carried a different request_id",
            outcome.mismatched_request_ids
        );
    }
    let good = outcome.errors.is_empty()
        && outcome.order_ids.len() == 1
        && outcome.mismatched_request_ids == 0;
    Ok(if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Opens `--connections` channels (default min(workers, 8), never more than
/// there are workers to use them). Each `connect()` is its own TCP/HTTP2
/// connection; connecting eagerly makes a wrong target fail before the run.
async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency as usize;
    let target = match args.ilike_database {
        Some(url) => search::Target::Ilike(url),
        None => {
            let endpoint = Endpoint::from_shared(args.target.clone())
                .with_context(|| format!("invalid --target {:?}", args.target))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5));
            let mut clients = Vec::new();
            for _ in 0..concurrency.min(8) {
                let channel = endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {}", args.target))?;
                clients.push(
                    orderflow_proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(
                        channel,
                    ),
                );
            }
            search::Target::Grpc(clients)
        }
    };
    let summary = search::run(
        target,
        &search::Plan {
            concurrency,
            duration: args.duration,
            warmup: args.warmup,
            queries: args.queries,
            page_size: args.page_size,
        },
    )
    .await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

async fn connect(
    conn: &ConnArgs,
    workers: usize,
) -> anyhow::Result<Vec<OrderServiceClient<Channel>>> {
    let wanted = conn.connections.unwrap_or(workers.min(8));
    if wanted == 0 {
        bail!("--connections must be at least 1");
    }
    let count = wanted.min(workers).max(1);
    let endpoint = Endpoint::from_shared(conn.target.clone())
        .with_context(|| format!("invalid --target {:?}", conn.target))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(conn.timeout);
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "connecting to {} (connection {}/{count})",
                conn.target,
                i + 1
            )
        })?;
        clients.push(OrderServiceClient::new(channel));
    }
    Ok(clients)
}
