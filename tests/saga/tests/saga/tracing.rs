//! One trace per order: with OTLP export on (to a real receiver in this
//! process), one CreateOrder yields a single trace that holds spans of the
//! four services and the relay, linked gRPC call → transaction → outbox
//! append → relay publish → consumed message → its transaction and outbox
//! append → ... → the notification, with each relay batch linking to the
//! events it published.

use std::collections::{BTreeSet, HashMap};

use crate::{
    harness::{SETTLE, System, wait_for},
    otlp::{KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, OtlpReceiver, SpanSeen},
};

const RELAY: &str = "orderflow-outbox-relay";

/// What a span is in the saga's chain, if it is one of its hops.
fn hop(s: &SpanSeen) -> Option<String> {
    let service = s.service.trim_start_matches("orderflow-");
    let role = if s.kind == KIND_SERVER && s.attr("rpc.system") == Some("grpc") {
        "grpc"
    } else if s.kind == KIND_CONSUMER {
        "consume"
    } else if s.kind == KIND_PRODUCER
        && s.service == RELAY
        && s.attr("messaging.message.id").is_some()
    {
        "publish"
    } else if s.name == "outbox.append" {
        "append"
    } else {
        return None;
    };
    Some(format!("{service}:{role}"))
}

/// `span` and its ancestors up to the root; an error names the first
/// parent not received (yet).
fn ancestry<'a>(
    span: &'a SpanSeen,
    by_id: &HashMap<&str, &'a SpanSeen>,
) -> Result<Vec<&'a SpanSeen>, String> {
    let mut path = vec![span];
    let mut current = span;
    while !current.parent.is_empty() {
        current = by_id.get(current.parent.as_str()).copied().ok_or_else(|| {
            format!(
                "the parent {} of {} ({}) is not received yet",
                current.parent, current.name, current.service
            )
        })?;
        path.push(current);
        if path.len() > 200 {
            return Err("a parent cycle".to_owned());
        }
    }
    Ok(path)
}

/// Checks the whole trace of the CreateOrder call; `Err` says what is
/// missing or wrong so far.
fn check(spans: &[SpanSeen]) -> Result<String, String> {
    let create = spans
        .iter()
        .find(|s| {
            s.service == "orderflow-order"
                && s.kind == KIND_SERVER
                && s.attr("rpc.method") == Some("CreateOrder")
        })
        .ok_or("no CreateOrder server span received yet")?;
    if !create.parent.is_empty() {
        return Err(format!(
            "CreateOrder (called without a traceparent) has a parent: {create:?}"
        ));
    }
    let trace: Vec<&SpanSeen> = spans
        .iter()
        .filter(|s| s.trace_id == create.trace_id)
        .collect();
    let by_id: HashMap<&str, &SpanSeen> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();

    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for wanted in [
        "orderflow-order",
        "orderflow-inventory",
        "orderflow-payment",
        "orderflow-notification",
        RELAY,
    ] {
        if !services.contains(wanted) {
            return Err(format!(
                "no span of {wanted} in the trace yet (services so far: {services:?})"
            ));
        }
    }

    // The notification of order.confirmed, traced back to CreateOrder.
    let notified = trace
        .iter()
        .find(|s| {
            s.service == "orderflow-notification"
                && s.kind == KIND_CONSUMER
                && s.attr("messaging.rabbitmq.destination.routing_key") == Some("order.confirmed")
        })
        .ok_or("no notification span for order.confirmed in the trace yet")?;
    let path = ancestry(notified, &by_id)?;
    let hops: Vec<String> = path.iter().filter_map(|s| hop(s)).collect();
    let expected = [
        "notification:consume",
        "outbox-relay:publish",
        "order:append",
        "order:consume",
        "outbox-relay:publish",
        "payment:append",
        "payment:consume",
        "outbox-relay:publish",
        "inventory:append",
        "inventory:consume",
        "outbox-relay:publish",
        "order:append",
        "order:grpc",
    ];
    assert_eq!(
        hops, expected,
        "the chain from the order.confirmed notification back to CreateOrder"
    );
    assert_eq!(
        path.last().map(|s| &s.span_id),
        Some(&create.span_id),
        "the chain ends at CreateOrder"
    );

    // Direct relations of every hop in the trace.
    let parent_of = |s: &SpanSeen| by_id.get(s.parent.as_str()).copied();
    for s in &trace {
        match hop(s)
            .as_deref()
            .map(|h| h.split(':').nth(1).unwrap_or_default())
        {
            Some("consume") => {
                let p =
                    parent_of(s).ok_or_else(|| format!("parent of {} not received yet", s.name))?;
                assert!(
                    p.service == RELAY && p.kind == KIND_PRODUCER,
                    "a consumed message is the child of the relay's publish span: {s:?} has parent {p:?}"
                );
                assert_eq!(
                    p.attr("messaging.message.id"),
                    s.attr("messaging.message.id"),
                    "consumer and publish spans are of the same message"
                );
            }
            Some("publish") => {
                let p =
                    parent_of(s).ok_or_else(|| format!("parent of {} not received yet", s.name))?;
                assert_eq!(
                    p.name, "outbox.append",
                    "a publish is the child of the append that wrote the row: {s:?}"
                );
                // The batch that sent it starts a trace of its own and links here.
                let batch = spans.iter().find(|b| {
                    b.service == RELAY
                        && b.name == "outbox.publish_batch"
                        && b.links.contains(&(p.trace_id.clone(), p.span_id.clone()))
                });
                let batch = batch.ok_or("no relay batch span links to an appended event yet")?;
                assert_ne!(
                    batch.trace_id, create.trace_id,
                    "a batch span is a root of its own trace"
                );
                assert!(
                    batch.parent.is_empty(),
                    "a batch span has no parent: {batch:?}"
                );
            }
            Some("append") => {
                let p =
                    parent_of(s).ok_or_else(|| format!("parent of {} not received yet", s.name))?;
                assert_eq!(
                    p.name, "db.transaction",
                    "an outbox append is the child of its transaction's span: {s:?}"
                );
                assert_eq!(p.service, s.service);
            }
            _ => {}
        }
    }
    for service in [
        "orderflow-order",
        "orderflow-inventory",
        "orderflow-payment",
        "orderflow-notification",
    ] {
        let transactions = trace
            .iter()
            .filter(|s| s.service == service && s.name == "db.transaction")
            .count();
        assert!(
            transactions > 0,
            "{service} has transaction spans in the trace"
        );
    }
    Ok(format!(
        "{} spans in trace {} from {services:?}",
        trace.len(),
        create.trace_id
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_covers_the_saga_from_create_order_to_the_notification() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let system = System::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let product = system.stock_product(10).await;
    let order_id = system.create_order(&[(product, 2)], "tok_visa").await;
    let order = system.wait_until_settled(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "GetOrder: {order}"
    );
    system
        .wait_notifications(
            order_id,
            &["order.placed", "payment.completed", "order.confirmed"],
        )
        .await;

    let summary = wait_for("one trace holds the whole saga", SETTLE, || async {
        check(&receiver.spans())
    })
    .await;
    eprintln!("{summary}");
}
