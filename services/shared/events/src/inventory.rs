//! Events of the inventory service, published on exchange `orderflow.inventory`.
//!
//! A reservation is keyed by its order: `aggregate_id` is the order id, so
//! an order's reserved/released events are published in commit order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// Every line of the order is reserved. Carries what payment needs to
/// charge, so the payment service does not depend on the order service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub total_minor: i64,
    pub payment_token: String,
    pub lines: Vec<ReservedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    pub product_id: Uuid,
    pub quantity: i32,
}

impl Event for InventoryReserved {
    const TYPE: &'static str = "inventory.reserved";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "reservation";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// Nothing was reserved: at least one line could not be (all or nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRejected {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// For people, e.g. `insufficient stock for product 0190...: 3 requested, 1 available`.
    pub reason: String,
    pub shortages: Vec<Shortage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub product_id: Uuid,
    pub requested: i32,
    /// 0 for an unknown product.
    pub available: i64,
}

impl Event for InventoryRejected {
    const TYPE: &'static str = "inventory.rejected";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "reservation";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// A reservation was given back (payment failed or the order was cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReleased {
    pub order_id: Uuid,
    pub reason: String,
    pub lines: Vec<ReservedLine>,
}

impl Event for InventoryReleased {
    const TYPE: &'static str = "inventory.released";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "reservation";
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// A product was created or its catalogue data changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpserted {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub currency: String,
    pub unit_price_minor: i64,
    pub on_hand: i64,
}

impl Event for ProductUpserted {
    const TYPE: &'static str = "inventory.product_upserted";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "product";
    fn aggregate_id(&self) -> Uuid {
        self.product_id
    }
}

/// Stock on hand changed by an operator (not by a reservation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub product_id: Uuid,
    pub delta: i64,
    pub on_hand: i64,
    pub reason: String,
}

impl Event for StockAdjusted {
    const TYPE: &'static str = "inventory.stock_adjusted";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "product";
    fn aggregate_id(&self) -> Uuid {
        self.product_id
    }
}
