//! `cargo xtask bench create-order [--duration SECS] [--clients 1,8,32]`
//! `cargo xtask bench relay [--events N]`
//! `cargo xtask bench tracing [--rounds N] [--duration SECS] [--clients N] [--saga-orders N]`
//! (see bench_tracing.rs)
//!
//! `relay` builds and runs `tools/relay-bench` (raw lapin vs the relay, the
//! commit-to-delivery latency, the relay's RSS) and records its report.
//!
//! Measures CreateOrder throughput of the release `order` binary with the
//! repo's load generator, next to pgbench running the same inserts (order,
//! two lines, outbox row, in one transaction) against the same database in
//! the same run, and the service's peak RSS. The ratio is what matters: this
//! machine is shared and noisy. Results replace the create-order section of
//! BENCHMARKS.md.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, infra};

mod catalog;
mod saga;
mod stock_import;
pub(crate) mod system;

const DB: &str = "of_bench_order";
/// pgbench/loadgen pairs per client level.
const ROUNDS: usize = 4;

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
const ADDR: &str = "127.0.0.1:50095";
const PG: [&str; 4] = ["-h", "127.0.0.1", "-U", "postgres"];

/// One concurrency level's figures.
struct Row {
    clients: u32,
    pgbench_tps: f64,
    pgbench_no_notify_tps: f64,
    rate: f64,
    /// Median of the per-round ratios, and the rounds' ratios.
    ratio: f64,
    ratios: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut args = args.iter().map(String::as_str);
    match args.next() {
        Some("create-order") => {}
        Some("relay") => return relay(args),
        Some("import") => return stock_import::run(args),
        Some("tracing") => return crate::bench_tracing::run(args),
        Some("saga") => return saga::run(args),
        Some("catalog") => return catalog::run(args),
        other => bail!(
            "usage: cargo xtask bench create-order [--duration SECS] [--clients 1,8,32] | relay [--events N] | import [--rows N] | saga [--rates 50,100,..] [--hot-rates ..] [--step SECS] [--baseline REV|DIR|none] [--overload RATE] [--overload-secs SECS] [--section NAME] | catalog [--products N] [--search-secs S] [--clients 1,8,32] [--saga-rate R] [--saga-secs S] | tracing [--rounds N] [--duration SECS] [--clients N] [--saga-orders N] (got {other:?})"
        ),
    }
    let mut duration = 8u32;
    let mut clients = vec![1u32, 8, 32];
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--duration" => duration = value.parse().context("--duration takes whole seconds")?,
            "--clients" => {
                clients = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--clients takes a comma-separated list such as 1,8,32")?;
            }
            _ => bail!("unknown flag {flag}"),
        }
    }

    prepare(&["orderflow-order", "orderflow-loadgen"])?;
    let release = cmd::target_dir().join("release");
    let work = cmd::target_dir().join("bench");
    std::fs::create_dir_all(&work)?;

    recreate_database()?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{DB}");
    cmd::output(
        Command::new(release.join("order"))
            .arg("migrate")
            .env("DATABASE_URL", &url),
        "migrating the bench database",
        "see the error above",
    )?;
    let script = work.join("create_order.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)?;

    let server = Server::start(&release.join("order"), &url, &work.join("order.log"))?;
    let mut rows = Vec::new();
    for &c in &clients {
        eprintln!(
            "== {c} client(s): {ROUNDS} rounds of pgbench then loadgen, {duration} s each; then pgbench without the trigger"
        );
        // Alternating short samples keeps both sides under the same machine
        // conditions (this machine's disk latency drifts by minutes).
        let mut pg = Vec::new();
        let mut load = Vec::new();
        for _ in 0..ROUNDS {
            pg.push(pgbench(&script, c, duration)?);
            load.push(loadgen_at(
                &release.join("loadgen"),
                &work,
                &format!("http://{ADDR}"),
                c,
                duration,
            )?);
        }
        set_notify_trigger(false)?;
        let no_trigger = pgbench(&script, c, duration);
        set_notify_trigger(true)?;
        let ratios: Vec<f64> = pg.iter().zip(&load).map(|(p, l)| l.0 / p).collect();
        rows.push(Row {
            clients: c,
            pgbench_tps: median(pg),
            pgbench_no_notify_tps: no_trigger?,
            rate: median(load.iter().map(|l| l.0).collect()),
            ratio: median(ratios.clone()),
            ratios,
            p50_ms: median(load.iter().map(|l| l.1).collect()),
            p99_ms: median(load.iter().map(|l| l.2).collect()),
            errors: load.iter().map(|l| l.3).sum(),
        });
    }
    let peak_rss_kib = server.peak_rss_kib()?;
    server.stop();
    drop_database()?;

    let report = render(&rows, peak_rss_kib, duration, &clients)?;
    println!("{report}");
    write_section(
        &cmd::workspace_root().join("BENCHMARKS.md"),
        "create-order",
        &report,
    )
}

