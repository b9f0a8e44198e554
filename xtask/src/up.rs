//! `cargo xtask up` / `down`: run the whole local system in the background
//! with the defaults from DESIGN.md, and stop it again.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, poll_until, port_open, tool},
    infra::{self, PG_HOST, PG_PORT, PG_USER},
};

/// One process that `up` runs. Add a row here when a service or the relay lands.
struct Component {
    name: &'static str,
    package: &'static str,
    binary: &'static str,
    /// Its own database: created if missing, migrated with `<binary> migrate`,
    /// passed as DATABASE_URL.
    database: Option<&'static str>,
    /// Passed as GRPC_LISTEN_ADDR; health is checked over grpc.health.v1 here.
    grpc_addr: Option<&'static str>,
    /// /metrics (and the relay's dashboard): METRICS_LISTEN_ADDR of a
    /// service; shown in the summary and used as the health probe of a
    /// component without gRPC.
    http_addr: Option<&'static str>,
    /// Further environment the binary needs (e.g. the relay's source URLs).
    extra_env: &'static [(&'static str, &'static str)],
}

/// The local system, from the table in DESIGN.md ("Configuration and local defaults").
const COMPONENTS: &[Component] = &[
    Component {
        name: "order",
        package: "orderflow-order",
        binary: "order",
        database: Some("orderflow_order"),
        grpc_addr: Some("127.0.0.1:50051"),
        // /metrics (METRICS_LISTEN_ADDR), DESIGN.md's port table.
        http_addr: Some("127.0.0.1:9101"),
        extra_env: &[],
    },
    Component {
        name: "inventory",
        package: "orderflow-inventory",
        binary: "inventory",
        database: Some("orderflow_inventory"),
        grpc_addr: Some("127.0.0.1:50052"),
        http_addr: Some("127.0.0.1:9102"),
        extra_env: &[],
    },
    Component {
        name: "payment",
        package: "orderflow-payment",
        binary: "payment",
        database: Some("orderflow_payment"),
        grpc_addr: Some("127.0.0.1:50053"),
        http_addr: Some("127.0.0.1:9103"),
        extra_env: &[],
    },
    Component {
        name: "notification",
        package: "orderflow-notification",
        binary: "notification",
        database: Some("orderflow_notification"),
        grpc_addr: Some("127.0.0.1:50054"),
        http_addr: Some("127.0.0.1:9104"),
        extra_env: &[],
    },
    Component {
        // The searchable read model, built from inventory's events.
        name: "catalog",
        package: "orderflow-catalog",
        binary: "catalog",
        database: Some("orderflow_catalog"),
        grpc_addr: Some("127.0.0.1:50055"),
        http_addr: Some("127.0.0.1:9105"),
        extra_env: &[],
    },
    Component {
        // Publishes the services' outboxes to RabbitMQ; started after the services,
        // whose `migrate` created the tables it reads.
        name: "outbox-relay",
        package: "orderflow-outbox-relay",
        binary: "outbox-relay",
        database: None,
        grpc_addr: None,
        http_addr: Some("127.0.0.1:8080"),
        extra_env: &[
            (
                "RELAY_SOURCES",
                "order=postgres://postgres@127.0.0.1:5432/orderflow_order,\
                 inventory=postgres://postgres@127.0.0.1:5432/orderflow_inventory,\
                 payment=postgres://postgres@127.0.0.1:5432/orderflow_payment,\
                 notification=postgres://postgres@127.0.0.1:5432/orderflow_notification,\
                 catalog=postgres://postgres@127.0.0.1:5432/orderflow_catalog",
            ),
            ("RELAY_HTTP_ADDR", "127.0.0.1:8080"),
        ],
    },
];

const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the smoke check waits for its order to leave PENDING.
const SAGA_TIMEOUT: Duration = Duration::from_secs(60);
/// The services' own SHUTDOWN_GRACE_PERIOD is 25 s; give them a bit more.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 30;

