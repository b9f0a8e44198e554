use diesel_async::RunQueryDsl as _;
use orderflow_proto::order::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, line, order_request};

#[tokio::test(flavor = "multi_thread")]
async fn create_writes_the_order_its_lines_and_one_order_placed_event() {
    let app = TestApp::spawn().await;
    let customer = Uuid::new_v4();
    // A caller that is part of a trace passes its traceparent on.
    let mut req = tonic::Request::new(order_request(customer));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );

    let order = app
        .client
        .clone()
        .create_order(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    assert_eq!(order.status(), pb::OrderStatus::Pending);
    assert_eq!(order.customer_id, customer.to_string());
    assert_eq!(order.total.as_ref().unwrap().amount_minor, 2 * 1250 + 999);
    assert_eq!(order.lines.len(), 2);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("order_lines").await, 2);

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        aggregate_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        event_type: String,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        payload: serde_json::Value,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        headers: serde_json::Value,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        pending: bool,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT o.id, o.aggregate_id, o.event_type, o.payload, o.headers, p.seq IS NOT NULL AS pending
         FROM outbox o LEFT JOIN outbox_pending p ON p.seq = o.seq",
    )
    .load(&mut app.sql().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.event_type, "order.placed");
    assert_eq!(row.aggregate_id.to_string(), order.id);
    assert!(row.pending);
    // The body is a CloudEvent whose id is the row id (the AMQP message-id).
    let ce = &row.payload;
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], row.id.to_string());
    assert_eq!(ce["type"], "order.placed");
    assert_eq!(ce["source"], "orderflow/order");
    assert_eq!(ce["subject"], order.id);
    assert_eq!(ce["data"]["order_id"], order.id);
    assert_eq!(ce["data"]["total_minor"], 3499);
    assert_eq!(ce["data"]["lines"].as_array().unwrap().len(), 2);
    // The trace context of the call is stored with the event.
    let traceparent = row.headers["traceparent"]
        .as_str()
        .expect("traceparent header");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the row's parent is the server span, not the caller"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_request_id_returns_the_first_order_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let req = order_request(Uuid::new_v4());

    let first = app.create(req.clone()).await.unwrap();
    let second = app.create(req.clone()).await.unwrap();

    assert_eq!(first, second);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("order_lines").await, 2);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_calls_with_one_request_id_create_exactly_one_order() {
    let app = TestApp::spawn().await;
    let req = order_request(Uuid::new_v4());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));

    let calls = (0..50).map(|_| {
        let (mut client, req, barrier) = (app.client.clone(), req.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            client
                .create_order(req)
                .await
                .map(|r| r.into_inner().order.unwrap().id)
        })
    });
    let ids: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("every call succeeds"))
        .collect();

    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 1, "{distinct:?}");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_reused_for_a_different_order_is_already_exists() {
    let app = TestApp::spawn().await;
    let req = order_request(Uuid::new_v4());
    app.create(req.clone()).await.unwrap();

    let mut other = req.clone();
    other.lines[0].quantity += 1;
    let status = app.create(other).await.unwrap_err();

    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_are_invalid_argument_with_field_violations_and_write_nothing() {
    use tonic_types::StatusExt as _;
    let app = TestApp::spawn().await;
    let valid = || order_request(Uuid::new_v4());
    let cases: Vec<(&str, pb::CreateOrderRequest)> = vec![
        (
            "lines",
            pb::CreateOrderRequest {
                lines: vec![],
                ..valid()
            },
        ),
        (
            "lines",
            pb::CreateOrderRequest {
                lines: (0..101).map(|_| line(1, 1)).collect(),
                ..valid()
            },
        ),
        (
            "lines[0].quantity",
            pb::CreateOrderRequest {
                lines: vec![line(0, 1)],
                ..valid()
            },
        ),
        (
            "lines[0].quantity",
            pb::CreateOrderRequest {
                lines: vec![line(1001, 1)],
                ..valid()
            },
        ),
        (
            "lines[0].unit_price.amount_minor",
            pb::CreateOrderRequest {
                lines: vec![line(1, -5)],
                ..valid()
            },
        ),
        ("lines[0].unit_price.currency", {
            let mut r = valid();
            r.lines[0].unit_price.as_mut().unwrap().currency = "XYZ".into();
            r
        }),
        ("lines[1].product_id", {
            let mut r = valid();
            r.lines[1].product_id = "not-a-uuid".into();
            r
        }),
        (
            "request_id",
            pb::CreateOrderRequest {
                request_id: "42".into(),
                ..valid()
            },
        ),
        (
            "customer_id",
            pb::CreateOrderRequest {
                customer_id: "x".repeat(1 << 20),
                ..valid()
            },
        ),
        (
            "customer_email",
            pb::CreateOrderRequest {
                customer_email: format!("{}@example.com", "a".repeat(300)),
                ..valid()
            },
        ),
        (
            "customer_email",
            pb::CreateOrderRequest {
                customer_email: String::new(),
                ..valid()
            },
        ),
        (
            "payment_token",
            pb::CreateOrderRequest {
                payment_token: "tok visa; drop".into(),
                ..valid()
            },
        ),
        (
            "customer_phone",
            pb::CreateOrderRequest {
                customer_phone: "0151 1234".into(),
                ..valid()
            },
        ),
    ];
    for (field, req) in cases {
        let status = app.create(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert!(
            violations.iter().any(|v| v.field == field),
            "{field}: {violations:?}"
        );
    }
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_input_makes_the_server_fail_or_panic() {
    use rand::{Rng as _, seq::IndexedRandom as _};
    let app = TestApp::spawn().await;
    let mut rng = rand::rng();
    let strings = [
        String::new(),
        "\u{0}".into(),
        "é".repeat(100),
        "x".repeat(70_000),
        Uuid::new_v4().to_string(),
        Uuid::nil().to_string(),
        Uuid::new_v4().simple().to_string(),
        "EUR".into(),
        "eur".into(),
        "a@b.co".into(),
        "🦀".into(),
        "'; DROP TABLE orders; --".into(),
    ];
    let numbers = [
        i64::MIN,
        -1,
        0,
        1,
        999,
        1000,
        1001,
        i64::from(i32::MAX),
        i64::MAX,
    ];
    for _ in 0..300 {
        let pick = |rng: &mut rand::rngs::ThreadRng| strings.choose(rng).unwrap().clone();
        let lines = (0..rng.random_range(0..4))
            .map(|_| pb::OrderLine {
                product_id: pick(&mut rng),
                quantity: *numbers.choose(&mut rng).unwrap() as i32,
                unit_price: rng.random_bool(0.8).then(|| pb::Money {
                    amount_minor: *numbers.choose(&mut rng).unwrap(),
                    currency: pick(&mut rng),
                }),
            })
            .collect();
        let req = pb::CreateOrderRequest {
            request_id: pick(&mut rng),
            customer_id: pick(&mut rng),
            customer_email: pick(&mut rng),
            lines,
            payment_token: pick(&mut rng),
            customer_phone: pick(&mut rng),
        };
        match app.create(req.clone()).await {
            Ok(_) => {}
            Err(s) => assert!(
                matches!(s.code(), Code::InvalidArgument | Code::AlreadyExists),
                "{:?} for {req:?}",
                s.code()
            ),
        }
    }
    // Every order that exists is complete: it has its lines and its event.
    let orders = app.count("orders").await;
    assert_eq!(app.count("outbox").await, orders);
    assert_eq!(
        app.count("(SELECT DISTINCT order_id FROM order_lines) AS o")
            .await,
        orders
    );
}
