//! `relay-bench <path to outbox-relay> [events] [rounds]` prints a Markdown report:
//!
//! 1. raw: the same messages published straight to RabbitMQ with lapin,
//!    confirmed, in batches of 500 pipelined as the relay does (the next
//!    batch is sent while two await their confirms): the broker's limit on
//!    this machine;
//! 2. relay: the release relay draining `events` pre-inserted outbox rows;
//! 3. latency from COMMIT to delivery at a consumer, at a steady 1,000
//!    events/s (one event per transaction, 8 writers);
//! 4. the relay's peak RSS.
//!
//! Everything runs on a database and a vhost of its own, removed afterwards.
//! `cargo xtask bench relay` builds it and writes the report to BENCHMARKS.md.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt as _;
use orderflow_amqp::{
    Topology,
    lapin::{
        BasicProperties,
        options::{
            BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
            QueueDeclareOptions,
        },
        types::FieldTable,
    },
};
use orderflow_testkit::{TestBroker, TestDatabase};
use uuid::Uuid;

mod cpu;

const BATCH: usize = 500;
/// The relay's default `RELAY_PIPELINE_DEPTH`, also used for raw publishing.
const PIPELINE_DEPTH: usize = 2;
/// About the size of an `order.placed` CloudEvent.
const PAYLOAD_PAD: usize = 520;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let relay_bin = args
        .next()
        .context("usage: relay-bench <path to outbox-relay> [events] [rounds]")?;
    let events: usize = args
        .next()
        .map_or(Ok(200_000), |n| n.parse())
        .context("events must be a number")?;
    let rounds: usize = args
        .next()
        .map_or(Ok(5), |n| n.parse())
        .context("rounds must be a number")?;

    let broker = TestBroker::new();
    let db = TestDatabase::new("order", orderflow_order::MIGRATIONS).await;
    let received = Received::start(&broker).await?;
    let sql = connect(db.url()).await?;

    // Raw and relay alternate, round by round, so both see the same machine
    // conditions (it is shared, and its load drifts by minutes).
    let mut raw_rates = Vec::new();
    let mut relay_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut raw_cpu = Default::default();
    let mut relay_cpu = Default::default();
    let mut relay: Option<tokio::process::Child> = None;
    let mut stolen = Vec::new();
    for round in 1..=rounds {
        let machine_before = cpu::machine_ticks();
        eprintln!("round {round}/{rounds} raw: publishing {events} messages with lapin");
        let cpu_before = cpu::sample(None);
        let raw_rate = raw_publish(&broker, events, &received).await?;
        raw_cpu = cpu_before.per_event(&cpu::sample(None), events);

        // The previous round's relay would start on the new backlog at once.
        if let Some(previous) = relay.take() {
            stop_gracefully(previous).await?;
        }
        // Every round starts from an empty table, as the first does: the
        // previous rounds' published rows (and their dead index entries,
        // before autovacuum) would slow each round more than the last.
        sql.batch_execute("TRUNCATE outbox, outbox_pending").await?;
        eprintln!("round {round}/{rounds} relay: inserting {events} outbox rows");
        insert_backlog(&sql, events).await?;
        received.clear();
        eprintln!("round {round}/{rounds} relay: draining");
        let started = Instant::now();
        let cpu_before = cpu::sample(None);
        let child = spawn_relay(&relay_bin, db.url(), &broker.url())?;
        let pid = child.id().context("relay pid")?;
        relay = Some(child);
        received.wait_for(events, Duration::from_secs(600)).await?;
        let relay_rate = events as f64 / started.elapsed().as_secs_f64();
        relay_cpu = cpu_before.per_event(&cpu::sample(Some(pid)), events);
        eprintln!(
            "round {round}/{rounds}: raw {raw_rate:.0}/s, relay {relay_rate:.0}/s, ratio {:.2}",
            relay_rate / raw_rate
        );
        stolen.push(cpu::stolen_percent(machine_before, cpu::machine_ticks()));
        raw_rates.push(raw_rate);
        relay_rates.push(relay_rate);
        ratios.push(relay_rate / raw_rate);
    }
    let mut relay = relay.context("no round ran: rounds must be at least 1")?;
    let relay_pid = relay.id().context("relay pid")?;

    // Published rows are what retention removes; start from a clean table.
    sql.batch_execute("TRUNCATE outbox, outbox_pending").await?;
    eprintln!("latency: 1,000 events/s for 30 s");
    received.clear();
    let machine_before = cpu::machine_ticks();
    let (achieved, p50, p90, p99, max) =
        steady_latency(db.url(), &received, 1_000, Duration::from_secs(30)).await?;
    let latency_stolen = cpu::stolen_percent(machine_before, cpu::machine_ticks());
    let rss = peak_rss_kib(relay_pid)?;
    let _ = relay.kill().await;

    println!("## outbox-relay throughput and latency\n");
    println!(
        "Broker and database on this machine (2 cores, shared), one relay process (release build, `RELAY_BATCH_SIZE=500`), a consumer draining the queue. Events are ~600-byte JSON bodies, persistent, with publisher confirms and `mandatory`.\n"
    );
    println!("| measure | result |");
    println!("|---|---|");
    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| raw lapin, confirmed, batches of {BATCH} with {PIPELINE_DEPTH} awaiting confirms while the next is sent ({events} messages, until the consumer has them all): median of {rounds} rounds ({}) | {:.0} msg/s |",
        list(&raw_rates, 0),
        median(&raw_rates)
    );
    println!(
        "| relay draining {events} pre-inserted rows (10 events per aggregate), a fresh relay each round: median ({}) | {:.0} events/s |",
        list(&relay_rates, 0),
        median(&relay_rates)
    );
    println!(
        "| ratio relay / raw: median of the rounds' ratios ({}) | {:.2} |",
        list(&ratios, 2),
        median(&ratios)
    );
    println!(
        "| CPU per message, raw (last round), µs | {} |",
        cpu::describe(&raw_cpu)
    );
    println!(
        "| CPU per event, relay (last round), µs | {} |",
        cpu::describe(&relay_cpu)
    );
    println!(
        "| latency COMMIT → consumer delivery at {achieved:.0} events/s: p50 / p90 / p99 / max | {p50:.1} / {p90:.1} / {p99:.1} / {max:.1} ms |"
    );
    println!(
        "| relay peak RSS (VmHWM) | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| CPU time stolen by the host (other tenants), % of the machine's: rounds ({}); latency phase | {latency_stolen:.0} |",
        list(&stolen, 0)
    );
    Ok(())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Receipt time of each message id, from a queue bound to everything.
