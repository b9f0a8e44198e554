//! The consumer runtime against real RabbitMQ (a vhost per test) and real
//! PostgreSQL (a database per test, with an `effects` table that the test
//! handler writes to).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod batches;
mod delivery;
mod failures;
mod resilience;
