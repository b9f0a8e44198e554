//! Events of the order aggregate, published on exchange `orderflow.order`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// A customer placed an order; inventory reserves stock for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<OrderPlacedLine>,
    /// The simulated gateway's card token (see the payment service's README).
    #[serde(default)]
    pub payment_token: String,
    /// E.164 phone number for SMS notifications; empty when not given.
    #[serde(default)]
    pub customer_phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlacedLine {
    pub product_id: Uuid,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "order.placed";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "order";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// The order will not be fulfilled; whatever was reserved or charged for it
/// must be released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    #[serde(default)]
    pub customer_email: String,
    pub reason: String,
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "order.cancelled";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "order";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// Stock is reserved and the payment went through: the order is fulfilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub total_minor: i64,
}

impl Event for OrderConfirmed {
    const TYPE: &'static str = "order.confirmed";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "order";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}
