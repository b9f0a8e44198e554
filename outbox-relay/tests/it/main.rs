//! The relay binary against real PostgreSQL and RabbitMQ: one database and
//! one vhost per test. Relays run as processes so they can be SIGKILLed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod helpers;

mod browser;
mod crash;
mod dashboard;
mod delivery;
mod poison;
