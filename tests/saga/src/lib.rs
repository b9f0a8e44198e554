//! The saga's end-to-end tests live in `tests/saga/` (one test binary, a
//! shared harness in `tests/saga/harness.rs`): every test starts the four
//! service binaries and the outbox-relay on databases and a RabbitMQ vhost
//! of its own. This library is empty.
