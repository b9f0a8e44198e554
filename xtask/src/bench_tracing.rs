//! `cargo xtask bench tracing [--rounds N] [--duration SECS] [--clients N] [--saga-orders N]`
//!
//! The cost of tracing: the whole system (four services and the relay,
//! release builds, databases and a RabbitMQ vhost of their own) runs with
//! OTLP trace export off, then on (to `loadgen otlp-sink`, a receiver that
//! counts spans and keeps nothing), alternating, `--rounds` times each, the
//! order of the pair flipping every round so drift hits both sides alike.
//! Each run measures:
//!
//! - saga latency: `--saga-orders` orders placed one after the other
//!   through grpcurl (unloaded), each from its CreateOrder commit to its
//!   confirmation commit (`orders.updated_at - created_at`: both are
//!   PostgreSQL's transaction start times, so no polling blurs them);
//! - CreateOrder throughput: the load generator, closed loop, `--clients`
//!   calls in flight for `--duration` s after a 3 s warm-up, with the relay
//!   stopped, so the order service's work is the calls (as in `bench
//!   create-order`);
//! - saga throughput: the relay starts again and every order just placed
//!   goes through its saga at once (unknown products: each is rejected by
//!   inventory and cancelled, four events and seven consumed messages per
//!   order, all traced), timed until no order is PENDING.
//!
//! Every process is restarted between runs (export is read at start). Results replace the
//! `tracing` section of BENCHMARKS.md.

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{
        git_commit, loadgen_at, median, prepare,
        system::{
            BENCH_TOKEN, Layout, PACKAGES, Proc, SERVICES, System, new_uuid, percentile, query,
        },
        write_section,
    },
    cmd::{self, poll_until, port_open},
    infra,
};

const SINK: &str = "127.0.0.1:4391";

/// gRPC 50191-50194, /metrics 9191-9194, the relay 8191.
fn layout() -> Layout {
    Layout {
        db_prefix: "of_bench_trace".to_owned(),
        vhost: "orderflow-bench-tracing".to_owned(),
        port_base: 91,
        services: &SERVICES,
    }
}
const PRODUCT: &str = "5b1f0c9e-2a7d-4c3b-9e8f-1a2b3c4d5e6f";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    On,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
        }
    }
}

/// One run's figures.
struct Run {
    mode: Mode,
    round: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    saga_p50_ms: f64,
    saga_p99_ms: f64,
    /// Sagas per second while the load's orders (placed with the relay
    /// stopped) all go through at once.
    saga_rate: f64,
}

