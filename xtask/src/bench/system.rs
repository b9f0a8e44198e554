//! The whole system for a benchmark: the four services and the relay from
//! one directory of release binaries, with databases and a RabbitMQ vhost
//! of their own, on ports of their own; and what a benchmark reads of it
//! (psql, the management API, /proc).

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, poll_until, port_open, tool},
    infra::{self, MANAGEMENT_URL, PG_HOST, PG_PORT, PG_USER},
};

/// What a bench of the whole system builds: the five binaries and the load
/// generator.
pub(crate) const PACKAGES: [&str; 6] = [
    "orderflow-order",
    "orderflow-inventory",
    "orderflow-payment",
    "orderflow-notification",
    "orderflow-outbox-relay",
    "orderflow-loadgen",
];

/// The saga's services, in start order.
pub(crate) const SERVICES: [&str; 4] = ["order", "inventory", "payment", "notification"];

/// The saga's services and the catalog (its database and ports come after
/// theirs).
pub(crate) const WITH_CATALOG: [&str; 5] =
    ["order", "inventory", "payment", "notification", "catalog"];

/// The benchmark's own services' admin token.
pub(crate) const BENCH_TOKEN: &str = "orderflow-bench-admin-token";

/// Where one system lives: `db_prefix_<service>` databases, a vhost, and
/// ports `50100 + port_base + i` (gRPC), `9100 + port_base + i` (/metrics),
/// `8100 + port_base` (the relay).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub db_prefix: String,
    pub vhost: String,
    pub port_base: u16,
    /// The services it runs: [`SERVICES`] or [`WITH_CATALOG`].
    pub services: &'static [&'static str],
}

impl Layout {
    pub fn database(&self, service: &str) -> String {
        format!("{}_{service}", self.db_prefix)
    }

    pub fn database_url(&self, service: &str) -> String {
        format!(
            "postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{}",
            self.database(service)
        )
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/{}", infra::AMQP_ADDR, self.vhost)
    }

    fn index(service: &str) -> u16 {
        WITH_CATALOG.iter().position(|s| *s == service).unwrap_or(0) as u16
    }

    pub fn grpc_addr(&self, service: &str) -> String {
        format!(
            "127.0.0.1:{}",
            50_100 + self.port_base + Self::index(service)
        )
    }

    pub fn metrics_addr(&self, service: &str) -> String {
        format!(
            "127.0.0.1:{}",
            9_100 + self.port_base + Self::index(service)
        )
    }

    pub fn relay_addr(&self) -> String {
        format!("127.0.0.1:{}", 8_100 + self.port_base)
    }

    /// Fresh databases migrated by `bin`'s services, and a fresh vhost.
    pub fn create(&self, bin: &Path) -> Result<()> {
        for &service in self.services {
            let db = self.database(service);
            psql(
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                "postgres",
            )?;
            psql(&format!("CREATE DATABASE {db}"), "postgres")?;
            cmd::output(
                Command::new(bin.join(service))
                    .arg("migrate")
                    .env("DATABASE_URL", self.database_url(service)),
                &format!("migrating {db}"),
                "see the error above",
            )?;
        }
        vhost(&self.vhost, "DELETE")?;
        vhost(&self.vhost, "PUT")
    }

    /// Drops the databases and the vhost (its quorum queues hold broker
    /// file handles, shared with every test vhost on the machine).
    pub fn remove(&self) {
        for &service in self.services {
            let _ = psql(
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.database(service)
                ),
                "postgres",
            );
        }
        let _ = vhost(&self.vhost, "DELETE");
    }
}

/// The five processes of one run.
pub(crate) struct System {
    pub procs: Vec<Proc>,
    pub relay: Option<Proc>,
    layout: Layout,
    bin: PathBuf,
    work: PathBuf,
    env: EnvFor,
}

/// Environment on top of the bench's defaults, by process name (`order`,
/// ..., `outbox-relay`).
pub(crate) type EnvFor = Box<dyn Fn(&str) -> Vec<(String, String)>>;

