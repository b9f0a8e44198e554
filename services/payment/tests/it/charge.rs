use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_consumer::Handler as _;
use orderflow_events::CloudEvent;
use orderflow_payment::handlers::Charge;
use uuid::Uuid;

use crate::helpers::{TestApp, reserved};

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_charge_completes_the_payment_and_emits_payment_completed() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    let event = reserved(customer, "tok_visa", 2500);
    let order_id = event.order_id;

    app.charge(event).await;

    let payments = app.payments().await;
    assert_eq!(payments.len(), 1);
    let p = &payments[0];
    assert_eq!((p.order_id, p.status.as_str()), (order_id, "COMPLETED"));
    assert_eq!(p.amount_minor, 2500);
    assert_eq!(p.reason, None);
    assert_eq!(
        p.gateway_reference.as_deref(),
        Some(format!("sim_{}", p.payment_id.simple()).as_str())
    );
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event_type, "payment.completed");
    let data = &outbox[0].payload["data"];
    assert_eq!(data["payment_id"], p.payment_id.to_string());
    assert_eq!(data["order_id"], order_id.to_string());
    assert_eq!(data["customer_id"], customer.to_string());
    assert_eq!(data["customer_email"], "ada@example.com");
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["amount_minor"], 2500);
    assert_eq!(outbox[0].payload["source"], "orderflow/payment");
}

#[tokio::test(flavor = "multi_thread")]
async fn declined_cards_fail_the_payment_with_the_gateways_reason() {
    let app = TestApp::new().await;
    for (token, amount, reason) in [
        ("tok_declined", 2500, "card declined"),
        ("tok_insufficient_funds", 2500, "insufficient funds"),
        ("tok_visa", 1_000_001, "amount over the limit"),
    ] {
        let event = reserved(Uuid::new_v4(), token, amount);
        let order_id = event.order_id;
        app.charge(event).await;

        let payment = app
            .payments()
            .await
            .into_iter()
            .find(|p| p.order_id == order_id)
            .expect("a payment row");
        assert_eq!(payment.status, "FAILED", "{token}");
        assert_eq!(payment.reason.as_deref(), Some(reason));
        assert_eq!(payment.gateway_reference, None);
        let last = app.outbox().await.pop().expect("an event");
        assert_eq!(last.event_type, "payment.failed", "{token}");
        assert_eq!(last.payload["data"]["reason"], reason);
        assert_eq!(last.payload["data"]["order_id"], order_id.to_string());
        assert_eq!(last.payload["data"]["amount_minor"], amount);
    }
    assert_eq!(app.outbox().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limit_itself_is_approved() {
    let app = TestApp::new().await;
    app.charge(reserved(Uuid::new_v4(), "tok_visa", 1_000_000))
        .await;
    assert_eq!(app.payments().await[0].status, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_reservation_of_the_same_order_charges_nothing() {
    let app = TestApp::new().await;
    let event = reserved(Uuid::new_v4(), "tok_visa", 2500);
    // Two distinct messages (different event ids) for one order, e.g. a
    // republished reservation: the inbox would not catch this, the
    // payments.order_id rule does.
    app.charge(event.clone()).await;
    let mut again = event.clone();
    again.payment_token = "tok_declined".into();
    app.charge(again).await;

    assert_eq!(app.payments().await.len(), 1);
    assert_eq!(app.payments().await[0].status, "COMPLETED");
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1, "{outbox:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_copies_of_one_reservation_charge_once() {
    let app = TestApp::new().await;
    let event = reserved(Uuid::new_v4(), "tok_visa", 2500);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = app.db.url().to_owned();
        let event = CloudEvent::new("orderflow/inventory", event.clone());
        tasks.spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            conn.transaction(async |conn| Charge::default().handle(conn, event).await)
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(app.payments().await.len(), 1);
    assert_eq!(app.outbox().await.len(), 1);
}