/// Starts PostgreSQL/RabbitMQ if needed, then every component in the background.
pub fn up() -> Result<()> {
    let started = Instant::now();
    infra::ensure_infra()?;
    infra::upgrade_exchanges()?;
    let grpcurl = infra::ensure_grpcurl()?;
    for db in COMPONENTS.iter().filter_map(|c| c.database) {
        ensure_database(db)?;
    }
    build_release()?;
    let mut pids = Vec::new();
    for c in COMPONENTS {
        if c.database.is_some() {
            migrate(c)?;
        }
        stop_previous(c)?;
        ensure_ports_free(c)?;
        let mut running = start(c)?;
        wait_healthy(c, &mut running, &grpcurl)?;
        pids.push(running.child.id());
    }
    let smoke = smoke_saga(&grpcurl)?;
    print_summary(&pids, &grpcurl, &smoke, started.elapsed());
    Ok(())
}

/// Stops every process recorded in .run/*.pid (not PostgreSQL or RabbitMQ).
pub fn down() -> Result<()> {
    let mut stopped = 0;
    for pid_file in pid_files()? {
        let name = pid_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let binary = COMPONENTS
            .iter()
            .find(|c| c.name == name)
            .map_or(name.as_str(), |c| c.binary);
        if stop_recorded(&pid_file, &name, binary)? {
            stopped += 1;
        }
    }
    if stopped == 0 {
        println!("nothing started by `cargo xtask up` was running");
    }
    println!(
        "PostgreSQL and RabbitMQ keep running (stop them with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop` and `rabbitmqctl stop`)"
    );
    Ok(())
}

// ------------------------------------------------------------------ steps

/// Where pid files and logs live (git-ignored).
fn run_dir() -> PathBuf {
    cmd::workspace_root().join(".run")
}

fn pid_path(c: &Component) -> PathBuf {
    run_dir().join(format!("{}.pid", c.name))
}

fn log_path(c: &Component) -> PathBuf {
    run_dir().join(format!("{}.log", c.name))
}

fn binary_path(c: &Component) -> PathBuf {
    cmd::target_dir().join("release").join(c.binary)
}

fn database_url(db: &str) -> String {
    format!("postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}")
}

/// A psql talking to the local server as postgres.
fn psql() -> Command {
    let mut cmd = tool("psql");
    cmd.args([
        "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres", "-w",
    ]);
    cmd
}

/// Each service owns one database; create it once, keep its data across `up`s.
fn ensure_database(db: &str) -> Result<()> {
    let out = cmd::output(
        psql().args([
            "-tAc",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
        ]),
        &format!("checking for database {db}"),
        "Check that PostgreSQL accepts `psql -h 127.0.0.1 -U postgres`",
    )?;
    if String::from_utf8_lossy(&out.stdout).trim() == "1" {
        return Ok(());
    }
    println!("xtask: creating database {db}");
    cmd::output(
        tool("createdb").args(["-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-w", db]),
        &format!("creating database {db}"),
        "Check that user postgres may create databases",
    )?;
    Ok(())
}

/// One release build of every component: fast enough to use locally.
fn build_release() -> Result<()> {
    let mut build = cmd::cargo();
    build.args(["build", "--release"]);
    for c in COMPONENTS {
        build.args(["-p", c.package]);
    }
    cmd::run(
        &mut build,
        "building the services",
        "Fix the compile errors above and rerun",
    )
}

