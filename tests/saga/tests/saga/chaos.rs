//! Chaos: orders at a steady rate while the relay and two consumers are
//! SIGKILLed and restarted, RabbitMQ connections are dropped twice and a
//! PostgreSQL backend is terminated, each at a random point of the run.
//! Afterwards every order is terminal, stock is conserved, every event was
//! published and applied exactly once per handler, and no effect happened
//! twice.
//!
//! CI runs a short version; the full one on demand:
//! `CHAOS_ORDERS=5000 CHAOS_RATE=100 cargo xtask test -E 'test(chaos)' --no-capture`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::harness::{System, create_request, line, wait_for};

const PRODUCTS: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillRelay,
    KillConsumer(&'static str),
    DropConnections,
    TerminateBackend(&'static str),
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_leaves_every_order_settled_and_every_effect_applied_once() {
    let n = env_or("CHAOS_ORDERS", 400);
    let rate = env_or("CHAOS_RATE", 40).max(1);
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut system = System::start().await;
    // Enough stock for about two thirds of the demand: some orders sell out.
    let stock = i64::try_from(n).unwrap_or(i64::MAX) * 2 / PRODUCTS as i64 + 1;
    let mut products = Vec::new();
    for _ in 0..PRODUCTS {
        products.push(system.stock_product(stock).await);
    }

    // The faults, each triggered once a random share of the orders is placed.
    let mut faults = vec![
        Fault::KillRelay,
        Fault::KillConsumer("inventory"),
        Fault::KillConsumer("payment"),
        Fault::DropConnections,
        Fault::DropConnections,
        Fault::TerminateBackend(["order", "inventory", "payment"][rng.random_range(0..3)]),
    ];
    faults.shuffle(&mut rng);
    let mut schedule: Vec<(usize, Fault)> = faults
        .into_iter()
        .map(|f| (rng.random_range(n / 10..n * 9 / 10), f))
        .collect();
    schedule.sort_by_key(|(at, _)| *at);

    // Orders at a steady rate from a task of their own.
    let placed = Arc::new(AtomicUsize::new(0));
    let client = system.order_client().await;
    let plans: Vec<(Vec<(Uuid, i32)>, bool)> = (0..n)
        .map(|_| {
            let a = products[rng.random_range(0..PRODUCTS)];
            let b = products[rng.random_range(0..PRODUCTS)];
            let mut lines = vec![(a, rng.random_range(1..=2))];
            if b != a {
                lines.push((b, 1));
            }
            (lines, rng.random_bool(0.1))
        })
        .collect();
    let started = Instant::now();
    let placer = {
        let placed = placed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let mut calls = JoinSet::new();
            for (lines, declined) in plans {
                tick.tick().await;
                let mut client = client.clone();
                let placed = placed.clone();
                calls.spawn(async move {
                    let lines = lines.iter().map(|(p, q)| line(*p, *q)).collect();
                    let token = if declined { "tok_declined" } else { "tok_visa" };
                    // CreateOrder is idempotent by request_id: a call that
                    // failed (a terminated backend answers UNAVAILABLE) is
                    // repeated as a client would, a bounded number of times.
                    let request = create_request(lines, token);
                    let mut attempts = 0;
                    while let Err(s) = client.create_order(request.clone()).await {
                        attempts += 1;
                        assert!(attempts < 100, "CreateOrder failed 100 times: {s}");
                        tokio::task::yield_now().await;
                    }
                    placed.fetch_add(1, Ordering::SeqCst);
                });
            }
            while let Some(done) = calls.join_next().await {
                done.expect("a CreateOrder task panicked");
            }
        })
    };

    let mut injected = Vec::new();
    for (at, fault) in schedule {
        wait_for(
            &format!("{at} orders are placed before {fault:?}"),
            Duration::from_secs(600),
            || {
                let now = placed.load(Ordering::SeqCst);
                async move {
                    if now >= at {
                        Ok(())
                    } else {
                        Err(format!("{now} placed"))
                    }
                }
            },
        )
        .await;
        let what = match fault {
            Fault::KillRelay => {
                system.kill_relay().await;
                system.restart_relay().await;
                "relay SIGKILLed and restarted".to_owned()
            }
            Fault::KillConsumer(svc) => {
                system.kill(svc).await;
                system.restart(svc).await;
                format!("{svc} SIGKILLed and restarted")
            }
            Fault::DropConnections => {
                // The clients reconnect by themselves (the consumers at once,
                // the relay's publishers when they next have something to
                // send): the final checks, everything published and applied,
                // prove they did. A drop right after another may find none
                // open yet (the management API also lists them a few seconds
                // late), so it waits until it has closed some.
                let closed = wait_for(
                    "AMQP connections to close",
                    Duration::from_secs(60),
                    || async {
                        match system.drop_amqp_connections().len() {
                            0 => Err("none open yet".to_owned()),
                            n => Ok(n),
                        }
                    },
                )
                .await;
                format!("{closed} AMQP connections closed")
            }
            Fault::TerminateBackend(svc) => {
                let done = system.terminate_backend(svc).await;
                format!("a {svc} database backend terminated: {done}")
            }
        };
        injected.push(format!("after {at} orders: {what}"));
    }
    placer.await.expect("the placing task panicked");
    let placed_in = started.elapsed();

    wait_for("no order is PENDING", Duration::from_secs(180), || async {
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
    // Every event published and applied by every handler it is routed to.
    system.wait_idle(Duration::from_secs(120)).await;
    let settled_in = started.elapsed();

    // Orders: n of them, all terminal.
    let statuses: BTreeMap<String, i64> = system
        .sql("order")
        .query("SELECT status, count(*) FROM orders GROUP BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses.values().sum::<i64>(),
        i64::try_from(n).unwrap(),
        "one order per CreateOrder (retries are idempotent): {statuses:?}"
    );
    assert!(
        statuses
            .keys()
            .all(|s| s == "CONFIRMED" || s == "CANCELLED"),
        "every order is terminal: {statuses:?}"
    );

    // Effects once: stock conserved, one completed payment per confirmed
    // order, one notification per (order, event type).
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
    let mut stock_errors = 0;
    for row in system
        .sql("inventory")
        .query("SELECT product_id, on_hand, reserved FROM products", &[])
        .await
        .unwrap()
    {
        let (id, on_hand, reserved): (Uuid, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if on_hand + sold.get(&id).copied().unwrap_or(0) != stock || reserved != 0 {
            stock_errors += 1;
        }
    }
    let confirmed = statuses.get("CONFIRMED").copied().unwrap_or(0);
    let completed = system
        .scalar(
            "payment",
            "SELECT count(*) FROM payments WHERE status = 'COMPLETED'",
            &[],
        )
        .await;
    let double_notifications = system
        .scalar(
            "notification",
            "SELECT coalesce(sum(c - 1), 0)::bigint FROM (
                 SELECT count(*) AS c FROM notifications GROUP BY order_id, event_type) n",
            &[],
        )
        .await;
    let duplicate_effects = stock_errors + (completed - confirmed).abs() + double_notifications;

    let outbox = system.outbox().await;
    let written = outbox.len();
    let published = outbox.iter().filter(|r| r.3).count();
    let duplicates = system.duplicates_logged();
    println!(
        "chaos run (seed {seed}): {n} orders at {rate}/s, placed in {:.1}s, settled in {:.1}s",
        placed_in.as_secs_f64(),
        settled_in.as_secs_f64()
    );
    for fault in &injected {
        println!("  {fault}");
    }
    println!("  | events written | published | duplicates delivered | duplicate effects | lost |");
    println!("  |---|---|---|---|---|");
    println!(
        "  | {written} | {published} | {duplicates} | {duplicate_effects} | {} |",
        written - published
    );
    println!("  orders: {statuses:?}");
    assert_eq!(
        published, written,
        "every event was published (lost must be 0)"
    );
    assert_eq!(stock_errors, 0, "stock is conserved for every product");
    assert_eq!(
        completed, confirmed,
        "one completed payment per confirmed order"
    );
    assert_eq!(double_notifications, 0, "no notification twice");
}
