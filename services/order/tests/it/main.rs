//! Integration tests of the order service against a real PostgreSQL: one
//! fresh database per test, the server in process on an ephemeral port.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod access;
mod atomicity;
mod cancel;
mod create;
mod hostile;
mod list;
mod timeouts;
