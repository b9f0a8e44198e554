//! `cargo xtask k8s-check`: checks the Kubernetes manifests with no cluster
//! (renders every overlay, validates every object against the pinned
//! Kubernetes schemas, `kubectl apply --dry-run=client`, the policy test and
//! its self-test). The checker is `k8s/check/check.py`; this installs its
//! pinned Python packages into the venv under target/tools (the one that
//! holds grpcurl) and runs it. `cargo xtask test` runs it first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, infra};

const CHECKER: &str = "k8s/check/check.py";
const REQUIREMENTS: &str = "k8s/check/requirements.txt";
/// Holds the requirements last installed, so a warm run skips pip.
const STAMP: &str = ".k8s-check-requirements";

/// Runs the checker; fails when any of its steps failed.
pub fn check() -> Result<()> {
    let python = ensure_python()?;
    let tools = cmd::target_dir().join("tools");
    let mut checker = Command::new(&python);
    checker.arg(CHECKER).arg("--tools").arg(&tools);
    println!("xtask: {}", cmd::describe(&checker));
    let status = checker
        .status()
        .with_context(|| format!("cannot start {}", cmd::describe(&checker)))?;
    if !status.success() {
        bail!(
            "the Kubernetes manifests check failed ({status}; its report is above). \
             Rerun it alone with `cargo xtask k8s-check`"
        );
    }
    Ok(())
}

/// The venv's python with the checker's requirements installed.
fn ensure_python() -> Result<PathBuf> {
    let venv = infra::tools_venv();
    if !venv.join("bin").join("pip").exists() {
        infra::create_venv(&venv)?;
    }
    let wanted = std::fs::read_to_string(REQUIREMENTS)
        .with_context(|| format!("cannot read {REQUIREMENTS}"))?;
    let stamp = venv.join(STAMP);
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        install(&venv)?;
        std::fs::write(&stamp, &wanted)
            .with_context(|| format!("cannot write {}", stamp.display()))?;
    }
    Ok(venv.join("bin").join("python"))
}

fn install(venv: &Path) -> Result<()> {
    println!(
        "xtask: installing the k8s checker's Python packages into {} (pip: {REQUIREMENTS})",
        venv.display()
    );
    cmd::output(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            REQUIREMENTS,
        ]),
        "installing the k8s checker's Python packages",
        &format!(
            "Check that PyPI is reachable, or delete {} and rerun",
            venv.display()
        ),
    )?;
    Ok(())
}
