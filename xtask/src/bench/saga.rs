//! `cargo xtask bench saga [--rates 50,100,...] [--hot-rates 50,...] [--step SECS]
//! [--baseline REV|DIR|none] [--overload RATE] [--overload-secs SECS] [--section NAME]`
//!
//! The whole system under an open-loop load (`loadgen open-loop`: CreateOrder
//! at a fixed rate, a call sent when due whatever the earlier ones do), in
//! steps of rising rate, with two product mixes: 2,000 products (1–2 lines
//! of quantity 1), and a single hot product. Every step starts from fresh
//! databases and a fresh vhost, runs the five binaries with their defaults
//! (`GRPC_RATE_LIMIT=0` only, as a user trying it would), and measures:
//!
//! - the achieved send rate, CreateOrder p50/p99 (from when each call was
//!   due) and the errors by status code;
//! - CreateOrder → terminal (`orders.updated_at - created_at`, both
//!   PostgreSQL transaction times) p50/p90/p99/max over the step's orders;
//! - what is still queued when the sending stops (PENDING orders, pending
//!   outbox rows, messages in the work queues) and how long it takes until
//!   all three are zero;
//! - CPU per settled order per process (the five binaries, every PostgreSQL
//!   process, RabbitMQ's `beam.smp`) from /proc, and peak RSS.
//!
//! The **sustainable rate** of a mix is the highest step whose saga p99 is
//! under 250 ms, whose backlog drains within 5 s and where every call was
//! answered OK. With a baseline (a git revision built in a worktree, or a
//! directory of its release binaries) every step runs on both builds, their
//! order alternating step by step, so the machine's drift hits both alike.
//! `--overload RATE` then sends RATE/s for `--overload-secs` to the new build
//! and reports what it answered, its peak memory and how the backlog drained.
//! Results replace the `saga` section of BENCHMARKS.md (or `--section`'s).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{
        git_commit, prepare,
        system::{Layout, PACKAGES, SERVICES, System, cpu_seconds, memory_kib, pids_named, query},
        write_section,
    },
    cmd,
    infra::{self, MANAGEMENT_URL},
};

const BINARIES: [&str; 5] = [
    "order",
    "inventory",
    "payment",
    "notification",
    "outbox-relay",
];
/// The saga p99 a sustainable step stays under, and the drain it allows.
const SAGA_P99_LIMIT_MS: f64 = 250.0;
const DRAIN_LIMIT_S: f64 = 5.0;
/// How long a step's backlog may take to drain before the step is written
/// off as not drained.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
const PRODUCTS: usize = 2_000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mix {
    Spread,
    Hot,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Self::Spread => "2,000 products",
            Self::Hot => "one hot product",
        }
    }

    /// The products' ids: deterministic, so every step orders the same rows.
    fn products_sql(self) -> String {
        let (count, on_hand) = match self {
            Self::Spread => (PRODUCTS, 10_000_000),
            Self::Hot => (1, 100_000_000),
        };
        format!(
            "INSERT INTO products (product_id, sku, name, currency, unit_price_minor, on_hand) \
             SELECT md5('bench-{tag}-' || i)::uuid, 'BENCH-{tag}-' || i, 'Bench ' || i, 'EUR', 100, {on_hand} \
             FROM generate_series(1, {count}) i RETURNING product_id",
            tag = self.tag()
        )
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Hot => "hot",
        }
    }
}

/// One build under test.
struct Build {
    name: String,
    bin: PathBuf,
}

/// One step's figures.
struct Step {
    build: usize,
    mix: Mix,
    rate: u32,
    sent_per_s: f64,
    /// Calls answered OK: the orders that must all settle.
    accepted: u64,
    skipped: u64,
    create_p50_ms: f64,
    create_p99_ms: f64,
    errors: BTreeMap<String, u64>,
    saga: [f64; 4],
    confirmed: u64,
    cancelled: u64,
    /// PENDING orders, pending outbox rows, queued messages when sending stopped.
    backlog: (i64, i64, i64),
    drain_s: Option<f64>,
    /// CPU ms per settled order, by process group.
    cpu_ms: Vec<(String, f64)>,
    /// Peak RSS in MiB, by process.
    rss_mib: Vec<(String, f64)>,
}

