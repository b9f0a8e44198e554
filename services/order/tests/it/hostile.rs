//! Hostile input: proptest-generated requests to every RPC, sent over a real
//! channel to the in-process server. Whatever a client sends, the answer is
//! never INTERNAL or UNKNOWN (a client's mistake is INVALID_ARGUMENT with a
//! BadRequest, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION or
//! OUT_OF_RANGE), a rejected call leaves every table as it was, and an
//! accepted write is whole: an order, all its lines and exactly one
//! `order.placed`. Also the message size limit and deadlines: a call cut off
//! at any point leaves nothing half done.
//!
//! Cases are drawn from a seed printed by every test; a failure prints the
//! (shrunk) request and `HOSTILE_SEED=<n>`, which replays the same cases.

use std::{collections::BTreeMap, time::Duration};

use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use orderflow_proto::order::v1 as pb;
use orderflow_testkit::{
    as_admin, ensure_or,
    hostile::{
        Snapshot, amount, currency, hex, hostile, judge, page_size, runner, seed, text, uuid,
        uuid_text,
    },
};
use proptest::{collection::vec, prelude::*, sample::select, strategy::ValueTree};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

/// tonic's default limit on a decoded message (no server sets another).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------- the runner

// ------------------------------------------------------------ the database

const TABLES: [&str; 3] = ["orders", "order_lines", "outbox"];

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .expect("count")
        .n
}

/// Orders that are not whole: without lines, or without exactly one
/// order.placed, or whose lines do not add up to the total.
async fn broken_orders(conn: &mut AsyncPgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM orders o WHERE \
           NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id) \
           OR (SELECT count(*) FROM outbox e WHERE e.aggregate_id = o.id \
               AND e.event_type = 'order.placed') <> 1 \
           OR (SELECT sum(l.quantity * l.unit_price_minor) FROM order_lines l \
               WHERE l.order_id = o.id) <> o.total_minor \
           OR (SELECT count(*) FROM outbox e WHERE e.aggregate_id = o.id \
               AND e.event_type = 'order.cancelled') > 1",
    )
    .await
}

/// The lines and order.placed rows stored for one order.
async fn stored(conn: &mut AsyncPgConnection, id: &str) -> (i64, i64) {
    let lines = count(
        conn,
        &format!("SELECT count(*) AS n FROM order_lines WHERE order_id = '{id}'"),
    )
    .await;
    let placed = count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM outbox WHERE aggregate_id = '{id}' \
             AND event_type = 'order.placed'"
        ),
    )
    .await;
    (lines, placed)
}

// ------------------------------------------------------------ strategies

fn money() -> BoxedStrategy<Option<pb::Money>> {
    prop_oneof![
        1 => Just(None),
        9 => (amount(), currency())
            .prop_map(|(amount_minor, currency)| Some(pb::Money { amount_minor, currency })),
    ]
    .boxed()
}

fn quantity() -> BoxedStrategy<i32> {
    prop_oneof![
        4 => 1i32..=1000,
        1 => any::<i32>(),
        1 => select(vec![0, -1, 1, 1000, 1001, i32::MIN, i32::MAX]),
    ]
    .boxed()
}

fn email() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,20}\\.[a-z]{2,6}",
        1 => (1usize..=3).prop_map(|extra| format!("{}@example.com", "a".repeat(254 - 12 - 1 + extra))),
        1 => select(vec!["a@b", "@b.c", "a@.c", "a@b.c.", "a b@c.d", "a@b@c.d", "é@ü.example", "a@b.c"])
            .prop_map(str::to_owned),
        2 => text(),
    ]
    .boxed()
}

fn payment_token() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => select(vec!["tok_visa", "tok_declined", "tok_insufficient_funds"]).prop_map(str::to_owned),
        2 => "[A-Za-z0-9_]{1,64}",
        1 => "[A-Za-z0-9_]{65,80}",
        2 => text(),
    ]
    .boxed()
}

fn phone() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => "\\+[0-9]{8,15}",
        1 => "\\+[0-9]{0,7}",
        1 => "\\+[0-9]{16,20}",
        1 => "[0-9]{8,15}",
        1 => "\\+[0-9٠-٩]{8,15}",
        2 => text(),
    ]
    .boxed()
}

