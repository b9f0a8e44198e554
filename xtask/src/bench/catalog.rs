//! `cargo xtask bench catalog [--products N] [--search-secs S] [--clients 1,8,32]
//! [--saga-rate R] [--saga-secs S]`
//!
//! The catalog under a real load, on the five release services and the
//! relay (fresh databases and vhost):
//!
//! 1. **Catch-up.** `orderflow-importer generate --details` writes N
//!    products (default 1,000,000: vocabulary names such as "Vintage oak
//!    lamp", a description, a category, tags), the importer streams them
//!    through inventory's ImportStock, and the catalog applies the import's
//!    events as they come. Reported: the import's own time and rate, the
//!    time until the catalog holds all N products (from the import's start),
//!    the rate it applied them at, and the ratio of the two rates.
//! 2. **Search.** `loadgen search` at each client count, closed loop over a
//!    fixed set of queries (broad, narrow, phrase, prefix, OR, exclusion, a
//!    typo, empty), p50/p99 over S seconds; next to the same queries as the
//!    plain baseline a first version would write (`name ILIKE ALL('%w%',...)
//!    ORDER BY name LIMIT 20`, over SQL on the same table).
//! 3. **Freshness under the saga.** `loadgen open-loop` sends CreateOrder at
//!    R/s for S s over 2,000 of the imported products; the catalog's
//!    `catalog_event_freshness_seconds` histogram (event time → applied) for
//!    the reservations gives p50/p99 of that window.
//!
//! Results replace the `catalog` section of BENCHMARKS.md.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{
        git_commit, prepare,
        system::{BENCH_TOKEN, Layout, PACKAGES, System, WITH_CATALOG, cpu_seconds, query},
        utc_now, write_section,
    },
    cmd::{self, poll_until},
    infra,
};

/// The searches, each as a user types it (a trailing space ends a word).
const QUERIES: [(&str, &str); 9] = [
    ("broad word", "lamp "),
    ("two words", "oak desk "),
    ("phrase and word", "\"vintage brass\" lamp "),
    ("typing (prefix)", "wireless headph"),
    ("OR", "ceramic OR glass vase "),
    ("exclusion", "linen cushion -velvet "),
    ("category word", "kitchen teapot "),
    ("typo", "lanterm "),
    ("empty (browse by name)", ""),
];

struct Options {
    products: u64,
    search_secs: u32,
    clients: Vec<u32>,
    saga_rate: u32,
    saga_secs: u32,
}

fn parse<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<Options> {
    let mut o = Options {
        products: 1_000_000,
        search_secs: 10,
        clients: vec![1, 8, 32],
        saga_rate: 200,
        saga_secs: 20,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--products" => o.products = value.parse().context("--products takes a number")?,
            "--search-secs" => {
                o.search_secs = value.parse().context("--search-secs takes whole seconds")?;
            }
            "--clients" => {
                o.clients = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--clients takes a list such as 1,8,32")?;
            }
            "--saga-rate" => o.saga_rate = value.parse().context("--saga-rate takes orders/s")?,
            "--saga-secs" => o.saga_secs = value.parse().context("--saga-secs takes seconds")?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(o)
}

pub fn run<'a>(args: impl Iterator<Item = &'a str>) -> Result<()> {
    let o = parse(args)?;
    let mut packages: Vec<&str> = PACKAGES.to_vec();
    packages.extend(["orderflow-catalog", "orderflow-importer"]);
    prepare(&packages)?;
    let grpcurl = infra::ensure_grpcurl()?;
    let release = cmd::target_dir().join("release");
    let work = cmd::target_dir().join("bench").join("catalog");
    std::fs::create_dir_all(&work)?;
    let layout = Layout {
        db_prefix: "of_bench_catalog".to_owned(),
        vhost: "orderflow-bench-catalog".to_owned(),
        port_base: 71,
        services: &WITH_CATALOG,
    };
    layout.create(&release)?;
    let measured = (|| {
        let system = System::start(&release, &layout, &work, Box::new(|_| Vec::new()), &grpcurl)?;
        let result = measure(&o, &layout, &system, &work);
        system.stop();
        result
    })();
    layout.remove();
    let report = render(&o, &measured?)?;
    println!("{report}");
    write_section(
        &cmd::workspace_root().join("BENCHMARKS.md"),
        "catalog",
        &report,
    )
}

