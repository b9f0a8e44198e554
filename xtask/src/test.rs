//! `cargo xtask test`: the Kubernetes manifests check, then the whole test
//! suite against real PostgreSQL and RabbitMQ, exactly as CI runs it.

use std::{
    ffi::OsString,
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};

use crate::{cmd, infra, k8s};

/// Checks the Kubernetes manifests (a few seconds, no cluster), makes sure
/// the servers, grpcurl and Chromium with ChromeDriver are there, then runs
/// every test (nextest when installed, else cargo test), passing `extra` to
/// the runner.
pub fn run(extra: &[String]) -> Result<ExitCode> {
    k8s::check()?;
    infra::ensure_infra()?;
    let grpcurl = infra::ensure_grpcurl()?;
    let browser = infra::ensure_chromium()?;
    let nextest = cmd::succeeds(cmd::cargo().args(["nextest", "--version"]));
    let mut runner = runner(nextest, extra);
    runner
        .env("PATH", path_with(&grpcurl)?)
        .env("GRPCURL", &grpcurl)
        // The dashboard's browser test (outbox-relay/tests/it/browser.rs).
        .env("CHROMEDRIVER", &browser.chromedriver)
        .env("CHROME", &browser.chromium);
    if nextest && in_ci() && std::env::var_os("NEXTEST_PROFILE").is_none() {
        // .config/nextest.toml: report every failure instead of stopping at the first.
        runner.env("NEXTEST_PROFILE", "ci");
    }
    println!("xtask: {}", cmd::describe(&runner));
    let status = runner
        .status()
        .with_context(|| format!("cannot start {}", cmd::describe(&runner)))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("xtask: tests failed ({status})");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => {
            eprintln!("xtask: the test runner was killed ({status})");
            ExitCode::FAILURE
        }
    })
}

/// `--all-targets` leaves doc tests out for both runners (nextest cannot run
/// them), so both run the same tests.
fn runner(nextest: bool, extra: &[String]) -> Command {
    let mut runner = cmd::cargo();
    if nextest {
        runner.args(["nextest", "run"]);
    } else {
        runner.arg("test");
    }
    runner.args(["--workspace", "--all-targets"]).args(extra);
    runner
}

/// PATH with grpcurl's venv first, so tests that shell out to `grpcurl` find it.
fn path_with(grpcurl: &Path) -> Result<OsString> {
    let venv_bin = grpcurl.parent().unwrap_or(grpcurl).to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(venv_bin).chain(std::env::split_paths(&path)))
        .context("cannot build PATH with the grpcurl venv")
}

/// CI sets CI=true (as most CI systems do).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
