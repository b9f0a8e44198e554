//! The catalog service: what customers search. One entry per inventory
//! product, built only from inventory's events (the read side of CQRS:
//! inventory stays the write model and the source of truth).
//!
//! # Layout
//!
//! * `handlers`: one consumer per inventory event that changes what a
//!   customer sees; `apply`: the statements that write an event's product
//!   state into the catalog, keeping per product the newest (by its
//!   inventory version), whatever order events arrive in.
//! * `query`: the search language (words, "phrases", -exclusions, OR, the
//!   word being typed as a prefix), parsed into a PostgreSQL `tsquery`.
//! * `api` / `request` / `store`: SearchProducts, GetCatalogProduct and
//!   ListCategories: validation, then one read.
//! * `rebuild`: RebuildCatalog: a new generation filled from inventory's
//!   snapshot while the current one serves, then switched to.
//! * `metrics`: freshness (event time to applied).
//! * `app`: its name, API, handlers and metrics for the wiring every
//!   service shares (`orderflow_service`). `main.rs` is the CLI.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod apply;
pub mod cli;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod query;
pub mod rebuild;
pub mod request;
pub mod store;

/// CloudEvents `source` of every event this service writes.
pub const EVENT_SOURCE: &str = "orderflow/catalog";

static CATALOG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/catalog");

/// The common migrations followed by the catalog tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &CATALOG_MIGRATIONS,
};