pub fn run<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<()> {
    let (mut rounds, mut duration, mut clients, mut saga_orders) = (3usize, 8u32, 8u32, 60usize);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--rounds" => rounds = value.parse().context("--rounds takes a number")?,
            "--duration" => duration = value.parse().context("--duration takes whole seconds")?,
            "--clients" => clients = value.parse().context("--clients takes a number")?,
            "--saga-orders" => {
                saga_orders = value.parse().context("--saga-orders takes a number")?
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    prepare(&PACKAGES)?;
    let grpcurl = infra::ensure_grpcurl()?;
    let release = cmd::target_dir().join("release");
    let work = cmd::target_dir().join("bench").join("tracing");
    std::fs::create_dir_all(&work)?;

    layout().create(&release)?;
    // Removed whatever happens: see `Layout::remove`.
    let measured = runs_and_spans(
        &release,
        &work,
        &grpcurl,
        rounds,
        clients,
        duration,
        saga_orders,
    );
    layout().remove();
    let (runs, spans) = measured?;

    let report = render(&runs, spans, rounds, duration, clients, saga_orders)?;
    println!("{report}");
    write_section(
        &cmd::workspace_root().join("BENCHMARKS.md"),
        "tracing",
        &report,
    )
}

/// Every run, alternating, and the spans the sink received.
fn runs_and_spans(
    release: &Path,
    work: &Path,
    grpcurl: &Path,
    rounds: usize,
    clients: u32,
    duration: u32,
    saga_orders: usize,
) -> Result<(Vec<Run>, u64)> {
    let mut sink = Proc::start(
        "otlp-sink",
        Command::new(release.join("loadgen")).args(["otlp-sink", "--listen", SINK]),
        work,
    )?;
    if !poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        port_open(SINK)
    }) {
        bail!("the OTLP sink did not listen on {SINK}");
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Mode::Off, Mode::On]
        } else {
            [Mode::On, Mode::Off]
        };
        for mode in order {
            eprintln!(
                "== round {} of {rounds}, tracing {}",
                round + 1,
                mode.name()
            );
            let mut system = start(release, work, mode, grpcurl)?;
            let result = measure(
                &mut system,
                release,
                work,
                grpcurl,
                clients,
                duration,
                saga_orders,
            );
            system.stop();
            let (rate, p50_ms, p99_ms, errors, saga_p50_ms, saga_p99_ms, saga_rate) = result?;
            eprintln!(
                "   {rate:.0} CreateOrder/s (p50 {p50_ms:.2} ms, p99 {p99_ms:.2} ms), saga p50 {saga_p50_ms:.1} ms p99 {saga_p99_ms:.1} ms, backlog {saga_rate:.0} sagas/s"
            );
            runs.push(Run {
                mode,
                round,
                rate,
                p50_ms,
                p99_ms,
                errors,
                saga_p50_ms,
                saga_p99_ms,
                saga_rate,
            });
        }
    }
    sink.stop();
    let spans = std::fs::read_to_string(work.join("otlp-sink.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("spans="))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    Ok((runs, spans))
}

type Figures = (f64, f64, f64, u64, f64, f64, f64);

/// Saga latency (unloaded), then CreateOrder throughput; then waits until
/// every order settled.
fn measure(
    system: &mut System,
    release: &Path,
    work: &Path,
    grpcurl: &Path,
    clients: u32,
    duration: u32,
    saga_orders: usize,
) -> Result<Figures> {
    let order_addr = &layout().grpc_addr("order");
    let mut ids = Vec::with_capacity(saga_orders);
    for _ in 0..saga_orders {
        let body = format!(
            r#"{{"request_id":"{}","customer_id":"{}","customer_email":"bench@example.com","lines":[{{"product_id":"{PRODUCT}","quantity":1,"unit_price":{{"amount_minor":100,"currency":"EUR"}}}}]}}"#,
            new_uuid()?,
            new_uuid()?
        );
        let out = cmd::output(
            Command::new(grpcurl).args([
                "-plaintext",
                "-d",
                &body,
                order_addr.as_str(),
                "orderflow.order.v1.OrderService/CreateOrder",
            ]),
            "CreateOrder through grpcurl",
            "see the service logs under target/bench/tracing",
        )?;
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let id = answer["order"]["id"]
            .as_str()
            .with_context(|| format!("CreateOrder answered no id: {answer}"))?;
        ids.push(format!("'{id}'"));
        // One saga at a time: the next order starts once this one settled.
        wait_settled(Some(id), Duration::from_secs(30))?;
    }
    let latencies: Vec<f64> = query(
        &format!(
            "SELECT extract(epoch FROM updated_at - created_at) * 1000 FROM orders \
             WHERE status = 'CONFIRMED' AND id IN ({})",
            ids.join(",")
        ),
        &layout().database("order"),
    )?
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect();
    if latencies.len() != saga_orders {
        bail!(
            "{} of {saga_orders} saga orders were confirmed; see target/bench/tracing/*.log",
            latencies.len()
        );
    }
    let (saga_p50, saga_p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    // CreateOrder alone: the relay stops, so the order service's work is
    // the calls (as in `bench create-order`), not the saga's.
    system.stop_relay();
    let (rate, p50, p99, errors) = loadgen_at(
        &release.join("loadgen"),
        work,
        &format!("http://{order_addr}"),
        clients,
        duration,
    )?;
    // Then the saga of every order just placed, all at once: the relay
    // again, until none is PENDING.
    let placed: f64 = query(
        "SELECT count(*) FROM orders WHERE status = 'PENDING'",
        &layout().database("order"),
    )?
    .trim()
    .parse()
    .context("a count of PENDING orders")?;
    let started = Instant::now();
    system.start_relay()?;
    wait_settled(None, Duration::from_secs(600))?;
    let drained = started.elapsed().as_secs_f64();
    Ok((
        rate,
        p50,
        p99,
        errors,
        saga_p50,
        saga_p99,
        placed / drained.max(0.001),
    ))
}

/// Waits until `order` (or every order) is no longer PENDING.
fn wait_settled(order: Option<&str>, timeout: Duration) -> Result<()> {
    let sql = match order {
        Some(id) => format!("SELECT count(*) FROM orders WHERE id = '{id}' AND status = 'PENDING'"),
        None => "SELECT count(*) FROM orders WHERE status = 'PENDING'".to_owned(),
    };
    let mut last = String::new();
    let settled = poll_until(timeout, Duration::from_millis(5), || {
        match query(&sql, &layout().database("order")) {
            Ok(n) => {
                last = n.trim().to_owned();
                last == "0"
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        }
    });
    if settled {
        Ok(())
    } else {
        bail!("orders still PENDING after {timeout:?} ({last}); see target/bench/tracing/*.log")
    }
}

/// The system of one run: with export on, every process sends its spans
/// to the sink; the order service gets a larger pool for the closed loop.
fn start(release: &Path, work: &Path, mode: Mode, grpcurl: &Path) -> Result<System> {
    let env = move |name: &str| {
        let mut env = Vec::new();
        if mode == Mode::On {
            env.push((
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("http://{SINK}"),
            ));
        }
        if name == "order" {
            env.push(("DATABASE_POOL_SIZE".to_owned(), "32".to_owned()));
        }
        env
    };
    let system = System::start(release, &layout(), work, Box::new(env), grpcurl)?;
    // The product the saga orders buy (kept across runs: an upsert).
    cmd::output(
        Command::new(grpcurl).args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {BENCH_TOKEN}"),
            "-d",
            &format!(
                r#"{{"product_id":"{PRODUCT}","sku":"BENCH-1","name":"Bench","unit_price":{{"amount_minor":100,"currency":"EUR"}},"on_hand":1000000}}"#
            ),
            &layout().grpc_addr("inventory"),
            "orderflow.inventory.v1.InventoryService/UpsertProduct",
        ]),
        "stocking the bench product",
        "see target/bench/tracing/inventory.log",
    )?;
    Ok(system)
}

fn render(
    runs: &[Run],
    spans: u64,
    rounds: usize,
    duration: u32,
    clients: u32,
    saga_orders: usize,
) -> Result<String> {
    let date = crate::bench::utc_now();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut s = String::new();
    writeln!(s, "## Cost of tracing: OTLP export on vs off\n")?;
    writeln!(
        s,
        "`cargo xtask bench tracing --rounds {rounds} --duration {duration} --clients {clients} --saga-orders {saga_orders}` on {date}, commit {}, {cores} cores (shared machine). The whole system runs (four services and the relay, release builds, own databases and RabbitMQ vhost), restarted for every run; runs alternate export off and on, the pair's order flipping each round. *On*: `OTEL_EXPORTER_OTLP_ENDPOINT` points at `loadgen otlp-sink` (an OTLP/gRPC receiver on this machine that counts spans and keeps nothing), batch span processor with the SDK defaults. *Off*: no OTEL variable, so no OpenTelemetry layer at all.\n",
        git_commit()
    )?;
    writeln!(
        s,
        "Saga latency: {saga_orders} orders one at a time (grpcurl), each from its CreateOrder commit to its confirmation commit (`updated_at - created_at` in the order database: order.placed → reserve → inventory.reserved → charge → payment.completed → confirm, three relay hops). CreateOrder throughput: the load generator, closed loop, {clients} calls in flight, {duration} s after a 3 s warm-up, with the relay stopped (the order service's work is the calls, as in `bench create-order`; the service runs with `DATABASE_POOL_SIZE=32`). Backlog: then the relay starts again and every order just placed goes through its saga at once (unknown products: reserve rejects, the order is cancelled, payment records a tombstone, notification two messages; 7 consumed messages and 4 events per order, every hop traced); sagas/s = orders / time until none is PENDING.\n"
    )?;
    writeln!(
        s,
        "| round | export | CreateOrder/s | p50 ms | p99 ms | errors | saga p50 ms | saga p99 ms | backlog sagas/s |"
    )?;
    writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in runs {
        writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.0} |",
            r.round + 1,
            r.mode.name(),
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.saga_p50_ms,
            r.saga_p99_ms,
            r.saga_rate
        )?;
    }
    let paired = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        (0..rounds)
            .filter_map(|round| {
                let of = |mode| runs.iter().find(|r| r.round == round && r.mode == mode);
                match (of(Mode::On), of(Mode::Off)) {
                    (Some(on), Some(off)) if f(off) > 0.0 => Some(f(on) / f(off)),
                    _ => None,
                }
            })
            .collect()
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rate = paired(&|r| r.rate);
    let p50 = paired(&|r| r.p50_ms);
    let saga50 = paired(&|r| r.saga_p50_ms);
    let saga99 = paired(&|r| r.saga_p99_ms);
    let sagas = paired(&|r| r.saga_rate);
    writeln!(
        s,
        "\nRatios on / off, median of the rounds (each round's in parentheses):\n"
    )?;
    writeln!(
        s,
        "- CreateOrder throughput: {:.2} ({})",
        median(rate.clone()),
        list(&rate)
    )?;
    writeln!(
        s,
        "- CreateOrder p50 latency: {:.2} ({})",
        median(p50.clone()),
        list(&p50)
    )?;
    writeln!(
        s,
        "- saga latency p50: {:.2} ({})",
        median(saga50.clone()),
        list(&saga50)
    )?;
    writeln!(
        s,
        "- saga latency p99: {:.2} ({})",
        median(saga99.clone()),
        list(&saga99)
    )?;
    writeln!(
        s,
        "- sagas/s through the backlog: {:.2} ({})",
        median(sagas.clone()),
        list(&sagas)
    )?;
    writeln!(
        s,
        "\nThe sink received {spans} spans over the runs with export on."
    )?;
    Ok(s)
}
