//! Small helpers for running external programs with errors that say what
//! failed and how to fix it, and for polling until something is ready.

use std::{
    ffi::OsStr,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Extra places to look for admin tools (`rabbitmq-server`, `pg_ctlcluster`)
/// that a non-root user's PATH usually lacks.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Set once `apt-get update` ran, so several installs in one run update once.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// The repository root, so every command works from any subdirectory.
///
/// `cargo run` sets CARGO_MANIFEST_DIR at run time too; prefer that over the
/// compile-time value in case the checkout moved since the build.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// Cargo's target directory, honouring CARGO_TARGET_DIR like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The cargo that runs us (cargo sets CARGO), so a rustup override is kept.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Finds an executable on PATH or in the sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command for `program`, resolved through [`which`] so sbin tools are
/// found even when PATH lacks them.
pub fn tool(program: &str) -> Command {
    Command::new(which(program).unwrap_or_else(|| PathBuf::from(program)))
}

/// Runs `cmd` with the terminal attached; fails naming `what` and `fix`.
pub fn run(cmd: &mut Command, what: &str, fix: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {}. {fix}", describe(cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status}): {}. {fix}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` capturing its output; fails naming `what` and `fix`, with the
/// program's stderr, when it cannot start or exits non-zero.
pub fn output(cmd: &mut Command, what: &str, fix: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {}. {fix}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}\n{}{}\n{fix}",
            out.status,
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end(),
        );
    }
    Ok(out)
}

/// Whether `cmd` runs and exits 0, discarding its output: for probes.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The command line as a person would type it, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether this process runs as root: apt-get needs it, otherwise use sudo.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A command that runs `program` as root: directly when we are root, else via sudo.
fn as_root(program: &str) -> Command {
    if is_root() {
        tool(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program);
        cmd
    }
}

/// Installs Debian packages non-interactively (after one `apt-get update`).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    let fix = format!(
        "Install them yourself (`sudo apt-get update && sudo apt-get install -y {list}`) and rerun"
    );
    if which("apt-get").is_none() {
        bail!("cannot install {list}: apt-get not found (not a Debian/Ubuntu machine). {fix}");
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run(
            as_root("apt-get").args(["update", "-q"]),
            "apt-get update",
            &fix,
        )?;
    }
    run(
        as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q"])
            .args(packages),
        &format!("installing {list}"),
        &fix,
    )
}

/// Whether something accepts TCP connections at `addr` (e.g. "127.0.0.1:5672").
pub fn port_open(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Calls `ready` every `every` until it returns true or `timeout` passes;
/// returns whether it became ready. Polling instead of fixed sleeps keeps
/// a warm start fast and a slow one working.
pub fn poll_until(timeout: Duration, every: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
}
