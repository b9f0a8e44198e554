//! The order service: places and cancels orders.
//!
//! # Layout
//!
//! * `api`: the gRPC surface. Protobuf in and out; every error becomes a
//!   status in one `From` impl. No SQL.
//! * `request`: validation. Turns a request into a typed command or one
//!   INVALID_ARGUMENT listing every bad field, before any transaction.
//! * `store`: the tables and the use cases. Each use case is one
//!   transaction that writes the order rows and their outbox events.
//! * `handlers`: the saga's consumers (payment.completed, payment.failed,
//!   inventory.rejected) that confirm or cancel a PENDING order.
//! * `metrics`: how sagas end (placed, confirmed, cancelled by reason).
//! * `app`: its name, API and handlers for the wiring every service shares
//!   (`orderflow_service`: pool, schema check, server, consumer). `main.rs`
//!   is the CLI.
//!
//! A CreateOrder goes `api::create_order` → `request::new_order` →
//! `store::create_order` (INSERT order ON CONFLICT (request_id) DO NOTHING,
//! lines, `orderflow_outbox::append(order.placed)`, COMMIT).

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod request;
pub mod store;

static ORDER_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/order");

/// The common migrations followed by the order tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &ORDER_MIGRATIONS,
};