struct Measured {
    import_s: f64,
    catch_up_s: f64,
    catalog_cpu_s: f64,
    products: u64,
    searches: Vec<(u32, serde_json::Value, serde_json::Value)>,
    freshness: Option<(f64, f64, u64)>,
    orders: u64,
}

fn measure(
    o: &Options,
    layout: &Layout,
    system: &System,
    work: &std::path::Path,
) -> Result<Measured> {
    let release = cmd::target_dir().join("release");
    let catalog_db = layout.database("catalog");
    let csv = work.join(format!("catalog-{}.csv", o.products));
    cmd::run(
        Command::new(release.join("orderflow-importer"))
            .args(["generate", "--details", "--bad-percent", "0", "--rows"])
            .arg(o.products.to_string())
            .arg(&csv),
        "generating the product file",
        "see the error above",
    )?;
    let catalog_pid = system
        .procs
        .iter()
        .find(|p| p.name == "catalog")
        .map(super::system::Proc::pid)
        .context("the catalog is not running")?;
    let cpu_before = cpu_seconds(catalog_pid);
    let started = Instant::now();
    let json = work.join("import.json");
    let mut importer = Command::new(release.join("orderflow-importer"))
        .env("GRPC_ADMIN_TOKEN", BENCH_TOKEN)
        .args(["--quiet", "--addr"])
        .arg(format!("http://{}", layout.grpc_addr("inventory")))
        .arg("--json")
        .arg(&json)
        .arg(&csv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the importer")?;
    let count = || -> u64 {
        query(
            "SELECT count(*) FROM catalog_products WHERE name IS NOT NULL",
            &catalog_db,
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    };
    // Caught up: the catalog applied as many import events as inventory
    // wrote, read from its /metrics (a count(*) of the growing table every
    // poll would cost the database a scan each time).
    let metrics = layout.metrics_addr("catalog");
    let mut import_s = None;
    let mut expected = None;
    let caught_up = poll_until(
        Duration::from_secs(3600),
        Duration::from_millis(100),
        || {
            if import_s.is_none() && matches!(importer.try_wait(), Ok(Some(_))) {
                import_s = Some(started.elapsed().as_secs_f64());
                expected = query(
                    "SELECT count(*) FROM outbox WHERE event_type = 'inventory.stock_imported'",
                    &layout.database("inventory"),
                )
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            }
            expected.is_some_and(|e| applied_events(&metrics, "inventory.stock_imported") >= e)
        },
    );
    let catch_up_s = started.elapsed().as_secs_f64();
    let catalog_cpu_s = cpu_seconds(catalog_pid) - cpu_before;
    if !importer.wait()?.success() {
        bail!("the importer failed; see its output above");
    }
    let held = count();
    if !caught_up || held != o.products {
        bail!(
            "the catalog holds {held} of {} products (caught up: {caught_up})",
            o.products
        );
    }
    let import_s = import_s.context("the importer's end was not seen")?;
    // Autovacuum would analyze the table within a minute; both the search
    // and the baseline are measured on current statistics.
    query("VACUUM ANALYZE catalog_products", &catalog_db)?;

    let loadgen = release.join("loadgen");
    let mut searches = Vec::new();
    for &c in &o.clients {
        let run = |ilike: bool| -> Result<serde_json::Value> {
            let mut cmd = Command::new(&loadgen);
            cmd.args(["search", "--concurrency", &c.to_string()]).args([
                "--duration",
                &format!("{}s", o.search_secs),
                "--warmup",
                "2s",
            ]);
            if ilike {
                cmd.arg("--ilike-database")
                    .arg(layout.database_url("catalog"));
            } else {
                cmd.arg("--target")
                    .arg(format!("http://{}", layout.grpc_addr("catalog")));
            }
            for (_, q) in QUERIES {
                cmd.arg(format!("--query={q}"));
            }
            let out = cmd::output(&mut cmd, "loadgen search", "see its output above")?;
            Ok(serde_json::from_slice(&out.stdout)?)
        };
        let catalog = run(false)?;
        let ilike = run(true)?;
        searches.push((c, catalog, ilike));
    }

    // Freshness while orders flow: reservations of imported products.
    let products = work.join("saga-products.txt");
    std::fs::write(
        &products,
        query(
            "SELECT product_id FROM products ORDER BY product_id LIMIT 2000",
            &layout.database("inventory"),
        )?,
    )?;
    let before = freshness_buckets(&layout.metrics_addr("catalog"))?;
    let open_loop = work.join("open-loop.json");
    cmd::output(
        Command::new(&loadgen)
            .args(["open-loop", "--target"])
            .arg(format!("http://{}", layout.grpc_addr("order")))
            .args(["--rate", &o.saga_rate.to_string()])
            .args(["--duration", &format!("{}s", o.saga_secs)])
            .arg("--products")
            .arg(&products)
            .arg("--json")
            .arg(&open_loop),
        "loadgen open-loop",
        "see its output above",
    )?;
    let orders: u64 = query("SELECT count(*) FROM orders", &layout.database("order"))?
        .trim()
        .parse()
        .unwrap_or(0);
    // Until every reservation the orders caused is applied: the catalog
    // counted as many as inventory wrote once no order is PENDING.
    let settled = poll_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let pending = query(
            "SELECT count(*) FROM orders WHERE status = 'PENDING'",
            &layout.database("order"),
        );
        let written = query(
            "SELECT count(*) FROM outbox WHERE event_type = 'inventory.reserved'",
            &layout.database("inventory"),
        );
        match (pending, written) {
            (Ok(p), Ok(w)) if p.trim() == "0" => w.trim().parse::<u64>().is_ok_and(|w| {
                applied_events(&layout.metrics_addr("catalog"), "inventory.reserved") >= w
            }),
            _ => false,
        }
    });
    if !settled {
        bail!("the orders' reservations did not all reach the catalog within 60 s");
    }
    let after = freshness_buckets(&layout.metrics_addr("catalog"))?;
    let window: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(l, _)| l == le).map_or(0, |(_, n)| *n);
            (*le, n - was.min(*n))
        })
        .collect();
    let freshness = window
        .last()
        .map(|&(_, total)| total)
        .filter(|&t| t > 0)
        .map(|total| {
            (
                bucket_quantile(&window, 0.5),
                bucket_quantile(&window, 0.99),
                total,
            )
        });
    Ok(Measured {
        import_s,
        catch_up_s,
        catalog_cpu_s,
        products: o.products,
        searches,
        freshness,
        orders,
    })
}

