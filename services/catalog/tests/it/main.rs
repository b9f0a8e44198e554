//! Integration tests of the catalog service against a real PostgreSQL: one
//! fresh database per test; the gRPC server in process on an ephemeral
//! port; the handlers called inside transactions the tests open, as the
//! consumer runtime would (its inbox, retries and DLQ are tested in
//! orderflow-consumer; the whole path in the saga tests).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod apply;
mod hostile;
mod rebuild;
mod search;
