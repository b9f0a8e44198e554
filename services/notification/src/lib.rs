//! The notification service: one message to the customer per
//! customer-facing event (order.placed, order.confirmed, order.cancelled,
//! payment.completed). Sending is simulated: a notification is stored,
//! logged and listable, and nothing leaves the machine.
//!
//! # Layout
//!
//! * `handlers`: one consumer handler per event.
//! * `message`: the wording, a pure function of the event; `money` formats
//!   amounts.
//! * `store`: the tables; channel choice (SMS when a phone is known, else
//!   e-mail) and the insert, once per event id.
//! * `api` / `request`: ListNotifications and its validation.
//! * `app`: its name, API and handlers for the wiring every service shares
//!   (`orderflow_service`: pool, schema check, server, consumer). `main.rs`
//!   is the CLI.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use orderflow_db::ServiceMigrations;

pub mod api;
pub mod app;
pub mod config;
pub mod handlers;
pub mod message;
pub mod money;
pub mod request;
pub mod store;

static NOTIFICATION_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/notification");

/// The common migrations followed by the notification tables.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: &NOTIFICATION_MIGRATIONS,
};
