//! A mixed run: many orders over a few products with limited stock, some
//! declined cards, some cancelled by the customer; then the invariants.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tokio::{sync::Semaphore, task::JoinSet};
use uuid::Uuid;

use crate::harness::{System, cancel_request, create_request, line, wait_for};

const PRODUCTS: usize = 10;
const STOCK: i64 = 300;
const IN_FLIGHT: usize = 32;

/// `SAGA_MIXED_ORDERS` overrides the number of orders (default 2,000).
fn orders() -> usize {
    std::env::var("SAGA_MIXED_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

struct Plan {
    lines: Vec<(Uuid, i32)>,
    declined: bool,
    /// When the customer cancels, if at all.
    cancel: Option<CancelAt>,
}

/// Points of the saga at which a customer cancels, so that cancels land
/// before the reservation, between reservation and payment, and after it
/// (then refunded, or refused once CONFIRMED).
#[derive(Debug, Clone, Copy)]
enum CancelAt {
    /// As soon as CreateOrder answered.
    Created,
    /// Once inventory decided (reservation row, any status).
    Reserved,
    /// Once payment decided, or inventory rejected (no payment will come).
    Charged,
}

/// Where the cancel-point conditions are read.
struct Probes {
    inventory: tokio_postgres::Client,
    payment: tokio_postgres::Client,
}

impl Probes {
    async fn connect(system: &System) -> Arc<Self> {
        let connect = |url: String| async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
        };
        Arc::new(Self {
            inventory: connect(system.db_url("inventory").to_owned()).await,
            payment: connect(system.db_url("payment").to_owned()).await,
        })
    }

    async fn count(client: &tokio_postgres::Client, sql: &str, id: Uuid) -> Result<i64, String> {
        client
            .query_one(sql, &[&id])
            .await
            .map(|row| row.get(0))
            .map_err(|e| e.to_string())
    }

    /// Waits until the saga reached `at` for order `id`.
    async fn reached(&self, at: CancelAt, id: Uuid) -> Result<(), String> {
        let reservation = "SELECT count(*) FROM reservations WHERE order_id = $1";
        let rejected =
            "SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'REJECTED'";
        let payment = "SELECT count(*) FROM payments WHERE order_id = $1";
        match at {
            CancelAt::Created => {}
            CancelAt::Reserved => {
                wait_for(
                    "the reservation is decided",
                    Duration::from_secs(60),
                    || async {
                        match Self::count(&self.inventory, reservation, id).await? {
                            0 => Err("no reservation yet".to_owned()),
                            _ => Ok(()),
                        }
                    },
                )
                .await;
            }
            CancelAt::Charged => {
                wait_for(
                    "the payment is decided",
                    Duration::from_secs(60),
                    || async {
                        let paid = Self::count(&self.payment, payment, id).await?;
                        let rejected = Self::count(&self.inventory, rejected, id).await?;
                        if paid + rejected > 0 {
                            Ok(())
                        } else {
                            Err("no payment and no rejection yet".to_owned())
                        }
                    },
                )
                .await;
            }
        }
        Ok(())
    }
}

struct Outcome {
    id: Uuid,
    declined: bool,
    /// None: not cancelled; Some(true): accepted; Some(false): refused.
    cancel_accepted: Option<bool>,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_run_conserves_stock_and_settles_every_order() {
    let n = orders();
    let system = System::start().await;
    let mut products = Vec::new();
    for _ in 0..PRODUCTS {
        products.push(system.stock_product(STOCK).await);
    }
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let plans: Vec<Plan> = (0..n)
        .map(|_| {
            let count = rng.random_range(1..=2);
            let mut chosen = BTreeSet::new();
            while chosen.len() < count {
                chosen.insert(products[rng.random_range(0..PRODUCTS)]);
            }
            Plan {
                lines: chosen
                    .into_iter()
                    .map(|p| (p, rng.random_range(1..=3)))
                    .collect(),
                declined: rng.random_bool(0.10),
                cancel: rng.random_bool(0.05).then(|| {
                    [CancelAt::Created, CancelAt::Reserved, CancelAt::Charged]
                        [rng.random_range(0..3)]
                }),
            }
        })
        .collect();

    let started = Instant::now();
    let client = system.order_client().await;
    let probes = Probes::connect(&system).await;
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut calls = JoinSet::new();
    for plan in plans {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let mut client = client.clone();
        let probes = probes.clone();
        calls.spawn(async move {
            let _permit = permit;
            let lines = plan.lines.iter().map(|(p, q)| line(*p, *q)).collect();
            let token = if plan.declined {
                "tok_declined"
            } else {
                "tok_visa"
            };
            let order = client
                .create_order(create_request(lines, token))
                .await
                .map_err(|e| format!("CreateOrder: {e}"))?
                .into_inner()
                .order
                .ok_or("CreateOrder answered no order")?;
            let cancel_accepted = if let Some(at) = plan.cancel {
                let id: Uuid = order.id.parse().map_err(|e| format!("order id: {e}"))?;
                probes.reached(at, id).await?;
                match client
                    .cancel_order(cancel_request(&order.id, "mixed run"))
                    .await
                {
                    Ok(_) => Some(true),
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => Some(false),
                    Err(s) => return Err(format!("CancelOrder: {s}")),
                }
            } else {
                None
            };
            Ok::<_, String>(Outcome {
                id: order.id.parse().map_err(|e| format!("order id: {e}"))?,
                declined: plan.declined,
                cancel_accepted,
            })
        });
    }
    let mut outcomes = Vec::with_capacity(n);
    while let Some(done) = calls.join_next().await {
        outcomes.push(done.unwrap().unwrap_or_else(|e| panic!("{e}")));
    }
    let placed = started.elapsed();

    wait_for("no order is PENDING", Duration::from_secs(120), || async {
        let pending = system
            .scalar(
                "order",
                "SELECT count(*) FROM orders WHERE status = 'PENDING'",
                &[],
            )
            .await;
        if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} PENDING; {}", system.progress().await))
        }
    })
    .await;
    system.wait_idle(Duration::from_secs(120)).await;
    let settled = started.elapsed();
    system.wait_queues_drained(Duration::from_secs(30)).await;

    // Every order ended, with a reason when cancelled.
    let rows = system
        .sql("order")
        .query(
            "SELECT id, status, coalesce(cancel_reason, '') FROM orders",
            &[],
        )
        .await
        .unwrap();
    let orders: BTreeMap<Uuid, (String, String)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(orders.len(), n, "every CreateOrder made one order");
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, (status, reason)) in &orders {
        match status.as_str() {
            "CONFIRMED" => assert!(
                reason.is_empty(),
                "{id}: CONFIRMED with a reason {reason:?}"
            ),
            "CANCELLED" => {
                assert!(!reason.is_empty(), "{id}: CANCELLED without a reason");
                let kind = if reason.starts_with("out of stock") {
                    "out of stock"
                } else if reason.starts_with("payment failed") {
                    "payment failed"
                } else if reason.starts_with("cancelled by the customer") {
                    "by the customer"
                } else {
                    "other"
                };
                *by_reason.entry(kind).or_default() += 1;
            }
            other => panic!("{id}: ends {other}, expected CONFIRMED or CANCELLED"),
        }
    }
    assert_eq!(
        by_reason.get("other"),
        None,
        "every cancel reason is one of the saga's: {by_reason:?}"
    );
    let confirmed: BTreeSet<Uuid> = orders
        .iter()
        .filter(|(_, (s, _))| s == "CONFIRMED")
        .map(|(id, _)| *id)
        .collect();
    for o in &outcomes {
        let (status, reason) = &orders[&o.id];
        if o.declined {
            assert_ne!(
                status, "CONFIRMED",
                "{}: a declined card was confirmed",
                o.id
            );
        }
        match o.cancel_accepted {
            Some(true) => assert!(
                status == "CANCELLED",
                "{}: the customer's cancel was accepted but the order ends {status} ({reason})",
                o.id
            ),
            Some(false) => assert_eq!(
                status, "CONFIRMED",
                "{}: a cancel is refused only for a CONFIRMED order",
                o.id
            ),
            None => {}
        }
    }

    // Stock: initial = on_hand + units of confirmed orders; reserved = 0.
    let sold: BTreeMap<Uuid, i64> = system
        .sql("order")
        .query(
            "SELECT l.product_id, sum(l.quantity)::bigint FROM order_lines l \
             JOIN orders o ON o.id = l.order_id WHERE o.status = 'CONFIRMED' GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stock = system
        .sql("inventory")
        .query("SELECT product_id, on_hand, reserved FROM products", &[])
        .await
        .unwrap();
    assert_eq!(stock.len(), PRODUCTS);
    for row in &stock {
        let (id, on_hand, reserved): (Uuid, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let sold = sold.get(&id).copied().unwrap_or(0);
        assert_eq!(
            (on_hand + sold, reserved),
            (STOCK, 0),
            "product {id}: (on_hand {on_hand} + sold {sold}, reserved) must be (initial stock, 0)"
        );
    }

    // Payments: COMPLETED exactly for the confirmed orders; refunds and
    // failures only for cancelled ones.
    let payments: Vec<(Uuid, String)> = system
        .sql("payment")
        .query("SELECT order_id, status FROM payments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let completed: BTreeSet<Uuid> = payments
        .iter()
        .filter(|(_, s)| s == "COMPLETED")
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(
        completed.len(),
        confirmed.len(),
        "COMPLETED payments vs CONFIRMED orders"
    );
    assert!(
        completed == confirmed,
        "the COMPLETED payments are those of the CONFIRMED orders"
    );
    let mut refunded = 0;
    let mut failed = 0;
    for (order, status) in &payments {
        if status != "COMPLETED" {
            assert_eq!(
                orders.get(order).map(|(s, _)| s.as_str()),
                Some("CANCELLED"),
                "order {order} has a {status} payment: it must be CANCELLED"
            );
        }
        refunded += usize::from(status == "REFUNDED");
        failed += usize::from(status == "FAILED");
    }

    let refused = outcomes
        .iter()
        .filter(|o| o.cancel_accepted == Some(false))
        .count();
    let retries = system.count_logged("transient failure; retrying later");
    println!(
        "mixed run: {n} orders over {PRODUCTS} products x {STOCK} units (seed {seed}): placed in {:.1}s, \
         settled in {:.1}s ({:.0} orders/s); {} CONFIRMED, {} CANCELLED {by_reason:?}; \
         payments {} completed, {refunded} refunded, {failed} failed; {refused} cancels refused; \
         {retries} consumer retries",
        placed.as_secs_f64(),
        settled.as_secs_f64(),
        n as f64 / settled.as_secs_f64(),
        confirmed.len(),
        n - confirmed.len(),
        completed.len(),
    );
}