impl Step {
    fn sustainable(&self) -> bool {
        self.errors.is_empty()
            && self.skipped == 0
            && self.saga[2] < SAGA_P99_LIMIT_MS
            && self.drain_s.is_some_and(|d| d <= DRAIN_LIMIT_S)
            && self.confirmed + self.cancelled == self.accepted
    }
}

struct Options {
    rates: Vec<u32>,
    hot_rates: Vec<u32>,
    step_secs: u32,
    baseline: Option<String>,
    overload: Option<u32>,
    overload_secs: u32,
    /// The BENCHMARKS.md section written (`saga`), so a partial run can be
    /// kept next to the full one.
    section: String,
}

fn parse<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<Options> {
    let mut o = Options {
        rates: vec![50, 100, 200, 300, 400],
        hot_rates: vec![50, 100, 200, 300],
        step_secs: 20,
        baseline: None,
        overload: None,
        overload_secs: 60,
        section: "saga".to_owned(),
    };
    let list = |v: &str| -> Result<Vec<u32>> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .context("rates are a comma-separated list such as 50,100,200")
            })
            .collect()
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag {
            "--rates" => o.rates = list(value)?,
            "--hot-rates" => o.hot_rates = list(value)?,
            "--step" => o.step_secs = value.parse().context("--step takes whole seconds")?,
            "--baseline" => o.baseline = (value != "none").then(|| value.to_owned()),
            "--overload" => o.overload = Some(value.parse().context("--overload takes orders/s")?),
            "--section" => o.section = value.to_owned(),
            "--overload-secs" => {
                o.overload_secs = value
                    .parse()
                    .context("--overload-secs takes whole seconds")?;
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    if o.step_secs < 5 {
        bail!("--step must be at least 5 s");
    }
    Ok(o)
}

pub fn run<'a>(args: impl Iterator<Item = &'a str>) -> Result<()> {
    let options = parse(args)?;
    prepare(&PACKAGES)?;
    let grpcurl = infra::ensure_grpcurl()?;
    let release = cmd::target_dir().join("release");
    let work = cmd::target_dir().join("bench").join("saga");
    std::fs::create_dir_all(&work)?;
    let mut builds = vec![Build {
        name: format!("new ({})", git_commit()),
        bin: release.clone(),
    }];
    if let Some(baseline) = &options.baseline {
        builds.insert(0, baseline_build(baseline)?);
    }
    let layout = Layout {
        db_prefix: "of_bench_saga".to_owned(),
        vhost: "orderflow-bench-saga".to_owned(),
        port_base: 81,
        services: &SERVICES,
    };
    let measured = steps(&builds, &layout, &work, &grpcurl, &options, &release);
    layout.remove();
    let (steps, overload) = measured?;
    let report = render(&builds, &steps, overload.as_ref(), &options)?;
    println!("{report}");
    write_section(
        &cmd::workspace_root().join("BENCHMARKS.md"),
        &options.section,
        &report,
    )
}

/// `DIR` of release binaries, or a git revision built once in a worktree
/// under target/bench/baseline/<rev>.
fn baseline_build(spec: &str) -> Result<Build> {
    let dir = PathBuf::from(spec);
    if dir.join("order").is_file() {
        return Ok(Build {
            name: format!("baseline ({spec})"),
            bin: dir,
        });
    }
    let rev = String::from_utf8_lossy(
        &cmd::output(
            Command::new("git").args(["rev-parse", "--short", &format!("{spec}^{{commit}}")]),
            "resolving the baseline revision",
            "--baseline takes a git revision or a directory of release binaries",
        )?
        .stdout,
    )
    .trim()
    .to_owned();
    let root = cmd::target_dir().join("bench").join("baseline").join(&rev);
    let bin = root.join("bin");
    if BINARIES.iter().all(|b| bin.join(b).is_file()) {
        return Ok(Build {
            name: format!("baseline ({rev})"),
            bin,
        });
    }
    let src = root.join("src");
    if !src.join("Cargo.toml").is_file() {
        let _ = std::fs::remove_dir_all(&src);
        cmd::run(
            Command::new("git")
                .args(["worktree", "add", "--force", "--detach"])
                .arg(&src)
                .arg(&rev),
            "checking out the baseline",
            "see git's error above",
        )?;
    }
    let mut build = cmd::cargo();
    build
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .args(["build", "--release"]);
    for p in &PACKAGES[..5] {
        build.args(["-p", p]);
    }
    cmd::run(
        &mut build,
        "building the baseline",
        "see the build error above",
    )?;
    std::fs::create_dir_all(&bin)?;
    for b in BINARIES {
        std::fs::copy(root.join("target").join("release").join(b), bin.join(b))?;
    }
    Ok(Build {
        name: format!("baseline ({rev})"),
        bin,
    })
}