/// The environment a component's binary reads (orderflow-config).
fn component_env(c: &Component) -> Vec<(String, String)> {
    // Logs go to a file: no ANSI colour codes in it.
    let mut env = vec![("NO_COLOR".to_owned(), "1".to_owned())];
    env.extend(
        c.extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    if let Some(db) = c.database {
        env.push(("DATABASE_URL".to_owned(), database_url(db)));
    }
    if let Some(addr) = c.grpc_addr {
        env.push(("GRPC_LISTEN_ADDR".to_owned(), addr.to_owned()));
        if let Some(metrics) = c.http_addr {
            env.push(("METRICS_LISTEN_ADDR".to_owned(), metrics.to_owned()));
        }
    }
    if c.binary == "outbox-relay" {
        match admin_token(&RELAY_TOKEN) {
            Ok(token) => env.push((RELAY_TOKEN.var.to_owned(), token)),
            Err(e) => eprintln!("xtask: no dashboard token ({e:#}); the dashboard stays off"),
        }
    } else if c.grpc_addr.is_some() {
        match admin_token(&SERVICE_TOKEN) {
            Ok(token) => env.push((SERVICE_TOKEN.var.to_owned(), token)),
            Err(e) => eprintln!("xtask: no admin token ({e:#}); admin RPCs stay off"),
        }
    }
    env
}

/// A local secret: from its variable, else from its file under `.run/`
/// (mode 0600, reused by every `up` so sessions and scripts survive restarts).
struct LocalToken {
    var: &'static str,
    file: &'static str,
}

/// The ops dashboard's token.
const RELAY_TOKEN: LocalToken = LocalToken {
    var: "RELAY_ADMIN_TOKEN",
    file: "relay-admin-token",
};

/// The services' admin RPCs' bearer token (UpsertProduct, AdjustStock, ...).
const SERVICE_TOKEN: LocalToken = LocalToken {
    var: "GRPC_ADMIN_TOKEN",
    file: "admin-token",
};

fn admin_token_path(token: &LocalToken) -> PathBuf {
    run_dir().join(token.file)
}

/// The token's variable, else its file, created with 32 random hex digits
/// if missing.
fn admin_token(token: &LocalToken) -> Result<String> {
    if let Ok(t) = std::env::var(token.var)
        && !t.is_empty()
    {
        return Ok(t);
    }
    let path = admin_token_path(token);
    if let Ok(t) = std::fs::read_to_string(&path)
        && t.trim().len() >= 16
    {
        return Ok(t.trim().to_owned());
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(run_dir())?;
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(f, "{token}")?;
    }
    Ok(token)
}

/// `<binary> migrate` brings the database schema up to date and exits.
fn migrate(c: &Component) -> Result<()> {
    cmd::output(
        Command::new(binary_path(c))
            .arg("migrate")
            .envs(component_env(c)),
        &format!("migrating {}", c.database.unwrap_or(c.name)),
        "Fix the migration (migrations/) or the database and rerun",
    )?;
    Ok(())
}

/// A second `up` restarts cleanly: stop what the previous one left running.
fn stop_previous(c: &Component) -> Result<()> {
    let path = pid_path(c);
    if path.exists() {
        stop_recorded(&path, c.name, c.binary)?;
    }
    Ok(())
}

/// Refuses to start when someone else holds our port: the health check would
/// otherwise talk to that process and report a success that is not ours.
fn ensure_ports_free(c: &Component) -> Result<()> {
    for addr in [c.grpc_addr, c.http_addr].into_iter().flatten() {
        if port_open(addr) {
            let port = addr.rsplit(':').next().unwrap_or(addr);
            bail!(
                "{addr} is already in use by a process that `cargo xtask up` did not start \
                 (see `ss -ltnp 'sport = :{port}'`); stop it and rerun"
            );
        }
    }
    Ok(())
}

/// A component started by this `up`, and where its log of this run begins.
struct Running {
    child: Child,
    log_offset: u64,
}

/// Starts `<binary> serve` detached from the terminal (own process group, so
/// Ctrl-C in the shell does not reach it), output appended to .run/<name>.log.
fn start(c: &Component) -> Result<Running> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_file = log_path(c);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("cannot open {}", log_file.display()))?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    writeln!(log, "--- cargo xtask up: starting {} serve ---", c.binary)?;
    let child = Command::new(binary_path(c))
        .arg("serve")
        .envs(component_env(c))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", binary_path(c).display()))?;
    std::fs::write(pid_path(c), format!("{}\n", child.id()))
        .with_context(|| format!("cannot write {}", pid_path(c).display()))?;
    Ok(Running { child, log_offset })
}

