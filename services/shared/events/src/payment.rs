//! Events of the payment service, published on exchange `orderflow.payment`.
//! `aggregate_id` is the payment id: a payment's completed/refunded events
//! are published in commit order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// The simulated gateway charged the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub amount_minor: i64,
}

impl Event for PaymentCompleted {
    const TYPE: &'static str = "payment.completed";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "payment";
    fn aggregate_id(&self) -> Uuid {
        self.payment_id
    }
}

/// The gateway declined the charge; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub amount_minor: i64,
    /// e.g. `card declined`, `amount over the limit`.
    pub reason: String,
}

impl Event for PaymentFailed {
    const TYPE: &'static str = "payment.failed";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "payment";
    fn aggregate_id(&self) -> Uuid {
        self.payment_id
    }
}

/// A completed payment was given back (the order was cancelled meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub amount_minor: i64,
    pub reason: String,
}

impl Event for PaymentRefunded {
    const TYPE: &'static str = "payment.refunded";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "payment";
    fn aggregate_id(&self) -> Uuid {
        self.payment_id
    }
}
