//! Every binary's /metrics after a saga: it parses as OpenMetrics text
//! (what the endpoints declare, and what Prometheus reads) with a strict
//! parser, and holds the series an operator needs with non-zero values:
//! gRPC calls by method and code with their latency, messages consumed,
//! retried, dead-lettered and duplicate by handler, pool usage, how sagas
//! ended, and the relay's backlog and publish counters.

use std::collections::HashMap;

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use orderflow_amqp::lapin::{
    BasicProperties, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::harness::{SERVICES, SETTLE, System, wait_for};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// `GET /metrics` over HTTP/1.0; the content type and the body.
async fn scrape(addr: &str) -> Result<(String, String), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP body from {addr}: {response}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {addr}/metrics: {head}"));
    }
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((content_type, body.to_owned()))
}

/// Parses a scrape; a parse error fails the test at once.
async fn parsed(addr: &str) -> Result<Exposition, String> {
    let (content_type, body) = scrape(addr).await?;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{addr}/metrics declares {content_type:?}"
    );
    Ok(openmetrics_parser::openmetrics::parse_openmetrics(&body)
        .unwrap_or_else(|e| panic!("{addr}/metrics is not valid OpenMetrics text: {e:?}\n{body}")))
}

/// The value of the sample of family `name` whose labels include `labels`:
/// a counter's total, a gauge's value, a histogram's count; summed over the
/// matching samples.
fn value(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(family) = exposition.families.get(name) else {
        return 0.0;
    };
    family
        .iter_samples()
        .filter(|sample| {
            sample.get_labelset().is_ok_and(|set| {
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
        })
        .map(|sample| match &sample.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(g) => g.as_f64(),
            OpenMetricsValue::Histogram(h) => h.count.map_or(0.0, |c| c as f64),
            OpenMetricsValue::Unknown(u) => u.as_f64(),
            _ => 0.0,
        })
        .sum()
}

/// Waits until `service`'s /metrics has `name{labels}` above zero.
async fn wait_metric(system: &System, service: &str, name: &str, labels: &[(&str, &str)]) {
    let addr = system.metrics_addr(service);
    wait_for(
        &format!("{service} /metrics has {name}{labels:?} > 0"),
        SETTLE,
        || async {
            let v = value(&parsed(&addr).await?, name, labels);
            if v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} = {v}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_binary_serves_metrics_that_parse_and_count_the_saga() {
    // A locked product makes inventory's reservation time out (1 s), so it
    // is retried; the lock is released after the first retry.
    let system = System::start_with(&[("inventory", "DATABASE_STATEMENT_TIMEOUT", "1s")]).await;
    let product = system.stock_product(10).await;

    let (locker, connection) =
        tokio_postgres::connect(system.db_url("inventory"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM products WHERE product_id = $1 FOR UPDATE",
            &[&product],
        )
        .await
        .unwrap();
    let confirmed = system.create_order(&[(product, 1)], "tok_visa").await;
    wait_metric(
        &system,
        "inventory",
        "consumer_messages_retried",
        &[("handler", "reserve-stock")],
    )
    .await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    let order = system.wait_until_settled(confirmed).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "GetOrder: {order}"
    );

    let out_of_stock = system.create_order(&[(product, 50)], "tok_visa").await;
    let declined = system.create_order(&[(product, 1)], "tok_declined").await;
    for id in [out_of_stock, declined] {
        let order = system.wait_until_settled(id).await;
        assert_eq!(
            order["status"], "ORDER_STATUS_CANCELLED",
            "GetOrder: {order}"
        );
    }
    system
        .call(
            "payment",
            "GetPayment",
            serde_json::json!({"order_id": confirmed.to_string()}),
        )
        .await;
    system
        .wait_notifications(
            confirmed,
            &["order.placed", "payment.completed", "order.confirmed"],
        )
        .await;
    system.wait_idle(SETTLE).await;

    // Duplicates: every published event once more, as a replay would.
    assert!(system.republish_outboxes().await > 0);
    // A message no handler can read: dead-lettered by both consumers of order.placed.
    publish_garbage(&system).await;
    for (service, handler) in [
        ("order", "confirm-on-payment-completed"),
        ("inventory", "reserve-stock"),
        ("payment", "charge"),
        ("notification", "notify-order-placed"),
    ] {
        wait_metric(
            &system,
            service,
            "consumer_messages_duplicate",
            &[("handler", handler)],
        )
        .await;
    }
    for (service, handler) in [
        ("inventory", "reserve-stock"),
        ("notification", "notify-order-placed"),
    ] {
        wait_metric(
            &system,
            service,
            "consumer_messages_dead_lettered",
            &[("handler", handler), ("kind", "malformed")],
        )
        .await;
    }

    // Every service: gRPC, consumer, pool.
    let mut scraped: HashMap<&str, Exposition> = HashMap::new();
    for service in SERVICES {
        scraped.insert(
            service,
            parsed(&system.metrics_addr(service)).await.unwrap(),
        );
    }
    let grpc_calls = [
        ("order", "orderflow.order.v1.OrderService", "CreateOrder"),
        (
            "inventory",
            "orderflow.inventory.v1.InventoryService",
            "UpsertProduct",
        ),
        (
            "payment",
            "orderflow.payment.v1.PaymentService",
            "GetPayment",
        ),
        (
            "notification",
            "orderflow.notification.v1.NotificationService",
            "ListNotifications",
        ),
    ];
    for (service, grpc_service, method) in grpc_calls {
        let m = &scraped[service];
        let labels = [("grpc_service", grpc_service), ("grpc_method", method)];
        let ok = [labels[0], labels[1], ("grpc_code", "OK")];
        assert!(
            value(m, "grpc_server_handled", &ok) > 0.0,
            "{service}: {method} OK counted"
        );
        assert!(
            value(m, "grpc_server_handling_seconds", &labels) > 0.0,
            "{service}: {method} latency observed"
        );
        assert!(
            value(m, "db_pool_max_connections", &[]) > 0.0,
            "{service}: pool size"
        );
        assert!(
            value(m, "db_pool_connections", &[]) > 0.0,
            "{service}: the pool has connections"
        );
        for family in [
            "consumer_messages_consumed",
            "consumer_messages_applied",
            "consumer_message_handling_seconds",
        ] {
            assert!(value(m, family, &[]) > 0.0, "{service}: {family} > 0");
        }
    }
    let inventory = &scraped["inventory"];
    assert!(
        value(
            inventory,
            "consumer_messages_retried",
            &[("handler", "reserve-stock")]
        ) > 0.0,
        "inventory retried the reservation that timed out"
    );
    // Unknown paths get no series of their own.
    assert_eq!(
        value(
            &scraped["order"],
            "grpc_server_handled",
            &[("grpc_service", "unknown")]
        ),
        0.0
    );

    // How the sagas ended, on the order service.
    let order = &scraped["order"];
    assert!(
        value(order, "saga_orders_placed", &[]) >= 3.0,
        "three orders placed"
    );
    assert!(
        value(order, "saga_orders_confirmed", &[]) >= 1.0,
        "one confirmed"
    );
    for reason in ["out_of_stock", "payment_failed"] {
        assert!(
            value(order, "saga_orders_cancelled", &[("reason", reason)]) >= 1.0,
            "one cancelled for {reason}"
        );
    }

    // The relay: published per source, batch latency, backlog gauges, pools.
    let relay = parsed(&system.relay_http_addr()).await.unwrap();
    for source in SERVICES {
        if source == "notification" {
            continue; // publishes nothing
        }
        assert!(
            value(&relay, "outbox_published", &[("source", source)]) > 0.0,
            "relay published for {source}"
        );
        assert!(
            value(
                &relay,
                "outbox_batch_publish_seconds",
                &[("source", source)]
            ) > 0.0
        );
    }
    for source in SERVICES {
        assert!(value(&relay, "db_pool_max_connections", &[("source", source)]) > 0.0);
        assert!(relay.families.contains_key("outbox_pending_rows"));
        assert!(
            relay
                .families
                .contains_key("outbox_oldest_pending_age_seconds")
        );
    }
}

/// A message on order.placed that is not JSON, with a fresh message id.
async fn publish_garbage(system: &System) {
    let conn = orderflow_amqp::connect(&system.amqp_url(), "saga-test/garbage")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "orderflow.order".into(),
            "order.placed".into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"this is not JSON",
            BasicProperties::default()
                .with_message_id(Uuid::new_v4().to_string().into())
                .with_type("order.placed".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
    let _ = conn.close(200, "done".into()).await;
}