impl System {
    /// Starts the services from `bin` with `env` on top of the bench's
    /// defaults (JSON logs at info, no OTLP export, no rate limit: the load
    /// comes from one address), waits until each consumes and serves, then
    /// starts the relay.
    pub fn start(
        bin: &Path,
        layout: &Layout,
        work: &Path,
        env: EnvFor,
        grpcurl: &Path,
    ) -> Result<Self> {
        let mut system = Self {
            procs: Vec::new(),
            relay: None,
            layout: layout.clone(),
            bin: bin.to_owned(),
            work: work.to_owned(),
            env,
        };
        for &service in layout.services {
            let mut cmd = Command::new(bin.join(service));
            cmd.arg("serve")
                .env("DATABASE_URL", layout.database_url(service))
                .env("GRPC_LISTEN_ADDR", layout.grpc_addr(service))
                .env("METRICS_LISTEN_ADDR", layout.metrics_addr(service))
                .env("GRPC_ADMIN_TOKEN", BENCH_TOKEN)
                .env("GRPC_RATE_LIMIT", "0");
            system.common_env(&mut cmd, service);
            system.procs.push(Proc::start(service, &mut cmd, work)?);
        }
        for (i, service) in layout.services.iter().enumerate() {
            let proc = &system.procs[i];
            let grpc = layout.grpc_addr(service);
            let ready = poll_until(Duration::from_secs(60), Duration::from_millis(50), || {
                std::fs::read_to_string(&proc.log).is_ok_and(|text| {
                    text[proc.log_offset.min(text.len())..].contains(r#""message":"consuming""#)
                }) && Command::new(grpcurl)
                    .args(["-plaintext", &grpc, "grpc.health.v1.Health/Check"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"SERVING\""))
            });
            if !ready {
                bail!("{service} did not become ready; see {}", proc.log.display());
            }
        }
        system.start_relay()?;
        Ok(system)
    }

    fn common_env(&self, cmd: &mut Command, name: &str) {
        cmd.env("AMQP_URL", self.layout.amqp_url())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        for (k, v) in (self.env)(name) {
            cmd.env(k, v);
        }
    }

    pub fn start_relay(&mut self) -> Result<()> {
        let sources = self
            .layout
            .services
            .iter()
            .map(|s| format!("{s}={}", self.layout.database_url(s)))
            .collect::<Vec<_>>()
            .join(",");
        let addr = self.layout.relay_addr();
        let mut relay = Command::new(self.bin.join("outbox-relay"));
        relay
            .arg("serve")
            .env("RELAY_SOURCES", sources)
            .env("RELAY_HTTP_ADDR", &addr);
        self.common_env(&mut relay, "outbox-relay");
        self.relay = Some(Proc::start("outbox-relay", &mut relay, &self.work)?);
        if !poll_until(Duration::from_secs(30), Duration::from_millis(20), || {
            port_open(&addr)
        }) {
            bail!("the relay did not listen on {addr}");
        }
        Ok(())
    }

    pub fn stop_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
    }

    /// Every process with its name, the relay last.
    pub fn processes(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().chain(self.relay.as_ref())
    }

    /// SIGTERM to all (the relay first), then waits.
    pub fn stop(mut self) {
        self.stop_relay();
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
    }
}

pub(crate) struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    log_offset: usize,
}

impl Proc {
    pub fn start(name: &str, cmd: &mut Command, work: &Path) -> Result<Self> {
        let log = work.join(format!("{name}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&log)?;
        let log_offset = usize::try_from(file.metadata()?.len()).unwrap_or(0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            log_offset,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = poll_until(Duration::from_secs(30), Duration::from_millis(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn psql(sql: &str, database: &str) -> Result<()> {
    query(sql, database).map(drop)
}

pub(crate) fn query(sql: &str, database: &str) -> Result<String> {
    let out = cmd::output(
        tool("psql")
            .args(["-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-w"])
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql, database]),
        "psql",
        "is PostgreSQL up? `cargo xtask up` starts it",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates (PUT, with guest's permissions) or deletes a vhost.
pub(crate) fn vhost(name: &str, method: &str) -> Result<()> {
    let mut curl = tool("curl");
    curl.args(["-sS", "-m", "10", "-u", "guest:guest", "-X", method])
        .arg(format!("{MANAGEMENT_URL}/api/vhosts/{name}"));
    cmd::output(
        &mut curl,
        &format!("{method} vhost {name}"),
        "is the management API up?",
    )?;
    if method == "PUT" {
        cmd::output(
            tool("curl")
                .args(["-fsS", "-m", "10", "-u", "guest:guest", "-X", "PUT"])
                .args(["-H", "content-type: application/json"])
                .args(["-d", r#"{"configure":".*","write":".*","read":".*"}"#])
                .arg(format!("{MANAGEMENT_URL}/api/permissions/{name}/guest")),
            "granting guest the bench vhost",
            "is the management API up?",
        )?;
    }
    Ok(())
}

pub(crate) fn new_uuid() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("cannot read /proc/sys/kernel/random/uuid")?
        .trim()
        .to_owned())
}

pub(crate) fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime is field 14, stime 15; `fields[0]` is field 3.
    (ticks(11) + ticks(12)) / CLOCK_TICKS
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (x86-64, arm64).
const CLOCK_TICKS: f64 = 100.0;

/// The pids of every process whose command name is `comm` (e.g. all of
/// PostgreSQL's, or RabbitMQ's `beam.smp`).
pub(crate) fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
