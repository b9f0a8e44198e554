//! The per-client rate limit on the customer RPCs (orderflow_grpc::access).

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

#[tokio::test]
async fn a_client_over_its_rate_gets_resource_exhausted_and_nothing_is_written() {
    // One call a second with a burst of three: a quick run of ten calls
    // must meet the limit, however slow the machine is.
    let app = TestApp::spawn_with(&[("GRPC_RATE_LIMIT", "1"), ("GRPC_RATE_BURST", "3")]).await;
    let customer = Uuid::new_v4();
    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..10 {
        match app.create(order_request(customer)).await {
            Ok(_) => accepted += 1,
            Err(status) => refused.push(status),
        }
    }
    assert!(accepted >= 3, "the burst passes: {accepted} accepted");
    assert!(
        !refused.is_empty(),
        "ten quick calls at 1/s must meet the limit"
    );
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        let quota = status.get_details_quota_failure().expect("QuotaFailure");
        assert_eq!(quota.violations[0].subject, "client:127.0.0.1");
    }
    // A refused call wrote nothing: one order and one event per accepted call.
    assert_eq!(app.count("orders").await, accepted);
    assert_eq!(app.count("outbox").await, accepted);

    // The limit refills: the client gets through again once it waited.
    orderflow_testkit::wait_until(
        "a call after the refill passes",
        Duration::from_secs(10),
        || {
            let app = &app;
            async move { app.create(order_request(customer)).await.is_ok() }
        },
    )
    .await;
}

#[tokio::test]
async fn health_checks_are_never_rate_limited() {
    let app = TestApp::spawn_with(&[("GRPC_RATE_LIMIT", "1"), ("GRPC_RATE_BURST", "1")]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    for _ in 0..20 {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("a probe is always answered");
        assert_eq!(answer.into_inner().status, 1, "SERVING");
    }
}