/// Polls health until it answers; fails early if the process exits, and
/// shows the end of this run's log either way.
fn wait_healthy(c: &Component, running: &mut Running, grpcurl: &Path) -> Result<()> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        if let Some(status) = running.child.try_wait()? {
            let _ = std::fs::remove_file(pid_path(c));
            bail!(
                "{} exited during startup ({status}). Last lines of {}:\n{}",
                c.name,
                log_path(c).display(),
                log_tail(&log_path(c), running.log_offset)
            );
        }
        if healthy(c, grpcurl) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} is not healthy after {}s (still running as pid {}; `cargo xtask down` stops it). \
                 Last lines of {}:\n{}",
                c.name,
                HEALTH_TIMEOUT.as_secs(),
                running.child.id(),
                log_path(c).display(),
                log_tail(&log_path(c), running.log_offset)
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// grpc.health.v1 says SERVING, or (without gRPC) the HTTP port accepts.
fn healthy(c: &Component, grpcurl: &Path) -> bool {
    match (c.grpc_addr, c.http_addr) {
        (Some(addr), _) => Command::new(grpcurl)
            .args([
                "-plaintext",
                "-max-time",
                "2",
                addr,
                "grpc.health.v1.Health/Check",
            ])
            .stdin(Stdio::null())
            .output()
            // "NOT_SERVING" must not count, hence the quotes.
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"SERVING\"")),
        (None, Some(addr)) => port_open(addr),
        (None, None) => true,
    }
}