/// A line as a careless or malicious client might send it. `products` are
/// repeated on purpose (a product twice in one order is refused).
fn line(products: Vec<Uuid>) -> BoxedStrategy<pb::OrderLine> {
    let product = prop_oneof![
        5 => uuid().prop_map(|u| u.to_string()),
        1 => select(products).prop_map(|u| u.to_string()),
        2 => uuid_text(),
    ];
    (product, quantity(), money())
        .prop_map(|(product_id, quantity, unit_price)| pb::OrderLine {
            product_id,
            quantity,
            unit_price,
        })
        .boxed()
}

fn lines(products: Vec<Uuid>) -> BoxedStrategy<Vec<pb::OrderLine>> {
    prop_oneof![
        4 => vec(line(products.clone()), 0..=4),
        1 => vec(line(products.clone()), 99..=101),
        1 => vec(line(products), 0..=200),
    ]
    .boxed()
}

fn valid_line() -> impl Strategy<Value = pb::OrderLine> {
    (uuid(), 1i32..=1000, 0i64..=1_000_000).prop_map(|(p, quantity, amount_minor)| pb::OrderLine {
        product_id: p.to_string(),
        quantity,
        unit_price: Some(pb::Money {
            amount_minor,
            currency: "EUR".to_owned(),
        }),
    })
}

/// A request that passes validation: new, or reusing one of `request_ids`
/// (then ALREADY_EXISTS, or the first order when it is the same request).
fn valid_order(request_ids: Vec<Uuid>) -> BoxedStrategy<pb::CreateOrderRequest> {
    let request_id = if request_ids.is_empty() {
        uuid().boxed()
    } else {
        prop_oneof![3 => uuid(), 1 => select(request_ids)].boxed()
    };
    (
        request_id,
        uuid(),
        "[a-z]{1,10}@[a-z]{1,10}\\.(com|de|fr)",
        vec(valid_line(), 1..=100),
        select(vec!["", "tok_visa", "tok_declined"]),
        prop_oneof![Just(String::new()), "\\+[0-9]{8,15}"],
    )
        .prop_map(
            |(request_id, customer, email, lines, token, phone)| pb::CreateOrderRequest {
                request_id: request_id.to_string(),
                customer_id: customer.to_string(),
                customer_email: email,
                lines,
                payment_token: token.to_owned(),
                customer_phone: phone,
            },
        )
        .boxed()
}

fn hostile_order(products: Vec<Uuid>) -> BoxedStrategy<pb::CreateOrderRequest> {
    (
        uuid_text(),
        uuid_text(),
        email(),
        lines(products),
        payment_token(),
        phone(),
    )
        .prop_map(
            |(request_id, customer_id, customer_email, lines, payment_token, customer_phone)| {
                pb::CreateOrderRequest {
                    request_id,
                    customer_id,
                    customer_email,
                    lines,
                    payment_token,
                    customer_phone,
                }
            },
        )
        .boxed()
}

/// Valid requests, exact replays of `replays`, valid requests with one
/// field (or one line) made hostile, and hostile requests.
fn create_requests(
    request_ids: Vec<Uuid>,
    replays: Vec<pb::CreateOrderRequest>,
    products: Vec<Uuid>,
) -> BoxedStrategy<pb::CreateOrderRequest> {
    let one_bad_field = (
        valid_order(request_ids.clone()),
        hostile_order(products.clone()),
        0usize..8,
        line(products.clone()),
    )
        .prop_map(|(mut req, bad, field, bad_line)| {
            match field {
                0 => req.request_id = bad.request_id,
                1 => req.customer_id = bad.customer_id,
                2 => req.customer_email = bad.customer_email,
                3 => req.lines = bad.lines,
                4 => req.payment_token = bad.payment_token,
                5 => req.customer_phone = bad.customer_phone,
                6 => {
                    let at = bad_line.quantity.unsigned_abs() as usize % (req.lines.len() + 1);
                    req.lines.insert(at, bad_line);
                }
                _ => {
                    // The same product twice.
                    let first = req.lines[0].clone();
                    req.lines.push(first);
                }
            }
            req
        });
    prop_oneof![
        3 => valid_order(request_ids),
        1 => select(replays),
        4 => one_bad_field,
        3 => hostile_order(products),
    ]
    .boxed()
}

