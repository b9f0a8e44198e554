//! The payment service: charges orders whose stock is reserved, through a
//! simulated card gateway, and refunds them when they are cancelled.
//!
//! # Layout
//!
//! * `gateway`: the simulated card gateway, deterministic rules (README.md),
//!   called through a circuit breaker (`breaker`), one per process.
//! * `handlers`: the saga steps as consumer handlers (`charge`,
//!   `refund-on-order-cancelled`).
//! * `api`: the read-only gRPC surface; errors become statuses there.
//! * `request`: validation, before any database access.
//! * `store`: the tables, the reads and the saga steps' transactions bodies.
//! * `app`: its name, API and handlers for the wiring every service shares
//!   (`orderflow_service`: pool, schema check, server, consumer). `main.rs`
//!   is the CLI.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod breaker;
pub mod config;
pub mod gateway;
pub mod handlers;
pub mod request;
pub mod store;

static PAYMENT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/payment");

/// The common migrations followed by the payment tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &PAYMENT_MIGRATIONS,
};
