use orderflow_consumer::HandlerError;
use orderflow_notification::handlers::{
    NotifyOrderCancelled, NotifyOrderConfirmed, NotifyOrderPlaced, NotifyPaymentCompleted,
};
use uuid::Uuid;

use crate::helpers::{EMAIL, Order, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn each_customer_facing_event_is_notified_once() {
    let app = TestApp::new().await;
    let order = Order::new(Uuid::new_v4());
    let confirmed = order.confirmed();

    app.handle(&NotifyOrderPlaced, order.placed(""))
        .await
        .unwrap();
    app.handle(&NotifyPaymentCompleted, order.paid())
        .await
        .unwrap();
    app.handle(&NotifyOrderConfirmed, confirmed.clone())
        .await
        .unwrap();
    // The same event delivered again (e.g. a message the inbox did not
    // catch) sends nothing new.
    app.handle(&NotifyOrderConfirmed, confirmed.clone())
        .await
        .unwrap();
    app.handle(&NotifyOrderConfirmed, confirmed.clone())
        .await
        .unwrap();
    order.cancel(&app).await;

    let rows = app.notifications().await;
    let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.placed",
            "payment.completed",
            "order.confirmed",
            "order.cancelled"
        ]
    );
    assert_eq!(
        rows.iter().filter(|r| r.event_id == confirmed.id).count(),
        1
    );
    let id = order.id.to_string();
    for row in &rows {
        assert_eq!(row.order_id, order.id);
        assert_eq!(
            (row.channel.as_str(), row.recipient.as_str()),
            ("EMAIL", EMAIL)
        );
        assert!(row.subject.contains(&id), "{row:?}");
        assert!(row.body.contains(&id), "{row:?}");
    }
    assert!(
        rows[0].body.contains("34.99 EUR") && rows[0].body.contains("2 item(s)"),
        "{:?}",
        rows[0]
    );
    assert!(
        rows[1].body.contains("We charged 34.99 EUR"),
        "{:?}",
        rows[1]
    );
    assert!(rows[2].subject.contains("confirmed"), "{:?}", rows[2]);
    assert!(
        rows[3]
            .body
            .contains("cancelled: payment failed: card declined"),
        "{:?}",
        rows[3]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_when_a_phone_is_known_else_email() {
    let app = TestApp::new().await;
    let (texter, mailer) = (Uuid::new_v4(), Uuid::new_v4());
    let first = Order::new(texter);
    first.happy_path(&app, "+4915112345678").await;
    // A later order without a phone: the customer's phone is remembered.
    let second = Order::new(texter);
    second.happy_path(&app, "").await;
    second.cancel(&app).await;
    let other = Order::new(mailer);
    other.happy_path(&app, "").await;

    let rows = app.notifications().await;
    assert_eq!(rows.len(), 10);
    for row in &rows {
        let expected = if row.order_id == other.id {
            ("EMAIL", EMAIL)
        } else {
            ("SMS", "+4915112345678")
        };
        assert_eq!(
            (row.channel.as_str(), row.recipient.as_str()),
            expected,
            "{row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_phone_replaces_the_old_one_and_a_bad_one_is_ignored() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    Order::new(customer)
        .happy_path(&app, "+4915112345678")
        .await;
    let changed = Order::new(customer);
    app.handle(&NotifyOrderPlaced, changed.placed("+33612345678"))
        .await
        .unwrap();
    let bad = Order::new(customer);
    app.handle(&NotifyOrderPlaced, bad.placed("0800-CALL-ME"))
        .await
        .unwrap();

    let rows = app.notifications().await;
    let last_two: Vec<_> = rows[rows.len() - 2..]
        .iter()
        .map(|r| (r.channel.as_str(), r.recipient.as_str()))
        .collect();
    assert_eq!(last_two, [("SMS", "+33612345678"), ("SMS", "+33612345678")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_with_no_way_to_reach_the_customer_is_rejected() {
    let app = TestApp::new().await;
    let order = Order::new(Uuid::new_v4());
    let err = app
        .handle(&NotifyOrderCancelled, order.cancelled(""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HandlerError::Reject(reason) if reason.contains(&order.customer.to_string())),
        "{err:?}"
    );
    assert!(app.notifications().await.is_empty());
}
