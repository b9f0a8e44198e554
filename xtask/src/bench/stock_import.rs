//! `cargo xtask bench import [--rows N] [--bad-percent P]`
//!
//! The bulk stock import end to end: the release `orderflow-importer`
//! generates an N-row CSV file (default 2,000,000, 3 % bad rows), then
//! streams it to the release `inventory` service, which upserts it into a
//! fresh database; next to `psql \copy` of the same file into a plain
//! one-column table in the same run. Then the same file is imported again
//! (it must change nothing). Records rows/s, seconds, the ratio to \copy
//! and the peak RSS of the server and the importer in BENCHMARKS.md.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{PG, git_commit, prepare, psql, write_section};
use crate::cmd;

const DB: &str = "of_bench_inventory";
const ADDR: &str = "127.0.0.1:50097";

/// One import run, as the importer's --json reports it.
struct Run {
    seconds: f64,
    rows: i64,
    inserted: i64,
    updated: i64,
    unchanged: i64,
    rejected: i64,
    attempts: i64,
    peak_rss_kib: u64,
}

pub fn run<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut rows = 2_000_000u64;
    let mut bad_percent = 3.0f64;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--rows" => rows = value.parse().context("--rows takes a number")?,
            "--bad-percent" => {
                bad_percent = value.parse().context("--bad-percent takes a number")?
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    prepare(&["orderflow-inventory", "orderflow-importer"])?;
    let release = cmd::target_dir().join("release");
    let importer = release.join("orderflow-importer");
    let work = cmd::target_dir().join("bench");
    std::fs::create_dir_all(&work)?;
    let load_before = loadavg();

    let csv = work.join(format!("stock-{rows}.csv"));
    let started = Instant::now();
    cmd::run(
        Command::new(&importer)
            .arg("generate")
            .args(["--rows", &rows.to_string()])
            .args(["--bad-percent", &bad_percent.to_string()])
            .arg(&csv),
        "generating the stock file",
        "see the error above",
    )?;
    let generate_s = started.elapsed().as_secs_f64();
    let csv_bytes = std::fs::metadata(&csv)?.len();

    psql(
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        "postgres",
    )?;
    psql(&format!("CREATE DATABASE {DB}"), "postgres")?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{DB}");
    cmd::output(
        Command::new(release.join("inventory"))
            .arg("migrate")
            .env("DATABASE_URL", &url),
        "migrating the bench database",
        "see the error above",
    )?;

    // The baseline: the same bytes into a plain table, no parsing beyond
    // lines (a CSV-typed \copy would stop at the file's malformed lines).
    psql("CREATE TABLE stock_copy (line text)", DB)?;
    let started = Instant::now();
    let copy_sql = format!(
        "\\copy stock_copy FROM '{}' WITH (FORMAT text, HEADER true)",
        csv.display()
    );
    psql(&copy_sql, DB)?;
    let copy_s = started.elapsed().as_secs_f64();
    psql("DROP TABLE stock_copy", DB)?;
    psql("CHECKPOINT", DB)?;

    let log = work.join("inventory-import.log");
    let mut server = Command::new(release.join("inventory"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("GRPC_LISTEN_ADDR", ADDR)
        .env("GRPC_ADMIN_TOKEN", BENCH_TOKEN)
        // Whatever `cargo xtask up` runs keeps the default metrics port.
        .env("METRICS_LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting inventory serve")?;
    let result = (|| {
        if !cmd::poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            cmd::port_open(ADDR)
        }) {
            bail!(
                "inventory serve did not listen on {ADDR}; see {}",
                log.display()
            );
        }
        let before = cpu(server.id());
        let first = import(&importer, &csv, &work.join("import-1.json"))?;
        let middle = cpu(server.id());
        let again = import(&importer, &csv, &work.join("import-2.json"))?;
        let after = cpu(server.id());
        let server_rss = peak_rss_kib(server.id())?;
        let used = |a: (f64, f64), b: (f64, f64)| (b.0 - a.0, b.1 - a.1);
        Ok((
            first,
            again,
            server_rss,
            used(before, middle),
            used(middle, after),
        ))
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let (first, again, server_rss, cpu_first, cpu_again) = result?;
    let products = psql_value("SELECT count(*) FROM products", DB)?;
    let events = psql_value(
        "SELECT count(*) FROM outbox WHERE event_type = 'inventory.stock_imported'",
        DB,
    )?;
    psql(
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        "postgres",
    )?;
    let load_after = loadavg();

    anyhow::ensure!(
        first.rows == rows as i64
            && products == first.inserted.to_string()
            && again.inserted == 0
            && again.updated == 0
            && again.unchanged == first.inserted,
        "unexpected counts: first {} rows, {} inserted; products {products}; again {} inserted, {} updated, {} unchanged",
        first.rows,
        first.inserted,
        again.inserted,
        again.updated,
        again.unchanged
    );

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut s = String::new();
    writeln!(s, "## Bulk stock import (ImportStock) vs psql \\copy\n")?;
    writeln!(
        s,
        "`cargo xtask bench import --rows {rows} --bad-percent {bad_percent}` at commit {}, {} cores (shared machine), load average {load_before} before and {load_after} after the run (other sessions were building). Release binaries; PostgreSQL at 127.0.0.1 with `fsync` and `synchronous_commit` on, `shared_buffers` 128 MB.\n",
        git_commit(),
        std::thread::available_parallelism().map_or(0, usize::from)
    )?;
    writeln!(
        s,
        "The file: {rows} rows, {:.1} MB, {} bad ({bad_percent} %: negative or non-numeric prices, negative quantities, empty SKUs, malformed lines, unknown currencies, repeated SKUs), generated in {generate_s:.1} s. The import runs generator file → `orderflow-importer` (CSV parsing, SHA-256 of the file, gRPC client stream) → `inventory serve` (validation, one transaction per 5,000-row chunk, two in flight: multi-row upsert over arrays, rejected rows, counts, one outbox event listing the chunk's changed products) → PostgreSQL, into a fresh database with the service's indexes. The baseline is `\\copy` of the same file into a plain one-column table (`FORMAT text`: lines, no CSV parsing, no index), right before the import on the same database.\n",
        csv_bytes as f64 / 1e6,
        first.rejected
    )?;
    writeln!(
        s,
        "| run | seconds | rows/s | time / \\copy time | inserted | updated | unchanged | rejected | calls |"
    )?;
    writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        s,
        "| `psql \\copy` (plain table) | {copy_s:.1} | {:.0} | 1.0 | | | | | |",
        rows as f64 / copy_s
    )?;
    for (name, r) in [("import", &first), ("same file again", &again)] {
        writeln!(
            s,
            "| {name} | {:.1} | {:.0} | {:.1} | {} | {} | {} | {} | {} |",
            r.seconds,
            r.rows as f64 / r.seconds,
            r.seconds / copy_s,
            r.inserted,
            r.updated,
            r.unchanged,
            r.rejected,
            r.attempts
        )?;
    }
    writeln!(
        s,
        "\nPeak RSS (VmHWM): inventory service {:.1} MiB over both imports, importer {:.1} MiB (first run), {:.1} MiB (second). Products after the run: {products}; `inventory.stock_imported` events: {events} (all from the first run: the second writes none).",
        mib(server_rss),
        mib(first.peak_rss_kib),
        mib(again.peak_rss_kib),
    )?;
    writeln!(
        s,
        "\nCPU seconds (user + system, from /proc): first import: inventory service {:.1}, its PostgreSQL backends {:.1}; same file again: {:.1} and {:.1}. PostgreSQL is the bottleneck: two chunk transactions are in flight (commits kept in row order), so both cores work; its share is mostly the upsert's per-row heap, index and WAL work and the chunk events (see services/inventory/README.md).",
        cpu_first.0, cpu_first.1, cpu_again.0, cpu_again.1
    )?;
    println!("{s}");
    write_section(&cmd::workspace_root().join("BENCHMARKS.md"), "import", &s)
}

/// The benchmark's own server's admin token.
const BENCH_TOKEN: &str = "orderflow-bench-admin-token";

fn import(
    importer: &std::path::Path,
    csv: &std::path::Path,
    json: &std::path::Path,
) -> Result<Run> {
    cmd::run(
        Command::new(importer)
            .env("GRPC_ADMIN_TOKEN", BENCH_TOKEN)
            .args(["--addr", &format!("http://{ADDR}"), "--quiet", "--json"])
            .arg(json)
            .arg(csv),
        "orderflow-importer",
        "see its output above",
    )?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let int = |k: &str| {
        v[k].as_i64()
            .with_context(|| format!("importer JSON lacks {k}: {v}"))
    };
    Ok(Run {
        seconds: v["seconds"]
            .as_f64()
            .context("importer JSON lacks seconds")?,
        rows: int("rows")?,
        inserted: int("inserted")?,
        updated: int("updated")?,
        unchanged: int("unchanged")?,
        rejected: int("rejected")?,
        attempts: int("attempts")?,
        peak_rss_kib: v["peak_rss_kib"].as_u64().unwrap_or(0),
    })
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// CPU seconds used so far by the server process and by the database
/// backends of its pool.
fn cpu(server: u32) -> (f64, f64) {
    let backends = psql_value(
        &format!(
            "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = '{DB}' AND pid <> pg_backend_pid()"
        ),
        "postgres",
    )
    .unwrap_or_default();
    let pg = backends
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(cpu_seconds)
        .sum();
    (cpu_seconds(server), pg)
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn psql_value(sql: &str, database: &str) -> Result<String> {
    let out = cmd::output(
        cmd::tool("psql")
            .args(PG)
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql, database]),
        "psql",
        "is PostgreSQL up? `cargo xtask up` starts it",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
