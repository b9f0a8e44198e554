//! Integration tests of the notification service against a real
//! PostgreSQL: one fresh database per test. Handlers run inside a
//! transaction opened here, as the consumer runtime would; the API runs in
//! process on an ephemeral port.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod api;
mod handlers;
mod hostile;