/// The last lines the component wrote since `offset`, for failure messages.
fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_string(&mut text)
    });
    if let Err(e) = read {
        return format!("(cannot read {}: {e})", path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A CreateOrder call as the summary prints it, and what it answered.
struct Smoke {
    command: String,
    response: String,
}

/// The demo product `up` stocks, so the printed example completes the saga.
const DEMO_PRODUCT: &str = "0e3f5a3c-8d1e-4b7a-9c2f-6a1b2c3d4e5f";

/// Runs the examples from the summary once, so they are known to work: stock
/// a product, place an order for it, wait until the saga settled it, list
/// its notifications.
fn smoke_saga(grpcurl: &Path) -> Result<Vec<Smoke>> {
    let addr = |name: &str| {
        COMPONENTS
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.grpc_addr)
            .with_context(|| format!("no {name} component with a gRPC address in COMPONENTS"))
    };
    let token = admin_token(&SERVICE_TOKEN)?;
    let admin_header = format!("authorization: Bearer {token}");
    let shown_header = format!(
        "-H \"authorization: Bearer $(cat {})\" ",
        relative(&admin_token_path(&SERVICE_TOKEN))
    );
    let call_as = |admin: bool, addr: &str, method: &str, body: &str| -> Result<Smoke> {
        let mut command = Command::new(grpcurl);
        command.arg("-plaintext");
        if admin {
            command.args(["-H", &admin_header]);
        }
        let out = cmd::output(
            command.args(["-d", body, addr, method]),
            &format!("the smoke check ({method} through grpcurl)"),
            "See the logs under .run/",
        )?;
        let header = if admin { shown_header.as_str() } else { "" };
        Ok(Smoke {
            command: format!("grpcurl -plaintext {header}-d '{body}' {addr} {method}"),
            response: String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
        })
    };
    let call = |addr: &str, method: &str, body: &str| call_as(false, addr, method, body);
    let mut shown = Vec::new();
    shown.push(call_as(
        true,
        addr("inventory")?,
        "orderflow.inventory.v1.InventoryService/UpsertProduct",
        &format!(
            r#"{{"product_id":"{DEMO_PRODUCT}","sku":"DEMO-MUG","name":"Demo mug","unit_price":{{"amount_minor":1250,"currency":"EUR"}},"on_hand":100,"description":"A stoneware mug for the demo","category":"Kitchen","tags":{{"values":["mug","demo"]}}}}"#
        ),
    )?);
    let create = call(
        addr("order")?,
        "orderflow.order.v1.OrderService/CreateOrder",
        &format!(
            r#"{{"request_id":"{}","customer_id":"{}","customer_email":"ada@example.com","lines":[{{"product_id":"{DEMO_PRODUCT}","quantity":2,"unit_price":{{"amount_minor":1250,"currency":"EUR"}}}}]}}"#,
            new_uuid()?,
            new_uuid()?,
        ),
    )?;
    let order_id = serde_json::from_str::<serde_json::Value>(&create.response)
        .ok()
        .and_then(|v| v["order"]["id"].as_str().map(str::to_owned))
        .with_context(|| {
            format!(
                "CreateOrder answered without an order id: {}",
                create.response
            )
        })?;
    shown.push(create);
    let get_body = format!(r#"{{"order_id":"{order_id}"}}"#);
    let order_addr = addr("order")?;
    let mut settled = None;
    let mut last_error = None;
    poll_until(SAGA_TIMEOUT, Duration::from_millis(200), || {
        match call(
            order_addr,
            "orderflow.order.v1.OrderService/GetOrder",
            &get_body,
        ) {
            Ok(got) if !got.response.contains("ORDER_STATUS_PENDING") => {
                settled = Some(got);
                true
            }
            Ok(_) => false,
            Err(e) => {
                last_error = Some(e);
                false
            }
        }
    });
    if let (None, Some(e)) = (&settled, last_error) {
        return Err(e);
    }
    shown.push(settled.with_context(|| {
        format!(
            "order {order_id} is still PENDING after {}s: see .run/*.log",
            SAGA_TIMEOUT.as_secs()
        )
    })?);
    shown.push(call(
        addr("notification")?,
        "orderflow.notification.v1.NotificationService/ListNotifications",
        &get_body,
    )?);
    // The catalog has the product once inventory's events reached it, and
    // shows the units the order took.
    let catalog_addr = addr("catalog")?;
    let mut found = None;
    poll_until(SAGA_TIMEOUT, Duration::from_millis(200), || {
        match call(
            catalog_addr,
            "orderflow.catalog.v1.CatalogService/SearchProducts",
            r#"{"query":"demo mug"}"#,
        ) {
            Ok(hit) if hit.response.contains(DEMO_PRODUCT) => {
                found = Some(hit);
                true
            }
            _ => false,
        }
    });
    shown.push(found.with_context(|| {
        format!(
            "the catalog does not find the demo product after {}s: see .run/catalog.log",
            SAGA_TIMEOUT.as_secs()
        )
    })?);
    Ok(shown)
}

/// A random (v4) UUID from the kernel: Linux-only like the rest of xtask,
/// and no extra crate.
fn new_uuid() -> Result<String> {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("cannot read /proc/sys/kernel/random/uuid")?;
    Ok(uuid.trim().to_owned())
}

/// What runs where, how to call it and how to stop it.
fn print_summary(pids: &[u32], grpcurl: &Path, smoke: &[Smoke], took: Duration) {
    println!("\norderflow is up ({:.1}s):", took.as_secs_f64());
    for (c, pid) in COMPONENTS.iter().zip(pids) {
        let parts: Vec<String> = [
            Some(format!("pid {pid:<7}")),
            c.grpc_addr.map(|a| format!("gRPC {a}")),
            c.http_addr.map(|a| format!("metrics http://{a}/metrics")),
            c.database.map(|db| format!("db {db}")),
            Some(format!("log {}", relative(&log_path(c)))),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!("  {:<13} {}", c.name, parts.join("  "));
    }
    println!("  PostgreSQL    {PG_HOST}:{PG_PORT} (user {PG_USER}, no password)");
    println!(
        "  RabbitMQ      amqp://guest:guest@{}, management API {} (guest/guest)",
        infra::AMQP_ADDR,
        infra::MANAGEMENT_URL
    );
    println!(
        "\nOps dashboard: http://127.0.0.1:8080/ (log in with your name and the token: `cat {}`)",
        relative(&admin_token_path(&RELAY_TOKEN))
    );
    println!("  the same on the command line: target/release/outbox-relay --help");
    println!(
        "\nMetrics (Prometheus text): {}",
        COMPONENTS
            .iter()
            .filter_map(|c| c
                .http_addr
                .map(|a| format!("{} http://{a}/metrics", c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4317) before `cargo xtask up` to export them over OTLP/gRPC"
    );
    let venv_bin = grpcurl.parent().unwrap_or(grpcurl);
    println!(
        "\ngrpcurl: {}\n  (or `source {}/activate` to put it on PATH)",
        grpcurl.display(),
        venv_bin.display()
    );
    println!(
        "\nThe saga, run just now (stock a product, order it, the order settles, notifications, the catalog finds it):"
    );
    for step in smoke {
        println!("  {}", step.command);
        for line in step.response.lines() {
            println!("    {line}");
        }
    }
    println!("\nStop with: cargo xtask down");
}

/// A path relative to the repository root when it is inside it: shorter to read.
fn relative(path: &Path) -> String {
    path.strip_prefix(cmd::workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

// -------------------------------------------------------------- processes

/// Every .run/*.pid, i.e. everything a previous `up` started.
fn pid_files() -> Result<Vec<PathBuf>> {
    let dir = run_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pid"))
        .collect();
    files.sort();
    Ok(files)
}

/// Stops the process a pid file names, if it is still ours, and removes the
/// file; returns whether something was running.
fn stop_recorded(pid_file: &Path, name: &str, binary: &str) -> Result<bool> {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let was_running = match pid {
        Some(pid) if is_running(pid, binary) => {
            stop(pid, name, binary)?;
            true
        }
        _ => false,
    };
    std::fs::remove_file(pid_file)
        .with_context(|| format!("cannot remove {}", pid_file.display()))?;
    Ok(was_running)
}

/// SIGTERM, a grace period for in-flight requests, then SIGKILL.
fn stop(pid: u32, name: &str, binary: &str) -> Result<()> {
    println!("stopping {name} (pid {pid})");
    signal(pid, "TERM")?;
    if poll_until(STOP_TIMEOUT, Duration::from_millis(100), || {
        !is_running(pid, binary)
    }) {
        return Ok(());
    }
    println!(
        "{name} did not exit within {}s; sending SIGKILL",
        STOP_TIMEOUT.as_secs()
    );
    signal(pid, "KILL")?;
    if !poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        !is_running(pid, binary)
    }) {
        bail!("{name} (pid {pid}) survives SIGKILL; look at `ps -o pid,stat,cmd -p {pid}`");
    }
    Ok(())
}

/// Sends a signal with kill(1): no unsafe code, no extra crate.
fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .context("cannot run kill(1)")?;
    // It may have exited between our check and the signal; the poll decides.
    if !status.success() && std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        bail!("kill -{sig} {pid} failed ({status}); are you allowed to signal it?");
    }
    Ok(())
}

/// Whether `pid` is alive (not a zombie nobody reaped) and runs `binary`, so
/// a recycled pid never gets us to kill an unrelated process.
fn is_running(pid: u32, binary: &str) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| process_state(&stat))
        .is_some_and(|state| !matches!(state, 'Z' | 'X'));
    alive && argv0_is(pid, binary)
}

/// The state letter of a /proc/<pid>/stat line (after the parenthesised name,
/// which may itself contain spaces or parentheses).
fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether the program of `pid` is named `binary`.
fn argv0_is(pid: u32, binary: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        Path::new(&*String::from_utf8_lossy(argv0))
            .file_name()
            .is_some_and(|f| f == binary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_after_the_last_parenthesis() {
        assert_eq!(process_state("42 (order) S 1 42"), Some('S'));
        assert_eq!(process_state("42 (we) ird) Z 1 42"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn this_process_is_running_under_its_own_name() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(is_running(me, name));
        assert!(!is_running(me, "order"));
    }

    #[test]
    fn component_names_and_ports_are_unique() {
        let mut names: Vec<_> = COMPONENTS.iter().map(|c| c.name).collect();
        let mut addrs: Vec<_> = COMPONENTS
            .iter()
            .flat_map(|c| [c.grpc_addr, c.http_addr])
            .flatten()
            .collect();
        let (n, a) = (names.len(), addrs.len());
        names.sort_unstable();
        names.dedup();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!((names.len(), addrs.len()), (n, a));
    }
}
