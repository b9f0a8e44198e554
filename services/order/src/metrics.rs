//! How sagas end, on the order service's /metrics: orders placed, confirmed,
//! and cancelled by reason. Counted after the transaction that settled the
//! order committed (`orderflow_db::after_commit`), so a retried message
//! counts once.

use std::sync::LazyLock;

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why an order was cancelled: a small fixed set, so the label stays
/// bounded (the free-text reason is on the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelCause {
    /// inventory.rejected: not enough stock.
    OutOfStock,
    /// payment.failed: the gateway declined.
    PaymentFailed,
    /// CancelOrder: the customer.
    Customer,
}

impl CancelCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentFailed => "payment_failed",
            Self::Customer => "customer",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Default)]
struct Saga {
    placed: Counter,
    confirmed: Counter,
    cancelled: Family<Labels, Counter>,
}

/// One set per process: the store functions count into it wherever they
/// run (gRPC call or consumed message).
static SAGA: LazyLock<Saga> = LazyLock::new(Saga::default);

/// Adds the saga counters to the service's registry.
pub fn register(registry: &mut Registry) {
    registry.register(
        "saga_orders_placed",
        "Orders created by CreateOrder (a retried request_id counts once)",
        SAGA.placed.clone(),
    );
    registry.register(
        "saga_orders_confirmed",
        "Orders the saga confirmed (payment completed)",
        SAGA.confirmed.clone(),
    );
    registry.register(
        "saga_orders_cancelled",
        "Orders cancelled, by reason (out_of_stock, payment_failed, customer)",
        SAGA.cancelled.clone(),
    );
}

pub(crate) fn placed() {
    SAGA.placed.inc();
}

/// Counts a confirmation once the current transaction commits.
pub(crate) fn confirmed_on_commit() {
    orderflow_db::after_commit(|| {
        SAGA.confirmed.inc();
    });
}

/// Counts a cancellation once the current transaction commits.
pub(crate) fn cancelled_on_commit(cause: CancelCause) {
    orderflow_db::after_commit(move || {
        SAGA.cancelled
            .get_or_create(&vec![("reason", cause.as_str())])
            .inc();
    });
}
