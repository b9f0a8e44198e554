//! The gateway's circuit breaker in the service: the app built from its
//! variables (`PAYMENT_BREAKER_*`) on a fresh database, its `/metrics`
//! scraped and parsed as OpenMetrics text, the `charge` handler driven in a
//! transaction as the consumer runtime does.
//!
//! Its own test binary: it configures the process's gateway (the breaker
//! is per process), which no other test may share, whatever the runner.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{net::SocketAddr, time::Duration};

use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use orderflow_consumer::{Handler as _, HandlerError, HandlerResult};
use orderflow_events::{
    CloudEvent,
    inventory::{InventoryReserved, ReservedLine},
};
use orderflow_payment::{
    MIGRATIONS,
    app::Application,
    config,
    gateway::{self, TOKEN_GATEWAY_ERROR},
    handlers::Charge,
};
use orderflow_testkit::{TestDatabase, TestServer, service_env, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// `GET /metrics`, parsed; a parse error fails the test.
async fn scrape(addr: SocketAddr) -> Exposition {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "GET /metrics: {head}");
    openmetrics_parser::openmetrics::parse_openmetrics(body)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics text: {e:?}\n{body}"))
}

/// The value of family `name`'s sample with `labels` (a gauge's value, a
/// counter's total); `None` when there is no such sample.
fn value(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .families
        .get(name)?
        .iter_samples()
        .find(|sample| {
            sample.get_labelset().is_ok_and(|set| {
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
        })
        .map(|sample| match &sample.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(g) => g.as_f64(),
            other => panic!("{name}: unexpected sample {other:?}"),
        })
}

fn state(m: &Exposition) -> Option<f64> {
    value(m, "payment_gateway_circuit_state", &[])
}

fn transitions(m: &Exposition, to: &str) -> f64 {
    value(m, "payment_gateway_circuit_transitions", &[("to", to)]).unwrap_or(0.0)
}

fn calls(m: &Exposition, outcome: &str) -> f64 {
    value(m, "payment_gateway_calls", &[("outcome", outcome)]).unwrap_or(0.0)
}

fn reserved(token: &str) -> CloudEvent<InventoryReserved> {
    CloudEvent::new(
        "orderflow/inventory",
        InventoryReserved {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::new_v4(),
            customer_email: "ada@example.com".into(),
            currency: "EUR".into(),
            total_minor: 2500,
            payment_token: token.into(),
            lines: vec![ReservedLine {
                product_id: Uuid::new_v4(),
                quantity: 1,
                stock: None,
            }],
        },
    )
}

/// Runs the process's `charge` handler in one transaction, rolled back when
/// it fails, as the consumer runtime does.
async fn charge(db: &TestDatabase, event: CloudEvent<InventoryReserved>) -> HandlerResult {
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    conn.transaction(async |conn| Charge::default().handle(conn, event).await)
        .await
}

async fn count(db: &TestDatabase, table: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let rows: Vec<Count> = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .load(&mut conn)
        .await
        .unwrap();
    rows[0].n
}

fn transient(result: HandlerResult) -> String {
    match result {
        Err(HandlerError::Transient(message)) => message,
        other => panic!("expected a transient handler error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_failures_open_the_breaker_charges_fail_fast_and_a_trial_after_the_cooldown_closes_it()
 {
    orderflow_telemetry::init_for_tests();
    let db = TestDatabase::new("payment", MIGRATIONS).await;
    let mut env = service_env(&db);
    env.insert(config::BREAKER_FAILURES, "3");
    env.insert(config::BREAKER_COOLDOWN, "200ms");
    let service_config = config::from_source(&env).expect("valid test config");
    gateway::configure_process(config::breaker_from_source(&env).expect("valid breaker config"))
        .unwrap();
    let app = Application::build(&service_config)
        .await
        .expect("application builds");
    let metrics = app.metrics_addr().unwrap();
    let server = TestServer::spawn(app.grpc_addr().unwrap(), |stop| app.serve_grpc_until(stop));

    // Closed to start with.
    let m = scrape(metrics).await;
    assert_eq!(state(&m), Some(0.0));
    assert_eq!(transitions(&m, "open"), 0.0);

    // A good card and a declined one are answers, not failures.
    charge(&db, reserved("tok_visa")).await.unwrap();
    charge(&db, reserved("tok_declined")).await.unwrap();

    // Two outages: errors, still closed.
    for _ in 0..2 {
        let error = transient(charge(&db, reserved(TOKEN_GATEWAY_ERROR)).await);
        assert!(error.contains("gateway unavailable"), "{error}");
    }
    assert_eq!(state(&scrape(metrics).await), Some(0.0));

    // The third in a row opens the breaker.
    transient(charge(&db, reserved(TOKEN_GATEWAY_ERROR)).await);
    let m = scrape(metrics).await;
    assert_eq!(state(&m), Some(1.0), "open after 3 consecutive failures");
    assert_eq!(transitions(&m, "open"), 1.0);
    assert_eq!(calls(&m, "error"), 3.0);

    // Open: a good card fails fast, transient, and the gateway is not called.
    let pending = reserved("tok_visa");
    let order_id = pending.data.order_id;
    let error = transient(charge(&db, pending.clone()).await);
    assert!(error.contains("circuit open"), "{error}");
    let m = scrape(metrics).await;
    assert_eq!(calls(&m, "rejected"), 1.0);
    assert_eq!(calls(&m, "approved"), 1.0, "not sent to the gateway");

    // Nothing was written for any failed charge: neither a payment (so no
    // decline, no cancelled order) nor an event.
    assert_eq!(count(&db, "payments").await, 2);
    assert_eq!(count(&db, "outbox").await, 2);

    // The same event, retried until the cool-down has passed: the first
    // call after it is the trial, and it succeeds.
    wait_until(
        "the breaker lets a trial charge through after the cool-down",
        Duration::from_secs(10),
        || {
            let event = pending.clone();
            let db = &db;
            async move { charge(db, event).await.is_ok() }
        },
    )
    .await;
    let m = scrape(metrics).await;
    assert_eq!(state(&m), Some(0.0), "closed by the successful trial");
    assert_eq!(
        ["open", "half_open", "closed"].map(|to| transitions(&m, to)),
        [1.0, 1.0, 1.0]
    );
    assert_eq!(calls(&m, "approved"), 2.0);
    assert!(calls(&m, "rejected") >= 1.0);

    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    let rows: Vec<Status> = diesel::sql_query("SELECT status FROM payments WHERE order_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(order_id)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["COMPLETED"]
    );
    assert_eq!(count(&db, "outbox").await, 3);

    server.shutdown().await;
}
