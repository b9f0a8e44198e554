//! The inventory service: the product catalogue, its stock, and the
//! reservations the order saga makes.
//!
//! # Layout
//!
//! * `api`: the gRPC surface. Protobuf in and out; every error becomes a
//!   status in one `From` impl. No SQL.
//! * `request`: validation. Turns a request into a typed command or one
//!   INVALID_ARGUMENT listing every bad field, before any transaction.
//! * `store`: the product table and the operator use cases (upsert, get,
//!   list, adjust). Each is one transaction with its outbox event.
//! * `import`: ImportStock, the bulk import of a stock file streamed by
//!   the client: rows validated one by one, upserted by SKU in chunks.
//! * `handlers`: the saga's consumers (reserve, release, commit). Each runs
//!   inside the consumer runtime's transaction, next to its inbox row.
//! * `snapshot`: a catalog rebuild's snapshot of every product, one page
//!   per consumer transaction.
//! * `app`: its name, API and handlers for the wiring every service shares
//!   (`orderflow_service`: pool, schema check, server, consumer). `main.rs`
//!   is the CLI.
//!
//! Lock order, everywhere: the reservation row first, then product rows in
//! `product_id` order. So concurrent orders never deadlock on stock.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod config;
pub mod handlers;
pub mod import;
pub mod request;
pub mod schema;
pub mod snapshot;
pub mod store;

/// CloudEvents `source` of every event this service writes.
pub const EVENT_SOURCE: &str = "orderflow/inventory";

static INVENTORY_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/inventory");

/// The common migrations followed by the inventory tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &INVENTORY_MIGRATIONS,
};
