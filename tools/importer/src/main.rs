//! `orderflow-importer [--addr URL] FILE.csv`: streams a stock file to the
//! inventory service (progress bar, bounded memory, resume after a dropped
//! connection) and writes the rejected rows to FILE.csv.errors.csv.
//! `orderflow-importer generate --rows N OUT.csv` writes a test file.

use std::{
    fs::File,
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orderflow_importer::{file, generate, import};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "orderflow-importer",
    version,
    about = "Bulk stock import into the orderflow inventory service",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    import: ImportArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write a stock file of --rows rows with a share of bad rows.
    Generate(GenerateArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// The CSV file: header `sku,name,unit_price_minor,currency,quantity`.
    file: Option<PathBuf>,
    /// The inventory service's gRPC endpoint.
    #[arg(long, env = "INVENTORY_ADDR", default_value = "http://127.0.0.1:50052")]
    addr: String,
    /// The inventory service's admin token (ImportStock is an admin RPC).
    #[arg(long, env = "GRPC_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Resume this import (the id an earlier run printed) instead of starting a new one.
    #[arg(long)]
    import_id: Option<Uuid>,
    /// Where to write every rejected row (line,sku,reason); default FILE.errors.csv.
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Calls made at most before giving up (each resumes where the last stopped).
    #[arg(long, default_value_t = 10)]
    attempts: u32,
    /// Rows per gRPC message (1 to 1000).
    #[arg(long, default_value_t = 1000)]
    rows_per_message: usize,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Where to write the file.
    out: PathBuf,
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Share of bad rows, in percent.
    #[arg(long, default_value_t = 3.0)]
    bad_percent: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Add description, category and tags columns and draw names from a
    /// product vocabulary ("Vintage oak lamp"), for search benchmarks.
    #[arg(long)]
    details: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Generate(args)) => generate_file(&args),
        None => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(import_file(cli.import)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate_file(args: &GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.bad_percent),
        "--bad-percent must be between 0 and 100"
    );
    let started = Instant::now();
    let out =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let summary = generate::generate(
        out,
        generate::Spec {
            rows: args.rows,
            bad_per_10k: (args.bad_percent * 100.0).round() as u64,
            seed: args.seed,
            details: args.details,
        },
        |_, _| {},
    )?;
    eprintln!(
        "wrote {}: {} rows ({} good, {} bad) in {:.1} s",
        args.out.display(),
        summary.rows,
        summary.good,
        summary.bad,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn import_file(args: ImportArgs) -> anyhow::Result<()> {
    let path = args
        .file
        .context("name the CSV file to import (or `generate`); see --help")?;
    let mut opts = import::Options::new(&args.addr, &path);
    opts.token.clone_from(&args.token);
    if let Some(id) = args.import_id {
        opts.import_id = id;
    }
    opts.max_attempts = args.attempts.max(1);
    opts.rows_per_message = args.rows_per_message.clamp(1, 1000);

    let lines = file::count_lines(&path)?.saturating_sub(1);
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(lines), ProgressDrawTarget::stderr())
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} lines  {per_sec}  ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    eprintln!(
        "import {} of {} to {}",
        opts.import_id,
        path.display(),
        args.addr
    );

    let started = Instant::now();
    let report = import::run(&opts, &progress).await;
    progress.finish_and_clear();
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    let i = &report.import;
    eprintln!(
        "import {}: {} rows in {seconds:.1} s ({:.0} rows/s, {} call(s)): {} inserted, {} updated, {} unchanged, {} rejected",
        i.import_id,
        i.rows,
        i.rows as f64 / seconds.max(1e-9),
        report.attempts,
        i.inserted,
        i.updated,
        i.unchanged,
        i.rejected
    );
    if let Some(kib) = peak_rss_kib() {
        eprintln!("peak RSS of the importer: {:.1} MiB", kib as f64 / 1024.0);
    }
    if i.rejected > 0 {
        let errors_path = args.errors.unwrap_or_else(|| {
            let mut p = path.clone().into_os_string();
            p.push(".errors.csv");
            PathBuf::from(p)
        });
        let mut out = std::io::BufWriter::new(
            File::create(&errors_path)
                .with_context(|| format!("cannot create {}", errors_path.display()))?,
        );
        writeln!(out, "line,sku,reason")?;
        let written = import::all_errors(&args.addr, args.token.as_deref(), opts.import_id, |e| {
            writeln!(
                out,
                "{},{},{}",
                e.row_number,
                csv_field(&e.sku),
                csv_field(&e.reason)
            )?;
            Ok(())
        })
        .await?;
        out.flush()?;
        for e in report.first_errors.iter().take(5) {
            eprintln!("  line {}: {}", e.row_number, e.reason);
        }
        eprintln!(
            "{written} rejected rows written to {}",
            errors_path.display()
        );
    }
    if let Some(json) = args.json {
        let value = serde_json::json!({
            "import_id": i.import_id,
            "rows": i.rows,
            "inserted": i.inserted,
            "updated": i.updated,
            "unchanged": i.unchanged,
            "rejected": i.rejected,
            "seconds": seconds,
            "attempts": report.attempts,
            "peak_rss_kib": peak_rss_kib(),
        });
        std::fs::write(&json, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
    }
    Ok(())
}

/// VmHWM: the most memory this process has had resident (Linux only).
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
