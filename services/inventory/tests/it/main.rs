//! Integration tests of the inventory service against a real PostgreSQL:
//! one fresh database per test; the gRPC server in process on an ephemeral
//! port; the saga handlers called inside transactions the tests open, as the
//! consumer runtime would.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod access;
mod adjust;
mod commit;
mod details;
mod hostile;
mod import;
mod list;
mod release;
mod reserve;
mod snapshot;
mod upsert;
