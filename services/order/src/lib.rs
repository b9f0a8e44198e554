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
//! * `app`: wiring (pool, schema check, server). `main.rs` is the CLI.
//!
//! A CreateOrder goes `api::create_order` → `request::new_order` →
//! `store::create_order` (INSERT order ON CONFLICT (request_id) DO NOTHING,
//! lines, `orderflow_outbox::append(order.placed)`, COMMIT).

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod config;
mod currency;
pub mod request;
pub mod store;

static ORDER_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/order");

/// The common migrations followed by the order tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &ORDER_MIGRATIONS,
};