type Overload = (Step, Vec<String>);

fn steps(
    builds: &[Build],
    layout: &Layout,
    work: &Path,
    grpcurl: &Path,
    options: &Options,
    release: &Path,
) -> Result<(Vec<Step>, Option<Overload>)> {
    let loadgen = release.join("loadgen");
    let mut out = Vec::new();
    let mut flip = false;
    for (mix, rates) in [
        (Mix::Spread, &options.rates),
        (Mix::Hot, &options.hot_rates),
    ] {
        for &rate in rates {
            let order: Vec<usize> = if flip {
                (0..builds.len()).rev().collect()
            } else {
                (0..builds.len()).collect()
            };
            flip = !flip;
            for b in order {
                eprintln!("== {}: {} at {rate} orders/s", builds[b].name, mix.name());
                let step = run_step(
                    b,
                    &builds[b],
                    layout,
                    work,
                    grpcurl,
                    &loadgen,
                    mix,
                    rate,
                    options.step_secs,
                    &mut |_| {},
                )?;
                eprintln!("   {}", summary_line(&step));
                out.push(step);
            }
        }
    }
    let overload = match options.overload {
        None => None,
        Some(rate) => {
            let new = builds.len() - 1;
            eprintln!(
                "== overload: {} at {rate} orders/s for {} s",
                builds[new].name, options.overload_secs
            );
            let mut seen = Vec::new();
            let relay = layout.relay_addr();
            let step = run_step(
                new,
                &builds[new],
                layout,
                work,
                grpcurl,
                &loadgen,
                Mix::Spread,
                rate,
                options.overload_secs,
                &mut |phase| {
                    if let Some(s) = observe(&relay, phase) {
                        seen.push(s);
                    }
                },
            )?;
            eprintln!("   {}", summary_line(&step));
            Some((step, seen))
        }
    };
    Ok((out, overload))
}

/// What /healthz and the lag metric said while the backlog lasted.
fn observe(relay: &str, phase: &str) -> Option<String> {
    let get = |path: &str| {
        cmd::output(
            cmd::tool("curl")
                .args(["-sS", "-m", "5"])
                .arg(format!("http://{relay}{path}")),
            "reading the relay",
            "",
        )
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let health: serde_json::Value = serde_json::from_str(&get("/healthz")?).ok()?;
    let sources = health["sources"].as_object()?;
    let pending: i64 = sources.values().filter_map(|s| s["pending"].as_i64()).sum();
    let lag = sources
        .values()
        .filter_map(|s| s["lag_seconds"].as_f64())
        .fold(0.0, f64::max);
    let metrics = get("/metrics").unwrap_or_default();
    let gauge: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("broker_queue_messages{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    Some(format!(
        "{phase}: /healthz healthy {}, outbox pending {pending} (oldest {lag:.2} s), queued in the consumers' queues {} (`broker_queue_messages` sum {gauge})",
        health["healthy"], health["queued_messages"]
    ))
}

/// CPU seconds so far by process group: the five binaries, PostgreSQL, the
/// broker (`rabbit`: its pids, taken at the step's start so that a
/// `rabbitmqctl` VM does not count).
fn cpu(system: &System, rabbit: &[u32]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = system
        .processes()
        .map(|p| (p.name.clone(), cpu_seconds(p.pid())))
        .collect();
    v.push((
        "postgres".to_owned(),
        pids_named("postgres").into_iter().map(cpu_seconds).sum(),
    ));
    v.push((
        "rabbitmq".to_owned(),
        rabbit.iter().copied().map(cpu_seconds).sum(),
    ));
    v
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| memory_kib(p).1).sum()
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    build_index: usize,
    build: &Build,
    layout: &Layout,
    work: &Path,
    grpcurl: &Path,
    loadgen: &Path,
    mix: Mix,
    rate: u32,
    secs: u32,
    observer: &mut dyn FnMut(&str),
) -> Result<Step> {
    layout.create(&build.bin)?;
    let products = query(&mix.products_sql(), &layout.database("inventory"))?;
    let products_file = work.join(format!("products-{}.txt", mix.tag()));
    std::fs::write(&products_file, products)?;
    let system = System::start(&build.bin, layout, work, Box::new(|_| Vec::new()), grpcurl)?;
    let measured = measure(
        build_index,
        &system,
        layout,
        work,
        loadgen,
        &products_file,
        mix,
        rate,
        secs,
        observer,
    );
    system.stop();
    measured
}