fn relay<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut events = 200_000u32;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--events" => events = value.parse().context("--events takes a number")?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    prepare(&["orderflow-outbox-relay", "orderflow-relay-bench"])?;
    let release = cmd::target_dir().join("release");
    let out = cmd::output(
        Command::new(release.join("relay-bench"))
            .arg(release.join("outbox-relay"))
            .arg(events.to_string())
            .stderr(Stdio::inherit()),
        "relay-bench",
        "see its output above",
    )?;
    let commit = git_commit();
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    writeln!(
        report,
        "\nMeasured with `cargo xtask bench relay --events {events}` at commit {commit}."
    )?;
    println!("{report}");
    write_section(
        &cmd::workspace_root().join("BENCHMARKS.md"),
        "relay",
        &report,
    )
}

/// The same statements the service sends for a two-line order, with a body
/// of the size the service writes (about 600 bytes of CloudEvents JSON).
const PGBENCH_SCRIPT: &str = r#"BEGIN;
INSERT INTO orders (id, request_id, request_hash, customer_id, customer_email, status, currency, total_minor) VALUES (gen_random_uuid(), gen_random_uuid(), '\x5f0c6a3e9b1d4f7a8c2e1d3b5a7f9e015f0c6a3e9b1d4f7a8c2e1d3b5a7f9e01', gen_random_uuid(), 'c123@example.com', 'PENDING', 'EUR', 5499) ON CONFLICT (request_id) DO NOTHING RETURNING id, created_at \gset
INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor) VALUES (:id, 0, gen_random_uuid(), 2, 1250), (:id, 1, gen_random_uuid(), 1, 2999);
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES (gen_random_uuid(), 'order', :id, 'order.placed', '{"specversion":"1.0","id":"01a207cc-c618-708c-85a1-c04ec3addaff","source":"orderflow/order","type":"order.placed","subject":"01a207cc-c618-708c-85a1-c04ec3addaff","time":"2026-11-23T09:46:30.296183Z","datacontenttype":"application/json","dataversion":1,"data":{"order_id":"01a207cc-c618-708c-85a1-c04ec3addaff","customer_id":"9f0a655d-adf7-40b2-8d77-b162820bd279","customer_email":"c123@example.com","currency":"EUR","total_minor":5499,"lines":[{"product_id":"93c916e7-1e36-41eb-b141-a6c0c56d431d","quantity":2,"unit_price_minor":1250},{"product_id":"13c916e7-1e36-41eb-b141-a6c0c56d431d","quantity":1,"unit_price_minor":2999}]}}', '{"traceparent":"00-dc79931a2b6fdbbeb8309b15f9f28bab-2cd34f40c4a6fd50-00"}');
COMMIT;
"#;

/// Services up, then one release build of `packages`.
pub(crate) fn prepare(packages: &[&str]) -> Result<()> {
    infra::ensure_infra()?;
    let mut build = cmd::cargo();
    build.args(["build", "--release"]);
    for p in packages {
        build.args(["-p", p]);
    }
    cmd::run(
        &mut build,
        "building the release binaries",
        "fix the build error above",
    )
}

/// Now, as `2026-12-04 03:12 UTC`, for a report's header.
pub(crate) fn utc_now() -> String {
    cmd::output(
        Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]),
        "date",
        "",
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_default()
}

/// The short commit the figures belong to (empty outside a git checkout).
pub(crate) fn git_commit() -> String {
    cmd::output(
        Command::new("git").args(["rev-parse", "--short", "HEAD"]),
        "git",
        "",
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_default()
}

fn psql(sql: &str, database: &str) -> Result<()> {
    cmd::output(
        cmd::tool("psql")
            .args(PG)
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql, database]),
        "psql",
        "is PostgreSQL up? `cargo xtask up` starts it",
    )
    .map(drop)
}

fn recreate_database() -> Result<()> {
    drop_database()?;
    psql(&format!("CREATE DATABASE {DB}"), "postgres")
}

fn drop_database() -> Result<()> {
    psql(
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        "postgres",
    )
}

fn set_notify_trigger(enabled: bool) -> Result<()> {
    let action = if enabled { "ENABLE" } else { "DISABLE" };
    psql(
        &format!("ALTER TABLE outbox {action} TRIGGER outbox_enqueue"),
        DB,
    )
}