#[derive(Clone)]
struct Received(Arc<Mutex<HashMap<String, Instant>>>);

impl Received {
    async fn start(broker: &TestBroker) -> Result<Self> {
        let conn = orderflow_amqp::connect(&broker.url(), "bench-consumer").await?;
        let channel = conn.create_channel().await?;
        Topology::declare_exchange(&channel, "order").await?;
        channel
            .queue_declare(
                "bench".into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                "bench".into(),
                "orderflow.order".into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut deliveries = channel
            .basic_consume(
                "bench".into(),
                "bench".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let seen = Self(Arc::new(Mutex::new(HashMap::new())));
        let sink = seen.clone();
        tokio::spawn(async move {
            let _keep = conn;
            while let Some(Ok(d)) = deliveries.next().await {
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                sink.lock().entry(id).or_insert_with(Instant::now);
            }
        });
        Ok(seen)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn clear(&self) {
        self.lock().clear();
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.lock().len() < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} messages arrived within {timeout:?}",
                    self.lock().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

fn body(agg: &str, n: usize) -> String {
    format!(
        r#"{{"agg":"{agg}","n":{n},"pad":"{}"}}"#,
        "x".repeat(PAYLOAD_PAD)
    )
}

async fn raw_publish(broker: &TestBroker, events: usize, received: &Received) -> Result<f64> {
    let conn = orderflow_amqp::connect(&broker.url(), "bench-raw").await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let agg = Uuid::new_v4().to_string();
    let payload = body(&agg, 0);
    let started = Instant::now();
    let mut sent = 0;
    // Batches awaiting confirms, oldest first, as in the relay: after each
    // send, settle the oldest until at most PIPELINE_DEPTH remain.
    let mut in_flight: std::collections::VecDeque<Vec<orderflow_amqp::lapin::PublisherConfirm>> =
        std::collections::VecDeque::new();
    while sent < events || !in_flight.is_empty() {
        if sent == events || in_flight.len() > PIPELINE_DEPTH {
            let oldest: Vec<_> = in_flight.pop_front().unwrap_or_default();
            for c in futures_util::future::join_all(oldest).await {
                if !c?.is_ack() {
                    bail!("raw publish was not acknowledged");
                }
            }
            continue;
        }
        let mut confirms = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(events - sent) {
            let props = BasicProperties::default()
                .with_message_id(Uuid::now_v7().to_string().as_str().into())
                .with_type("bench.happened".into())
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2)
                .with_timestamp(0)
                .with_app_id("orderflow-order".into())
                .with_headers(FieldTable::default());
            confirms.push(
                channel
                    .basic_publish(
                        "orderflow.order".into(),
                        "bench.happened".into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        payload.as_bytes(),
                        props,
                    )
                    .await?,
            );
        }
        sent += confirms.len();
        in_flight.push_back(confirms);
    }
    // Until the consumer has them all: the same end point as the relay's.
    received.wait_for(events, Duration::from_secs(300)).await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// `events` rows, 10 per aggregate, written round by round (an aggregate's
/// events are spread over time, as in a live system).
async fn insert_backlog(sql: &tokio_postgres::Client, events: usize) -> Result<()> {
    let aggregates = (events / 10).max(1) as i32;
    for n in 0..10 {
        sql.execute(
            "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
             SELECT gen_random_uuid(), 'bench', md5('agg' || a)::uuid, 'bench.happened',
                    jsonb_build_object('agg', a, 'n', $2::int, 'pad', repeat('x', $3::int))
             FROM generate_series(1, $1::int) AS a",
            &[&aggregates, &n, &(PAYLOAD_PAD as i32)],
        )
        .await?;
    }
    Ok(())
}

fn spawn_relay(bin: &str, db_url: &str, amqp_url: &str) -> Result<tokio::process::Child> {
    tokio::process::Command::new(bin)
        .env("RELAY_SOURCES", format!("order={db_url}"))
        .env("AMQP_URL", amqp_url)
        .env("RELAY_HTTP_ADDR", "127.0.0.1:0")
        .env("RELAY_BATCH_SIZE", BATCH.to_string())
        .env("RELAY_PIPELINE_DEPTH", PIPELINE_DEPTH.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the relay")
}

/// Writers insert one event per transaction at `rate` events/s in total;
/// each event's latency is its delivery time minus the time COMMIT returned.
async fn steady_latency(
    db_url: &str,
    received: &Received,
    rate: u32,
    duration: Duration,
) -> Result<(f64, f64, f64, f64, f64)> {
    const WRITERS: u32 = 8;
    let committed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let sql = connect(db_url).await?;
        let committed = committed.clone();
        let period = Duration::from_secs_f64(f64::from(WRITERS) / f64::from(rate));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while started.elapsed() < duration {
                tick.tick().await;
                // Each event is its own aggregate, as each order is.
                let agg = Uuid::new_v4().to_string();
                let row = sql
                    .query_one(
                        "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
                         VALUES (gen_random_uuid(), 'bench', $1::text::uuid, 'bench.happened', $2::text::jsonb) RETURNING id::text",
                        &[&agg, &body(&agg, 0)],
                    )
                    .await?;
                let done = Instant::now();
                committed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((row.get(0), done));
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let committed = committed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    received
        .wait_for(committed.len(), Duration::from_secs(60))
        .await?;
    let seen = received.lock().clone();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for (id, at) in &committed {
        if let Some(got) = seen.get(id) {
            hist.record(got.saturating_duration_since(*at).as_micros() as u64)?;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok((
        committed.len() as f64 / elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0,
    ))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// SIGTERM, so the relay releases its partition leases at once and the next
/// relay need not wait for them to expire.
async fn stop_gracefully(mut relay: tokio::process::Child) -> Result<()> {
    let pid = relay.id().context("relay already reaped")?;
    tokio::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .await?;
    relay.wait().await?;
    Ok(())
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmHWM")
}
