//! The saga end to end: the four service binaries and the outbox-relay of
//! this workspace (`target/debug`, built by `cargo build --workspace`), each
//! test on databases and a RabbitMQ vhost of its own, driven with real
//! grpcurl (`GRPCURL` or PATH) and, for concurrency, the tonic client.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod harness;
mod otlp;

mod cancel;
mod catalog;
mod chaos;
mod crash;
mod duplicates;
mod metrics;
mod mixed;
mod oversell;
mod paths;
mod tracing;
