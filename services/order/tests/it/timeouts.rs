//! A statement that outlives DATABASE_STATEMENT_TIMEOUT is cancelled by
//! PostgreSQL: the caller gets UNAVAILABLE (retry later), never INTERNAL,
//! and the transaction leaves nothing behind.

use diesel_async::SimpleAsyncConnection as _;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, order_request};

#[tokio::test]
async fn a_statement_timeout_is_unavailable_and_writes_nothing() {
    let app = TestApp::spawn_with(&[("DATABASE_STATEMENT_TIMEOUT", "300ms")]).await;
    // Another session holds the outbox: the order row goes in, the event
    // cannot, and PostgreSQL cancels the waiting statement.
    let mut blocker = app.sql().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let refused = app.create(order_request(Uuid::new_v4())).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    drop(blocker);

    assert_eq!(app.count("orders").await, 0, "the order rolled back");
    assert_eq!(app.count("order_lines").await, 0);
    assert_eq!(app.count("outbox").await, 0);

    // The pool recovered: the same service takes the next order whole.
    let order = app.create(order_request(Uuid::new_v4())).await.unwrap();
    assert_eq!(order.lines.len(), 2);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}
