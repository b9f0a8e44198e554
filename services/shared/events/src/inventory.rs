//! Events of the inventory service, published on exchange `orderflow.inventory`.
//!
//! A reservation is keyed by its order: `aggregate_id` is the order id, so
//! an order's reserved/released events are published in commit order.
//!
//! Every event that changes a product's catalogue data or its units on hand
//! carries the product's `version` after the change (since dataversion 2):
//! it grows with every such change, so a reader that follows products from
//! several streams (the catalog) keeps the newest state whatever order the
//! events arrive in. A version-1 event carries none (read as 0: older than
//! anything versioned).

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
    /// The product's stock once this transaction moved the units (since
    /// version 2; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<StockLevel>,
}

/// A product's units on hand (what can still be sold) at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub version: i64,
}

impl Event for InventoryReserved {
    const TYPE: &'static str = "inventory.reserved";
    /// 2: each line's `stock`.
    const VERSION: u32 = 2;
    const MIN_VERSION: u32 = 1;
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
    /// 2: each line's `stock`.
    const VERSION: u32 = 2;
    const MIN_VERSION: u32 = 1;
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
    /// Since version 2.
    #[serde(default)]
    pub description: Option<String>,
    /// Since version 2.
    #[serde(default)]
    pub category: Option<String>,
    /// Since version 2.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Since version 2; 0 in version 1.
    #[serde(default)]
    pub version: i64,
}

impl Event for ProductUpserted {
    const TYPE: &'static str = "inventory.product_upserted";
    /// 2: description, category, tags, version.
    const VERSION: u32 = 2;
    const MIN_VERSION: u32 = 1;
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
    /// Since version 2; 0 in version 1.
    #[serde(default)]
    pub version: i64,
}

impl Event for StockAdjusted {
    const TYPE: &'static str = "inventory.stock_adjusted";
    /// 2: version.
    const VERSION: u32 = 2;
    const MIN_VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "product";
    fn aggregate_id(&self) -> Uuid {
        self.product_id
    }
}

/// The products one committed chunk of a stock import (ImportStock)
/// created or changed, with their state after the chunk. Rows that changed
/// nothing are not listed, and a chunk that changed nothing writes no
/// event, so re-running an import writes none.
///
/// One event per chunk, not per product: a 2,000,000-row import writes a
/// few hundred events instead of two million, which the relay publishes in
/// seconds instead of minutes, ahead of the saga's own events rather than
/// in front of them. The aggregate is the import, so an import's chunks are
/// published in order; between this stream and the per-product events
/// there is no order, which each product's `version` settles.
///
/// Each product is an array in the order of `columns` rather than an
/// object: PostgreSQL parses the outbox payload into jsonb, and parsing
/// 400 chunk events of 5,000 objects took 12.4 s of the database's CPU in
/// a 2M-row import against 7.1 s for arrays (measured on this machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockImported {
    pub import_id: Uuid,
    /// The rows of the file this chunk covered (rejected rows included).
    pub first_row: i64,
    pub last_row: i64,
    /// What each product array holds: [`IMPORTED_COLUMNS`] (version 1: its
    /// first seven).
    pub columns: Vec<String>,
    pub products: Vec<ImportedProduct>,
}

/// The fields of each product array, in order; version 1 has the first
/// seven.
pub const IMPORTED_COLUMNS: [&str; 11] = [
    "product_id",
    "sku",
    "name",
    "currency",
    "unit_price_minor",
    "on_hand",
    "created",
    "description",
    "category",
    "tags",
    "version",
];

/// Serialized as an array in [`IMPORTED_COLUMNS`] order; a seven-element
/// array (version 1) reads with no description, category or tags and
/// version 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ProductArray", from = "ProductArray")]
pub struct ImportedProduct {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub currency: String,
    pub unit_price_minor: i64,
    pub on_hand: i64,
    /// True for a new product, false for a changed one.
    pub created: bool,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub version: i64,
}

type ProductArrayV1 = (Uuid, String, String, String, i64, i64, bool);
type ProductArrayV2 = (
    Uuid,
    String,
    String,
    String,
    i64,
    i64,
    bool,
    Option<String>,
    Option<String>,
    Vec<String>,
    i64,
);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ProductArray {
    V2(ProductArrayV2),
    V1(ProductArrayV1),
}

