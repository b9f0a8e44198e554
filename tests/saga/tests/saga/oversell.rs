//! 1,000 concurrent one-unit orders for 300 units of one hot product:
//! exactly 300 sold, whatever batches the consumers apply them in.

use std::time::Duration;

use tokio::task::JoinSet;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::harness::{System, create_request, line, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_orders_for_three_hundred_units_sell_exactly_three_hundred() {
    let system = System::start().await;
    let product = system.stock_product(300).await;
    let client = system.order_client().await;

    let mut calls = JoinSet::new();
    for _ in 0..1000 {
        let mut client = client.clone();
        calls.spawn(async move {
            // A burst this size on the harness's 4 connections may be shed
            // (RESOURCE_EXHAUSTED, RetryInfo): a client retries it, with the
            // same request_id, so a retry never orders twice.
            let request = create_request(vec![line(product, 1)], "tok_visa");
            let mut attempts = 0;
            loop {
                attempts += 1;
                match client.create_order(request.clone()).await {
                    Err(status)
                        if status.code() == tonic::Code::ResourceExhausted && attempts < 100 =>
                    {
                        // When the server says to retry (RetryInfo).
                        let delay = status
                            .get_details_retry_info()
                            .and_then(|r| r.retry_delay)
                            .expect("a shed call carries RetryInfo");
                        tokio::time::sleep(delay).await;
                    }
                    answer => {
                        break answer
                            .map(|r| r.into_inner().order.map(|o| o.id).unwrap_or_default());
                    }
                }
            }
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = calls.join_next().await {
        let id = done
            .unwrap()
            .unwrap_or_else(|e| panic!("CreateOrder failed: {e}"));
        ids.push(id.parse::<Uuid>().unwrap());
    }
    assert_eq!(ids.len(), 1000);

    wait_for(
        "all 1000 orders leave PENDING",
        Duration::from_secs(120),
        || async {
            let pending = system
                .scalar(
                    "order",
                    "SELECT count(*) FROM orders WHERE status = 'PENDING' AND id = ANY($1)",
                    &[&ids],
                )
                .await;
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} PENDING"))
            }
        },
    )
    .await;
    system.wait_idle(Duration::from_secs(60)).await;

    let count = |status: &'static str| {
        let ids = &ids;
        let system = &system;
        async move {
            system
                .scalar(
                    "order",
                    "SELECT count(*) FROM orders WHERE status = $1 AND id = ANY($2)",
                    &[&status, ids],
                )
                .await
        }
    };
    let (confirmed, cancelled) = (count("CONFIRMED").await, count("CANCELLED").await);
    assert_eq!(
        (confirmed, cancelled),
        (300, 700),
        "(CONFIRMED, CANCELLED) for 1000 orders of 1 unit on 300 units"
    );
    assert_eq!(
        system.stock(product).await,
        (0, 0),
        "(on_hand, reserved) once all is sold"
    );
    let completed = system
        .scalar(
            "payment",
            "SELECT count(*) FROM payments WHERE status = 'COMPLETED'",
            &[],
        )
        .await;
    assert_eq!(completed, 300, "one COMPLETED payment per confirmed order");
}