/// ListOrders' token format (see `store::Cursor`), for forged tokens.
fn order_token(micros: i64, id: Uuid, customer: Option<Uuid>) -> String {
    let filter = customer.map_or_else(|| "-".to_owned(), |c| c.simple().to_string());
    hex(&format!("v1.{micros}.{}.{filter}", id.simple()))
}

fn page_token(real: Vec<String>, customers: Vec<Uuid>) -> BoxedStrategy<String> {
    let micros = prop_oneof![
        2 => any::<i64>(),
        1 => select(vec![
            i64::MIN,
            i64::MAX,
            -1,
            0,
            // Before PostgreSQL's first timestamp (4713 BC), still a chrono date.
            -210_000_000_000_000_000,
            -8_000_000_000_000_000_000,
            // After chrono's last one.
            8_300_000_000_000_000_000,
        ]),
        2 => 1_500_000_000_000_000i64..1_900_000_000_000_000,
    ];
    let filter = prop_oneof![
        Just(None),
        select(customers).prop_map(Some),
        uuid().prop_map(Some)
    ];
    prop_oneof![
        2 => Just(String::new()),
        2 => select(real),
        3 => (micros, uuid(), filter).prop_map(|(m, id, c)| order_token(m, id, c)),
        1 => "([0-9a-f]{2}){0,200}",
        1 => text().prop_map(|t| hex(&t)),
        1 => text().prop_map(|t| hex(&format!("v1.{t}"))),
        2 => text(),
    ]
    .boxed()
}

fn reason() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => "[a-zA-Z ]{1,60}",
        1 => (499usize..=502).prop_map(|n| "r".repeat(n)),
        1 => (499usize..=502).prop_map(|n| "é".repeat(n)),
        1 => (0usize..5).prop_map(|n| format!("{}{}{}", " ".repeat(n), "x".repeat(500), " ".repeat(n))),
        4 => text(),
    ]
    .boxed()
}

// ------------------------------------------------------------ set-up

/// Orders to find, list and cancel: `pending` PENDING ones and one
/// CONFIRMED, for a few customers. Returns (order ids, customers, the
/// confirmed order).
async fn seed_orders(app: &TestApp, pending: usize) -> (Vec<Uuid>, Vec<Uuid>, Uuid) {
    let customers: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut ids = Vec::new();
    for i in 0..=pending {
        let order = app
            .create(order_request(customers[i % customers.len()]))
            .await
            .expect("seed order");
        ids.push(order.id.parse().expect("uuid"));
    }
    let confirmed = ids[pending];
    app.execute(&format!(
        "UPDATE orders SET status = 'CONFIRMED' WHERE id = '{confirmed}'"
    ))
    .await;
    (ids, customers, confirmed)
}

// ------------------------------------------------------------ the RPCs

#[tokio::test]
async fn hostile_create_order() {
    let app = TestApp::spawn().await;
    let seed = seed();
    let mut conn = app.sql().await;
    let request_ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let products: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    // Orders already placed, replayed byte for byte by some cases.
    let mut replays = Vec::new();
    for id in &request_ids[..2] {
        let mut req = order_request(Uuid::new_v4());
        req.request_id = id.to_string();
        app.create(req.clone()).await.expect("seed order");
        replays.push(req);
    }

    let client = app.client.clone();
    let tally = hostile(
        "CreateOrder",
        seed,
        create_requests(request_ids, replays, products),
        async |req: pb::CreateOrderRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client.clone().create_order(as_admin(req.clone())).await;
            let after = Snapshot::take(&mut conn, &TABLES).await;
            let outcome = match result {
                Err(status) => {
                    let outcome = judge(&status)?;
                    ensure_or!(
                        before == after,
                        "rejected ({outcome}) but the tables changed"
                    );
                    outcome
                }
                Ok(response) => {
                    let order = response
                        .into_inner()
                        .order
                        .ok_or("no order in the response")?;
                    ensure_or!(
                        order.request_id == req.request_id.to_lowercase(),
                        "the order of another request: {}",
                        order.request_id
                    );
                    ensure_or!(
                        order.lines.len() == req.lines.len(),
                        "{} lines returned for {} sent",
                        order.lines.len(),
                        req.lines.len()
                    );
                    let (lines, placed) = stored(&mut conn, &order.id).await;
                    ensure_or!(
                        lines == req.lines.len() as i64 && placed == 1,
                        "order {} stored with {lines} lines and {placed} order.placed",
                        order.id
                    );
                    let grew = |t| after.rows(t) - before.rows(t);
                    let (orders, lines, outbox) =
                        (grew("orders"), grew("order_lines"), grew("outbox"));
                    if orders == 0 {
                        // A replay: the first order, nothing written.
                        ensure_or!(before == after, "a replay wrote something");
                        "OK (replay)".to_owned()
                    } else {
                        ensure_or!(
                            (orders, lines, outbox) == (1, req.lines.len() as i64, 1),
                            "a new order wrote {orders} orders, {lines} lines, {outbox} events"
                        );
                        "OK".to_owned()
                    }
                }
            };
            ensure_or!(broken_orders(&mut conn).await == 0, "an order is not whole");
            Ok(outcome)
        },
    )
    .await;
    assert!(
        tally.get("OK").copied().unwrap_or(0) > 0,
        "nothing accepted: {tally:?}"
    );
    assert!(
        tally.get("INVALID_ARGUMENT").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );
}