/// `catalog_events_applied_total{stream}` from the catalog's /metrics (0
/// when it cannot be read yet).
fn applied_events(metrics_addr: &str, stream: &str) -> u64 {
    let Ok(out) = cmd::output(
        Command::new("curl").args(["-fsS", "-m", "5", &format!("http://{metrics_addr}/metrics")]),
        "reading the catalog's /metrics",
        "is the catalog running?",
    ) else {
        return 0;
    };
    let needle = format!("stream=\"{stream}\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("catalog_events_applied_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The cumulative buckets `(le, count)` of the reservations' freshness.
fn freshness_buckets(metrics_addr: &str) -> Result<Vec<(f64, u64)>> {
    let out = cmd::output(
        Command::new("curl").args([
            "-fsS",
            "-m",
            "10",
            &format!("http://{metrics_addr}/metrics"),
        ]),
        "reading the catalog's /metrics",
        "is the catalog running?",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut buckets = Vec::new();
    for line in text.lines() {
        if !line.starts_with("catalog_event_freshness_seconds_bucket{")
            || !line.contains("stream=\"inventory.reserved\"")
        {
            continue;
        }
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(|v| {
                if v == "+Inf" {
                    f64::INFINITY
                } else {
                    v.parse().unwrap_or(f64::NAN)
                }
            });
        let n = line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        if let (Some(le), Some(n)) = (le, n) {
            buckets.push((le, n));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(buckets)
}

/// A quantile from cumulative buckets, interpolated within its bucket (as
/// Prometheus' histogram_quantile does), in milliseconds.
fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return lower.0 * 1000.0;
            }
            let span = (n - lower.1) as f64;
            let within = if span > 0.0 {
                (rank - lower.1 as f64) / span
            } else {
                1.0
            };
            return (lower.0 + (le - lower.0) * within) * 1000.0;
        }
        lower = (le, n);
    }
    lower.0 * 1000.0
}

fn render(o: &Options, m: &Measured) -> Result<String> {
    let mut s = String::new();
    let import_rate = m.products as f64 / m.import_s;
    let catalog_rate = m.products as f64 / m.catch_up_s;
    writeln!(s, "## The catalog: catch-up, search, freshness\n")?;
    writeln!(
        s,
        "`cargo xtask bench catalog --products {} --search-secs {} --clients {} --saga-rate {} --saga-secs {}` on {} at {}, 2 cores (shared machine). The five release services and the relay on fresh databases and a fresh vhost, with their defaults (`GRPC_RATE_LIMIT=0`).\n",
        o.products,
        o.search_secs,
        o.clients
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        o.saga_rate,
        o.saga_secs,
        utc_now(),
        git_commit()
    )?;
    writeln!(
        s,
        "### Catch-up: {} products through ImportStock\n",
        m.products
    )?;
    writeln!(
        s,
        "`orderflow-importer generate --details` (names like \"Vintage oak lamp\" from 24 adjectives × 16 materials × 40 nouns, a description, one of 10 categories, 1-3 tags), streamed by `orderflow-importer` to inventory; the catalog applies the import's `inventory.stock_imported` events (one per 5,000-row chunk) as the relay publishes them. Catch-up is from the import's start until the catalog holds every product.\n"
    )?;
    writeln!(s, "| measure | value |\n|---|---:|")?;
    writeln!(s, "| import (ImportStock), s | {:.1} |", m.import_s)?;
    writeln!(s, "| import rate, products/s | {import_rate:.0} |")?;
    writeln!(s, "| catalog caught up after, s | {:.1} |", m.catch_up_s)?;
    writeln!(s, "| catalog apply rate, products/s | {catalog_rate:.0} |")?;
    writeln!(
        s,
        "| **catalog rate / import rate** | **{:.2}** (target ≥ 0.5) |",
        catalog_rate / import_rate
    )?;
    writeln!(
        s,
        "| catalog CPU during catch-up, s (µs per product) | {:.1} ({:.0}) |\n",
        m.catalog_cpu_s,
        m.catalog_cpu_s * 1e6 / m.products as f64
    )?;
    writeln!(s, "### Search over {} products\n", m.products)?;
    writeln!(
        s,
        "`loadgen search`, closed loop, each client cycling through the queries {}, page size 20, {} s after a 2 s warm-up. Baseline: the same queries as `name ILIKE ALL('%word%', ...) ORDER BY name LIMIT 20` over SQL (prepared, one connection per client) on the same table (no index can serve it).\n",
        QUERIES
            .iter()
            .map(|(what, q)| format!("`{q}` ({what})"))
            .collect::<Vec<_>>()
            .join(", "),
        o.search_secs
    )?;
    writeln!(
        s,
        "| clients | SearchProducts p50 / p99 ms | calls/s | errors | ILIKE p50 / p99 ms | calls/s | errors |"
    )?;
    writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|")?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for (c, cat, ilike) in &m.searches {
        writeln!(
            s,
            "| {c} | {:.1} / **{:.1}** | {:.0} | {} | {:.1} / {:.1} | {:.0} | {} |",
            f(cat, "p50_ms"),
            f(cat, "p99_ms"),
            f(cat, "calls_per_second"),
            cat["errors"],
            f(ilike, "p50_ms"),
            f(ilike, "p99_ms"),
            f(ilike, "calls_per_second"),
            ilike["errors"],
        )?;
    }
    writeln!(s)?;
    writeln!(s, "### Freshness while the saga runs\n")?;
    match m.freshness {
        Some((p50, p99, n)) => writeln!(
            s,
            "`loadgen open-loop` at {}/s for {} s over 2,000 of the imported products ({} orders): of the {n} reservations the catalog applied, event time (inventory's commit) → applied in the catalog, from `catalog_event_freshness_seconds` (buckets 25 % apart, interpolated): p50 **{p50:.0} ms**, p99 **{p99:.0} ms**.",
            o.saga_rate, o.saga_secs, m.orders
        )?,
        None => writeln!(
            s,
            "No reservation reached the catalog: see target/bench/catalog/*.log."
        )?,
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let b = [(0.001, 0), (0.002, 50), (0.004, 100), (f64::INFINITY, 100)];
        assert!((bucket_quantile(&b, 0.5) - 2.0).abs() < 1e-9);
        assert!((bucket_quantile(&b, 0.75) - 3.0).abs() < 1e-9);
    }
}