impl From<ImportedProduct> for ProductArray {
    fn from(p: ImportedProduct) -> Self {
        Self::V2((
            p.product_id,
            p.sku,
            p.name,
            p.currency,
            p.unit_price_minor,
            p.on_hand,
            p.created,
            p.description,
            p.category,
            p.tags,
            p.version,
        ))
    }
}

impl From<ProductArray> for ImportedProduct {
    fn from(array: ProductArray) -> Self {
        let (
            (product_id, sku, name, currency, unit_price_minor, on_hand, created),
            (description, category, tags, version),
        ) = match array {
            ProductArray::V2((a, b, c, d, e, f, g, h, i, j, k)) => {
                ((a, b, c, d, e, f, g), (h, i, j, k))
            }
            ProductArray::V1(v1) => (v1, (None, None, Vec::new(), 0)),
        };
        Self {
            product_id,
            sku,
            name,
            currency,
            unit_price_minor,
            on_hand,
            created,
            description,
            category,
            tags,
            version,
        }
    }
}

impl Event for StockImported {
    const TYPE: &'static str = "inventory.stock_imported";
    /// 2: description, category, tags and version in each product array.
    const VERSION: u32 = 2;
    const MIN_VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "stock_import";
    fn aggregate_id(&self) -> Uuid {
        self.import_id
    }
}

/// One page of inventory's snapshot for a catalog rebuild: products in
/// `product_id` order, each an array in [`IMPORTED_COLUMNS`] order
/// (`created` is false). Pages are numbered from 0 and keyed by the
/// rebuild, so they are published in order; inventory writes the next page
/// when it consumes this one, until `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    pub rebuild_id: Uuid,
    pub generation: i32,
    pub page: i64,
    pub last: bool,
    /// Products when the snapshot began (for progress).
    pub total: i64,
    pub columns: Vec<String>,
    pub products: Vec<ImportedProduct>,
}

impl Event for CatalogSnapshot {
    const TYPE: &'static str = "inventory.catalog_snapshot";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "catalog_rebuild";
    fn aggregate_id(&self) -> Uuid {
        self.rebuild_id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn imported_products_are_arrays_in_column_order_and_version_1_still_reads() {
        let id = Uuid::now_v7();
        let event = StockImported {
            import_id: Uuid::new_v4(),
            first_row: 2,
            last_row: 9,
            columns: IMPORTED_COLUMNS.map(str::to_owned).to_vec(),
            products: vec![ImportedProduct {
                product_id: id,
                sku: "A".into(),
                name: "Mug".into(),
                currency: "EUR".into(),
                unit_price_minor: 1250,
                on_hand: 3,
                created: true,
                description: Some("Stoneware".into()),
                category: None,
                tags: vec!["kitchen".into()],
                version: 4,
            }],
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["products"][0],
            serde_json::json!([
                id,
                "A",
                "Mug",
                "EUR",
                1250,
                3,
                true,
                "Stoneware",
                null,
                ["kitchen"],
                4
            ])
        );
        assert_eq!(json["columns"][4], "unit_price_minor");
        let back: StockImported = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, event);

        let mut v1 = json;
        v1["products"][0] = serde_json::json!([id, "A", "Mug", "EUR", 1250, 3, true]);
        let old: StockImported = serde_json::from_value(v1).unwrap();
        assert_eq!(old.products[0].name, "Mug");
        assert_eq!(
            (old.products[0].description.clone(), old.products[0].version),
            (None, 0)
        );
    }

    #[test]
    fn version_1_payloads_read_with_defaults() {
        let upserted: ProductUpserted = serde_json::from_value(serde_json::json!({
            "product_id": Uuid::nil(), "sku": "A", "name": "Mug", "currency": "EUR",
            "unit_price_minor": 1, "on_hand": 2
        }))
        .unwrap();
        assert_eq!((upserted.version, upserted.tags.len()), (0, 0));
        let line: ReservedLine =
            serde_json::from_value(serde_json::json!({"product_id": Uuid::nil(), "quantity": 1}))
                .unwrap();
        assert_eq!(line.stock, None);
        // A version-2 line without stock writes no `stock` key.
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            serde_json::json!({"product_id": Uuid::nil(), "quantity": 1})
        );
    }
}