#[tokio::test]
async fn hostile_get_order() {
    let app = TestApp::spawn().await;
    let seed = seed();
    let mut conn = app.sql().await;
    let (ids, _, _) = seed_orders(&app, 3).await;
    let known = ids.clone();
    let ids = prop_oneof![
        2 => select(ids).prop_map(|u| u.to_string()),
        5 => uuid_text(),
    ];
    let client = app.client.clone();
    let tally = hostile(
        "GetOrder",
        seed,
        ids.prop_map(|order_id| pb::GetOrderRequest { order_id }),
        async |req: pb::GetOrderRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client.clone().get_order(as_admin(req.clone())).await;
            ensure_or!(
                Snapshot::take(&mut conn, &TABLES).await == before,
                "a read wrote"
            );
            let is_known = known.iter().any(|k| k.to_string() == req.order_id);
            match result {
                Ok(response) => {
                    let order = response.into_inner().order.ok_or("no order")?;
                    ensure_or!(
                        order.id == req.order_id.to_lowercase(),
                        "another order: {}",
                        order.id
                    );
                    ensure_or!(!order.lines.is_empty(), "an order without lines");
                    Ok("OK".to_owned())
                }
                Err(status) => {
                    ensure_or!(!is_known, "a known order refused: {status:?}");
                    judge(&status)
                }
            }
        },
    )
    .await;
    assert!(
        tally.contains_key("OK") && tally.contains_key("NotFound"),
        "{tally:?}"
    );
}