/// Transactions per second reported by pgbench (prepared statements, as
/// diesel-async uses).
fn pgbench(script: &Path, clients: u32, seconds: u32) -> Result<f64> {
    let out = cmd::output(
        cmd::tool("pgbench")
            .args(PG)
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(2).to_string(),
                "-T",
                &seconds.to_string(),
                "-f",
            ])
            .arg(script)
            .arg(DB),
        "pgbench",
        "pgbench comes with postgresql-contrib",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{text}"))
}

/// (rate/s, p50 ms, p99 ms, errors) of a closed-loop CreateOrder run.
pub(crate) fn loadgen_at(
    bin: &Path,
    work: &Path,
    target: &str,
    clients: u32,
    seconds: u32,
) -> Result<(f64, f64, f64, u64)> {
    let json = work.join(format!("loadgen-{clients}.json"));
    cmd::output(
        Command::new(bin)
            .args([
                "create-orders",
                "--target",
                target,
                "--lines",
                "2",
                "--warmup",
                "3s",
            ])
            .args([
                "--concurrency",
                &clients.to_string(),
                "--duration",
                &format!("{seconds}s"),
                "--json",
            ])
            .arg(&json),
        "loadgen",
        "see its output above",
    )?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let num = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("loadgen JSON lacks {k}: {v}"))
    };
    let errors = v["errors"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    Ok((num("rate_per_s")?, num("p50_ms")?, num("p99_ms")?, errors))
}

/// The order service under test, stopped on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(bin: &Path, url: &str, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("GRPC_LISTEN_ADDR", ADDR)
            // The load comes from one address; throughput is measured.
            .env("GRPC_RATE_LIMIT", "0")
            // As many connections as the largest pgbench run has clients.
            .env("DATABASE_POOL_SIZE", "32")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file.try_clone()?)
            .spawn()
            .context("starting order serve")?;
        let server = Self { child };
        if !cmd::poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            cmd::port_open(ADDR)
        }) {
            bail!(
                "order serve did not listen on {ADDR} within 30 s; see {}",
                log.display()
            );
        }
        Ok(server)
    }

    /// VmHWM: the most memory the process ever had resident.
    fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no VmHWM in /proc/<pid>/status")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn render(rows: &[Row], peak_rss_kib: u64, duration: u32, clients: &[u32]) -> Result<String> {
    let commit = git_commit();
    let date = utc_now();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let list = clients
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut s = String::new();
    writeln!(s, "## CreateOrder throughput vs pgbench\n")?;
    writeln!(
        s,
        "`cargo xtask bench create-order --duration {duration} --clients {list}` on {date}, commit {commit}, {cores} cores (shared machine), PostgreSQL at 127.0.0.1 with `fsync` and `synchronous_commit` on.\n"
    )?;
    writeln!(
        s,
        "Each client level runs {ROUNDS} rounds of pgbench then the load generator, {duration} s each, alternating so both sides see the same machine conditions (this machine's disk latency drifts by minutes); the table gives medians, and the ratio is the median of the rounds' ratios, listed in parentheses. Then pgbench runs once with the outbox trigger disabled (the trigger copies the event's key into `outbox_pending` and notifies only while a relay waits; none runs here, so the notify part costs one shared advisory lock and one lookup). All on one database. pgbench sends the statements the service sends for a two-line order (INSERT order, INSERT lines, INSERT outbox row with a ~600-byte CloudEvents body, in one transaction; prepared statements). The load generator is closed-loop: each client sends the next CreateOrder when the previous one returns; latencies exclude a 3 s warm-up per round. The service runs with `DATABASE_POOL_SIZE=32`.\n"
    )?;
    writeln!(
        s,
        "| clients | pgbench tx/s | CreateOrder/s | ratio (per round) | p50 ms | p99 ms | errors | pgbench tx/s without the trigger |"
    )?;
    writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.2} ({}) | {:.2} | {:.2} | {} | {:.0} |",
            r.clients,
            r.pgbench_tps,
            r.rate,
            r.ratio,
            r.ratios
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.pgbench_no_notify_tps
        )?;
    }
    writeln!(
        s,
        "\nPeak RSS of the order service (VmHWM) over the whole run: {:.1} MiB.",
        peak_rss_kib as f64 / 1024.0
    )?;
    Ok(s)
}

/// Replaces the `name` section of BENCHMARKS.md, keeping the others.
pub(crate) fn write_section(path: &PathBuf, name: &str, report: &str) -> Result<()> {
    let (start, end) = (
        format!("<!-- bench:{name}:start -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{start}\n{report}{end}\n");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{section}{}",
            &old[..a],
            old[b + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