#[allow(clippy::too_many_arguments)]
fn measure(
    build_index: usize,
    system: &System,
    layout: &Layout,
    work: &Path,
    loadgen: &Path,
    products: &Path,
    mix: Mix,
    rate: u32,
    secs: u32,
    observer: &mut dyn FnMut(&str),
) -> Result<Step> {
    let order_db = layout.database("order");
    let started_at = query("SELECT now()", &order_db)?.trim().to_owned();
    let rabbit = pids_named("beam.smp");
    let cpu_before = cpu(system, &rabbit);
    let json = work.join("open-loop.json");
    let _ = std::fs::remove_file(&json);
    let mut sender = Command::new(loadgen)
        .args(["open-loop", "--target"])
        .arg(format!("http://{}", layout.grpc_addr("order")))
        .args([
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{secs}s"),
        ])
        .args(["--max-lines", if mix == Mix::Hot { "1" } else { "2" }])
        .arg("--products")
        .arg(products)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting loadgen")?;
    let mut rabbit_peak = rss_kib(&rabbit);
    // Halfway through: what the backlog looks like under load.
    let half = Instant::now() + Duration::from_secs(u64::from(secs) / 2);
    let mut observed_half = false;
    let sent_ok = loop {
        if let Some(status) = sender.try_wait()? {
            break status.success();
        }
        rabbit_peak = rabbit_peak.max(rss_kib(&rabbit));
        if !observed_half && Instant::now() >= half {
            observer("under load");
            observed_half = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !sent_ok {
        bail!("loadgen failed; see its output above");
    }
    let load: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let settled_json = work.join("settle.json");
    let _ = std::fs::remove_file(&settled_json);
    let mut settle = Command::new(loadgen);
    settle.arg("settle");
    for service in SERVICES {
        settle
            .arg("--database")
            .arg(format!("{service}={}", layout.database_url(service)));
    }
    let mut settle = settle
        .arg("--fanout")
        .arg(fanout(&layout.vhost)?.join(","))
        .args(["--timeout", &format!("{}s", DRAIN_TIMEOUT.as_secs())])
        .arg("--json")
        .arg(&settled_json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting loadgen settle")?;
    let mut observed = Instant::now();
    loop {
        if let Some(status) = settle.try_wait()? {
            anyhow::ensure!(status.success(), "loadgen settle failed; see above");
            break;
        }
        rabbit_peak = rabbit_peak.max(rss_kib(&rabbit));
        if observed.elapsed() >= Duration::from_secs(5) {
            observer("draining");
            observed = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled: serde_json::Value = serde_json::from_slice(&std::fs::read(&settled_json)?)?;
    let left = |key: &str| settled["at_start"][key].as_i64().unwrap_or(0);
    let backlog = (
        left("pending_orders"),
        left("pending_events"),
        left("unapplied_messages"),
    );
    let drain_s = settled["settled_s"].as_f64();
    if drain_s.is_none() {
        eprintln!(
            "   not drained after {DRAIN_TIMEOUT:?}: {}",
            settled["at_end"]
        );
    }
    let cpu_after = cpu(system, &rabbit);
    let saga = query(
        &format!(
            "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0), \
                    coalesce(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms), 0), \
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0), \
                    coalesce(max(ms), 0), \
                    count(*) FILTER (WHERE status = 'CONFIRMED'), \
                    count(*) FILTER (WHERE status = 'CANCELLED') \
             FROM (SELECT status, extract(epoch FROM updated_at - created_at) * 1000 AS ms \
                   FROM orders WHERE created_at >= '{started_at}' AND status <> 'PENDING') s"
        ),
        &order_db,
    )?;
    let f: Vec<f64> = saga
        .trim()
        .split('|')
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    anyhow::ensure!(f.len() == 6, "unexpected saga query result {saga:?}");
    let settled = (f[4] + f[5]).max(1.0);
    let cpu_ms = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|((name, before), (_, after))| (name.clone(), (after - before) * 1000.0 / settled))
        .collect();
    let mut rss_mib: Vec<(String, f64)> = system
        .processes()
        .map(|p| (p.name.clone(), memory_kib(p.pid()).0 as f64 / 1024.0))
        .collect();
    rss_mib.push(("rabbitmq".to_owned(), rabbit_peak as f64 / 1024.0));
    let number = |key: &str| load[key].as_f64().unwrap_or(0.0);
    let errors = load["errors"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(samples) = load["sample_errors"].as_object() {
        for (code, message) in samples {
            eprintln!("   first {code}: {message}");
        }
    }
    Ok(Step {
        build: build_index,
        mix,
        rate,
        sent_per_s: number("sent_per_s"),
        accepted: load["ok"].as_u64().unwrap_or(0),
        skipped: load["skipped"].as_u64().unwrap_or(0),
        create_p50_ms: number("p50_ms"),
        create_p99_ms: number("p99_ms"),
        errors,
        saga: [f[0], f[1], f[2], f[3]],
        confirmed: f[4] as u64,
        cancelled: f[5] as u64,
        backlog,
        drain_s,
        cpu_ms,
        rss_mib,
    })
}

/// `service:event.type=N` for every binding of the vhost's service
/// exchanges: how many queues each event reaches.
fn fanout(vhost: &str) -> Result<Vec<String>> {
    let out = cmd::output(
        cmd::tool("curl")
            .args(["-fsS", "-m", "10", "-u", "guest:guest"])
            .arg(format!("{MANAGEMENT_URL}/api/bindings/{vhost}")),
        "reading the bindings",
        "is the management API up?",
    )?;
    let bindings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let mut counts = BTreeMap::<(String, String), u32>::new();
    for b in &bindings {
        let (Some(source), Some(key)) = (b["source"].as_str(), b["routing_key"].as_str()) else {
            continue;
        };
        if let Some(service) = source.strip_prefix("orderflow.")
            && b["destination_type"] == "queue"
        {
            *counts
                .entry((service.to_owned(), key.to_owned()))
                .or_default() += 1;
        }
    }
    anyhow::ensure!(!counts.is_empty(), "no bindings in vhost {vhost}");
    Ok(counts
        .into_iter()
        .map(|((service, key), n)| format!("{service}:{key}={n}"))
        .collect())
}

fn summary_line(s: &Step) -> String {
    format!(
        "sent {:.0}/s, CreateOrder p50 {:.1} ms p99 {:.1} ms, errors {:?}, saga p50 {:.0} p99 {:.0} max {:.0} ms, backlog {:?}, drained in {}, CPU {:.1} ms/order",
        s.sent_per_s,
        s.create_p50_ms,
        s.create_p99_ms,
        s.errors,
        s.saga[0],
        s.saga[2],
        s.saga[3],
        s.backlog,
        s.drain_s
            .map_or_else(|| "never".to_owned(), |d| format!("{d:.1} s")),
        s.cpu_ms.iter().map(|(_, v)| v).sum::<f64>(),
    )
}

fn render(
    builds: &[Build],
    steps: &[Step],
    overload: Option<&Overload>,
    o: &Options,
) -> Result<String> {
    let date = crate::bench::utc_now();
    let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut s = String::new();
    writeln!(s, "## The saga under an open-loop load\n")?;
    writeln!(
        s,
        "`cargo xtask bench saga --rates {} --hot-rates {} --step {}{}{}` on {date}, {} cores (shared machine). Builds: {}. Every step: fresh databases and vhost, the five release binaries with their defaults and `GRPC_RATE_LIMIT=0`, `loadgen open-loop` sending CreateOrder at the rate for {} s (1–2 lines of quantity 1 over 2,000 products, or 1 line on one hot product); with two builds each step runs on both, the order alternating. Saga = CreateOrder commit → terminal commit (`orders.updated_at - created_at`). Backlog = PENDING orders / pending outbox rows / routed messages not yet applied when sending stopped; drain = until all three are zero (`loadgen settle`: inbox rows counted against the published events times their bindings, not the broker's sampled queue statistics). CPU = ms of CPU per settled order (user + system, /proc) from the step's start to the end of the drain. **Sustainable**: saga p99 < {SAGA_P99_LIMIT_MS:.0} ms, drained within {DRAIN_LIMIT_S:.0} s, every call OK.\n",
        join(&o.rates),
        join(&o.hot_rates),
        o.step_secs,
        o.baseline
            .as_ref()
            .map_or_else(String::new, |b| format!(" --baseline {b}")),
        o.overload.map_or_else(String::new, |r| format!(
            " --overload {r} --overload-secs {}",
            o.overload_secs
        )) + &if o.section == "saga" {
            String::new()
        } else {
            format!(" --section {}", o.section)
        },
        std::thread::available_parallelism().map_or(0, usize::from),
        builds
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        o.step_secs,
    )?;
    for mix in [Mix::Spread, Mix::Hot] {
        if !steps.iter().any(|st| st.mix == mix) {
            continue;
        }
        writeln!(s, "### {}\n", mix.name())?;
        writeln!(
            s,
            "| build | sent/s | CreateOrder p50 / p99 ms | errors | saga p50 / p90 / p99 / max ms | confirmed / cancelled | backlog | drain s | CPU ms/order: order, inv, pay, notif, relay, PG, RMQ = total | peak RSS MiB: order, inv, pay, notif, relay, RMQ |"
        )?;
        writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---|---|")?;
        for step in steps.iter().filter(|st| st.mix == mix) {
            row(&mut s, builds, step)?;
        }
        writeln!(s)?;
        for (i, b) in builds.iter().enumerate() {
            let best = steps
                .iter()
                .filter(|st| st.mix == mix && st.build == i && st.sustainable())
                .map(|st| st.rate)
                .max();
            writeln!(
                s,
                "- {}: sustainable rate **{}**",
                b.name,
                best.map_or_else(
                    || "below the lowest step".to_owned(),
                    |r| format!("{r} orders/s")
                )
            )?;
        }
        writeln!(s)?;
    }
    if let Some((step, seen)) = overload {
        writeln!(
            s,
            "### Overload: {} orders/s for {} s\n",
            step.rate, o.overload_secs
        )?;
        writeln!(
            s,
            "| build | sent/s | CreateOrder p50 / p99 ms | errors | saga p50 / p90 / p99 / max ms | confirmed / cancelled | backlog | drain s | CPU ms/order: order, inv, pay, notif, relay, PG, RMQ = total | peak RSS MiB: order, inv, pay, notif, relay, RMQ |"
        )?;
        writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---|---|")?;
        row(&mut s, builds, step)?;
        writeln!(s, "\nThe relay while the backlog lasted:\n")?;
        for line in seen {
            writeln!(s, "- {line}")?;
        }
        writeln!(s)?;
    }
    Ok(s)
}

fn row(s: &mut String, builds: &[Build], st: &Step) -> Result<()> {
    let errors = if st.errors.is_empty() && st.skipped == 0 {
        "0".to_owned()
    } else {
        let mut e: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if st.skipped > 0 {
            e.push(format!("not sent {}", st.skipped));
        }
        e.join(", ")
    };
    let cpu: Vec<String> = st.cpu_ms.iter().map(|(_, v)| format!("{v:.1}")).collect();
    let total: f64 = st.cpu_ms.iter().map(|(_, v)| v).sum();
    let rss: Vec<String> = st.rss_mib.iter().map(|(_, v)| format!("{v:.0}")).collect();
    writeln!(
        s,
        "| {} @ {} | {:.0} | {:.1} / {:.1} | {errors} | {:.0} / {:.0} / {:.0} / {:.0} | {} / {} | {} / {} / {} | {} | {} = **{total:.1}** | {} |",
        builds[st.build].name,
        st.rate,
        st.sent_per_s,
        st.create_p50_ms,
        st.create_p99_ms,
        st.saga[0],
        st.saga[1],
        st.saga[2],
        st.saga[3],
        st.confirmed,
        st.cancelled,
        st.backlog.0,
        st.backlog.1,
        st.backlog.2,
        st.drain_s
            .map_or_else(|| "never".to_owned(), |d| format!("{d:.1}")),
        cpu.join(", "),
        rss.join(", "),
    )?;
    Ok(())
}