#[tokio::test]
async fn hostile_list_orders() {
    let app = TestApp::spawn().await;
    let seed = seed();
    let mut conn = app.sql().await;
    let (_, customers, _) = seed_orders(&app, 5).await;
    // Tokens the server issued: for every order, and for one customer.
    let mut real = Vec::new();
    for customer_id in ["".to_owned(), customers[0].to_string()] {
        let page = app
            .client
            .clone()
            .list_orders(as_admin(pb::ListOrdersRequest {
                customer_id,
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .expect("first page")
            .into_inner();
        assert!(!page.next_page_token.is_empty());
        real.push(page.next_page_token);
    }

    let customer = prop_oneof![
        2 => Just(String::new()),
        2 => select(customers.clone()).prop_map(|c| c.to_string()),
        3 => uuid_text(),
    ];
    let requests = (customer, page_size(), page_token(real, customers)).prop_map(
        |(customer_id, page_size, page_token)| pb::ListOrdersRequest {
            customer_id,
            page_size,
            page_token,
        },
    );
    let client = app.client.clone();
    let tally = hostile(
        "ListOrders",
        seed,
        requests,
        async |req: pb::ListOrdersRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client.clone().list_orders(as_admin(req.clone())).await;
            ensure_or!(
                Snapshot::take(&mut conn, &TABLES).await == before,
                "a read wrote"
            );
            match result {
                Ok(response) => {
                    let page = response.into_inner();
                    let limit = match req.page_size {
                        0 => 50,
                        n => n.clamp(1, 500) as usize,
                    };
                    ensure_or!(
                        page.orders.len() <= limit,
                        "{} orders on a page of {limit}",
                        page.orders.len()
                    );
                    ensure_or!(
                        page.orders.iter().all(|o| req.customer_id.is_empty()
                            || o.customer_id == req.customer_id.to_lowercase()),
                        "another customer's order"
                    );
                    Ok("OK".to_owned())
                }
                Err(status) => judge(&status),
            }
        },
    )
    .await;
    assert!(
        tally.contains_key("OK") && tally.contains_key("INVALID_ARGUMENT"),
        "{tally:?}"
    );
}

#[tokio::test]
async fn hostile_cancel_order() {
    let app = TestApp::spawn().await;
    let seed = seed();
    let mut conn = app.sql().await;
    let (ids, _, confirmed) = seed_orders(&app, 6).await;
    let known = ids.clone();
    let order_id = prop_oneof![
        3 => select(ids).prop_map(|u| u.to_string()),
        4 => uuid_text(),
    ];
    let client = app.client.clone();
    let tally = hostile(
        "CancelOrder",
        seed,
        (order_id, reason()).prop_map(|(order_id, reason)| pb::CancelOrderRequest { order_id, reason }),
        async |req: pb::CancelOrderRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client.clone().cancel_order(as_admin(req.clone())).await;
            let after = Snapshot::take(&mut conn, &TABLES).await;
            let outcome = match result {
                Ok(response) => {
                    let order = response.into_inner().order.ok_or("no order")?;
                    ensure_or!(
                        order.status == pb::OrderStatus::Cancelled as i32
                            && order.cancel_reason.starts_with("cancelled by the customer"),
                        "not cancelled: {order:?}"
                    );
                    let cancelled = count(
                        &mut conn,
                        &format!(
                            "SELECT count(*) AS n FROM orders WHERE id = '{}' AND status = 'CANCELLED'",
                            order.id
                        ),
                    )
                    .await;
                    ensure_or!(cancelled == 1, "the stored order is not CANCELLED");
                    let events = after.rows("outbox") - before.rows("outbox");
                    ensure_or!(
                        events <= 1 && after.rows("orders") == before.rows("orders"),
                        "a cancel wrote {events} events"
                    );
                    if events == 0 {
                        ensure_or!(before == after, "a repeated cancel wrote something");
                        "OK (again)".to_owned()
                    } else {
                        "OK".to_owned()
                    }
                }
                Err(status) => {
                    let outcome = judge(&status)?;
                    ensure_or!(before == after, "rejected ({outcome}) but the tables changed");
                    if status.code() == Code::NotFound {
                        ensure_or!(
                            !known.iter().any(|k| k.to_string() == req.order_id.to_lowercase()),
                            "a known order not found"
                        );
                    }
                    if status.code() == Code::FailedPrecondition {
                        ensure_or!(req.order_id.to_lowercase() == confirmed.to_string(), "{status:?}");
                    }
                    outcome
                }
            };
            ensure_or!(broken_orders(&mut conn).await == 0, "an order is not whole");
            Ok(outcome)
        },
    )
    .await;
    assert!(
        tally.contains_key("OK") && tally.contains_key("INVALID_ARGUMENT"),
        "{tally:?}"
    );
}

// ------------------------------------------------------------ size, deadlines

/// A request over the server's limit is refused before any handler runs:
/// tonic 0.14 answers OUT_OF_RANGE ("decoded message length too large"),
/// where grpc-go would say RESOURCE_EXHAUSTED. Just under it, validation
/// answers. Nothing is written either way and the server keeps serving.
#[tokio::test]
async fn hostile_message_size_limit() {
    let app = TestApp::spawn().await;
    let mut conn = app.sql().await;
    let mut client = app.client.clone();
    let before = Snapshot::take(&mut conn, &TABLES).await;

    let mut too_big = order_request(Uuid::new_v4());
    too_big.customer_email = format!("{}@example.com", "a".repeat(MAX_MESSAGE));
    let status = client.create_order(as_admin(too_big)).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");

    // Many lines rather than one long string: the same limit.
    let mut many_lines = order_request(Uuid::new_v4());
    many_lines.lines = (0..100_000).map(|_| crate::helpers::line(1, 1)).collect();
    let status = client.create_order(as_admin(many_lines)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let mut just_under = order_request(Uuid::new_v4());
    just_under.customer_email = format!("{}@example.com", "a".repeat(MAX_MESSAGE - 4096));
    let status = client.create_order(as_admin(just_under)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    assert_eq!(
        Snapshot::take(&mut conn, &TABLES).await,
        before,
        "a refused request wrote"
    );
    app.create(order_request(Uuid::new_v4()))
        .await
        .expect("still serving");
}

/// CreateOrder calls cut off at every point: by a gRPC deadline of 1 µs to
/// 5 ms (the server drops the call when it passes) or by the client giving
/// up. Every order that exists afterwards is whole, each is the order of
/// its request, and retrying every request without a deadline yields
/// exactly one order per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_deadlines_leave_nothing_half_done() {
    const CALLS: usize = 400;
    const AT_ONCE: usize = 8;
    let app = TestApp::spawn().await;
    let seed = seed();
    let mut runner = runner(seed, "deadlines");
    let mut conn = app.sql().await;

    let cut = (valid_order(Vec::new()), 1u64..=5_000, any::<bool>());
    let mut requests: Vec<pb::CreateOrderRequest> = Vec::new();
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..CALLS / AT_ONCE {
        let calls: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (req, micros, by_client) =
                    cut.new_tree(&mut runner).expect("a value").current();
                requests.push(req.clone());
                let mut client = app.client.clone();
                tokio::spawn(async move {
                    let limit = Duration::from_micros(micros);
                    if by_client {
                        // The client gives up: the stream is reset mid-call.
                        match tokio::time::timeout(limit, client.create_order(as_admin(req))).await
                        {
                            Ok(Ok(_)) => "OK".to_owned(),
                            Ok(Err(status)) => format!("{:?}", status.code()),
                            Err(_) => "dropped by the client".to_owned(),
                        }
                    } else {
                        let mut request = as_admin(req);
                        request.set_timeout(limit);
                        match client.create_order(request).await {
                            Ok(_) => "OK".to_owned(),
                            Err(status) => format!("{:?}", status.code()),
                        }
                    }
                })
            })
            .collect();
        for call in calls {
            let outcome = call.await.expect("call task");
            *tally.entry(outcome).or_insert(0) += 1;
        }
    }
    eprintln!("deadlines: {CALLS} calls: {tally:?}");
    for code in tally.keys() {
        assert!(
            [
                "OK",
                "Cancelled",
                "DeadlineExceeded",
                "dropped by the client"
            ]
            .contains(&code.as_str()),
            "a call cut short ended {code} (HOSTILE_SEED={seed}): {tally:?}"
        );
    }
    assert!(tally.len() > 1, "no call was cut short: {tally:?}");

    // Calls the client dropped may still be running on the server: wait
    // until no other session of this database is busy or in a transaction.
    orderflow_testkit::wait_until(
        "the server's calls have finished in the database",
        Duration::from_secs(30),
        || async {
            count(
                &mut app.sql().await,
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state IS DISTINCT FROM 'idle'",
            )
            .await
                == 0
        },
    )
    .await;
    assert_eq!(
        broken_orders(&mut conn).await,
        0,
        "an order is half done (HOSTILE_SEED={seed})"
    );
    let by_request: BTreeMap<String, &pb::CreateOrderRequest> =
        requests.iter().map(|r| (r.request_id.clone(), r)).collect();
    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request_id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        lines: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        total_minor: i64,
    }
    let stored: Vec<Stored> = diesel::sql_query(
        "SELECT o.request_id::text AS request_id, o.total_minor, \
           (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id) AS lines \
         FROM orders o",
    )
    .load(&mut conn)
    .await
    .expect("orders");
    let committed = stored.len();
    for order in &stored {
        let req = by_request[&order.request_id];
        let total: i64 = req
            .lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price.as_ref().map_or(0, |m| m.amount_minor))
            .sum();
        assert_eq!(
            (order.lines, order.total_minor),
            (req.lines.len() as i64, total),
            "order of request {} is not the one sent",
            order.request_id
        );
    }

    // Still serving; a retry completes what was cut, and repeats nothing.
    for req in &requests {
        let order = app
            .create(req.clone())
            .await
            .expect("a retry without a deadline");
        assert_eq!(order.lines.len(), req.lines.len());
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM orders").await,
        requests.len() as i64
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM outbox").await,
        requests.len() as i64
    );
    assert_eq!(broken_orders(&mut conn).await, 0);
    eprintln!("deadlines: {committed} of {CALLS} orders committed before the retries");
}
