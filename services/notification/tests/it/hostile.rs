//! Hostile input: proptest-generated ListNotifications requests, sent over
//! a real channel to the in-process server. Whatever a client sends, the
//! answer is never INTERNAL or UNKNOWN (a client's mistake is
//! INVALID_ARGUMENT with a BadRequest), and no call writes anything: the
//! API only reads. Also the message size limit.
//!
//! Cases are drawn from a seed printed by every test; a failure prints the
//! (shrunk) request and `HOSTILE_SEED=<n>`, which replays the same cases.

use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_proto::notification::v1 as pb;
use orderflow_testkit::{
    as_admin, ensure_or,
    hostile::{Snapshot, hex, hostile, judge, page_size, seed, text, uuid, uuid_text},
};
use proptest::{prelude::*, sample::select};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{Order, TestApp};

// ---------------------------------------------------------------- the runner

// ------------------------------------------------------------ the database

const TABLES: [&str; 4] = ["notifications", "contacts", "outbox", "inbox"];

// ------------------------------------------------------------ strategies

/// A page token as `orderflow_grpc::page_token` writes them, for forging.
fn keyset_token(micros: i64, id: Uuid, filter: &[Option<Uuid>]) -> String {
    let mut plain = format!("v1.{micros}.{}", id.simple());
    for f in filter {
        plain.push('.');
        match f {
            Some(id) => plain.push_str(&id.simple().to_string()),
            None => plain.push('-'),
        }
    }
    hex(&plain)
}

fn micros() -> BoxedStrategy<i64> {
    prop_oneof![
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
    ]
    .boxed()
}

/// Page tokens: real ones, forged ones for these filters or others, junk.
fn page_token(real: Vec<String>, ids: Vec<Uuid>) -> BoxedStrategy<String> {
    let filter = prop_oneof![
        Just(None),
        select(ids).prop_map(Some),
        uuid().prop_map(Some)
    ];
    prop_oneof![
        2 => Just(String::new()),
        2 => select(real),
        3 => (micros(), uuid(), vec_of_2(filter)).prop_map(|(m, id, f)| keyset_token(m, id, &f)),
        1 => (micros(), uuid()).prop_map(|(m, id)| keyset_token(m, id, &[None])),
        1 => "([0-9a-f]{2}){0,300}",
        1 => text().prop_map(|t| hex(&t)),
        1 => text().prop_map(|t| hex(&format!("v1.{t}"))),
        2 => text(),
    ]
    .boxed()
}

fn vec_of_2<S: Strategy + Clone>(s: S) -> impl Strategy<Value = Vec<S::Value>> {
    (s.clone(), s).prop_map(|(a, b)| vec![a, b])
}

/// Ids: the seeded ones, or hostile ones (which may be empty).
fn id(known: Vec<Uuid>) -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(known).prop_map(|u| u.to_string()),
        1 => Just(String::new()),
        4 => uuid_text(),
    ]
    .boxed()
}

// ------------------------------------------------------------ set-up

/// Notifications of a few orders of two customers, one of them by SMS;
/// returns (customers, orders).
async fn seed_notifications(app: &TestApp) -> (Vec<Uuid>, Vec<Uuid>) {
    let customers = vec![Uuid::new_v4(), Uuid::new_v4()];
    let mut orders = Vec::new();
    for i in 0..4 {
        let order = Order::new(customers[i % 2]);
        let phone = if i % 2 == 0 { "" } else { "+4915112345678" };
        order.happy_path(app, phone).await;
        if i == 3 {
            order.cancel(app).await;
        }
        orders.push(order.id);
    }
    (customers, orders)
}

// ------------------------------------------------------------ the RPC

#[tokio::test]
async fn hostile_list_notifications() {
    let app = TestApp::serve().await;
    let seed = seed();
    let mut conn = AsyncPgConnection::establish(app.db.url())
        .await
        .expect("connect");
    let (customers, orders) = seed_notifications(&app).await;
    // Tokens the server issued: by customer and by order.
    let mut real = Vec::new();
    for (customer_id, order_id) in [
        (customers[0].to_string(), String::new()),
        (String::new(), orders[3].to_string()),
    ] {
        let page = app
            .client()
            .list_notifications(as_admin(pb::ListNotificationsRequest {
                customer_id,
                order_id,
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .expect("first page")
            .into_inner();
        assert!(!page.next_page_token.is_empty());
        real.push(page.next_page_token);
    }
    let ids: Vec<Uuid> = customers.iter().chain(&orders).copied().collect();
    // A third of the tokens are forged for the request's own filters, so
    // that they get past the filter check to the time they carry.
    let forged = proptest::option::weighted(0.3, (micros(), uuid()));
    let requests = (
        id(customers),
        id(orders),
        page_size(),
        page_token(real, ids),
        forged,
    )
        .prop_map(|(customer_id, order_id, page_size, page_token, forged)| {
            let filter = |id: &str| Uuid::try_parse(id).ok();
            let page_token = match forged {
                Some((micros, id)) => {
                    keyset_token(micros, id, &[filter(&customer_id), filter(&order_id)])
                }
                None => page_token,
            };
            pb::ListNotificationsRequest {
                customer_id,
                order_id,
                page_size,
                page_token,
            }
        });
    let client = app.client();
    let tally = hostile(
        "ListNotifications",
        seed,
        requests,
        async |req: pb::ListNotificationsRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client
                .clone()
                .list_notifications(as_admin(req.clone()))
                .await;
            ensure_or!(
                Snapshot::take(&mut conn, &TABLES).await == before,
                "a read wrote"
            );
            match result {
                Ok(response) => {
                    let page = response.into_inner();
                    let limit = if req.page_size == 0 {
                        50
                    } else {
                        req.page_size as usize
                    };
                    ensure_or!(
                        page.notifications.len() <= limit,
                        "{} notifications on a page of {limit}",
                        page.notifications.len()
                    );
                    ensure_or!(
                        page.notifications
                            .iter()
                            .all(|n| (req.customer_id.is_empty()
                                || n.customer_id == req.customer_id.to_lowercase())
                                && (req.order_id.is_empty()
                                    || n.order_id == req.order_id.to_lowercase())),
                        "a notification outside the filters"
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

// ------------------------------------------------------------ size

/// tonic's default limit on a decoded message (no server sets another).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A request over the server's limit is refused before the handler sees
/// it: tonic 0.14 answers OUT_OF_RANGE ("decoded message length too
/// large"), where grpc-go would say RESOURCE_EXHAUSTED. Just under it,
/// validation answers.
#[tokio::test]
async fn hostile_message_size_limit() {
    let app = TestApp::serve().await;
    let mut conn = AsyncPgConnection::establish(app.db.url())
        .await
        .expect("connect");
    let before = Snapshot::take(&mut conn, &TABLES).await;
    let mut client = app.client();
    let request = |n: usize| pb::ListNotificationsRequest {
        customer_id: Uuid::new_v4().to_string(),
        page_token: "0".repeat(n),
        ..Default::default()
    };
    let status = client
        .list_notifications(as_admin(request(MAX_MESSAGE + 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");
    let status = client
        .list_notifications(as_admin(request(MAX_MESSAGE - 1024)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(Snapshot::take(&mut conn, &TABLES).await, before);
    client
        .list_notifications(as_admin(request(0)))
        .await
        .expect("still serving");
}
