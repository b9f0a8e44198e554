//! `ConsumerConfig`: environment variables, each error naming its variable.

use std::time::Duration;

use orderflow_config::{ConfigError, Source};

/// How the runtime consumes and retries (environment variables in
/// [`ConsumerConfig::from_source`]; every error names its variable).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// Deliveries the broker sends ahead, unacked, per handler queue
    /// (`CONSUMER_PREFETCH`, 1..=10000, default 128).
    pub prefetch: u16,
    /// Most deliveries applied in one transaction (`CONSUMER_BATCH_SIZE`,
    /// 1..=1000, default 32; 1 = one transaction per message). A batch is
    /// what has arrived while the queue's transactions were busy, so under
    /// light load every message is applied alone, at once.
    pub batch_size: usize,
    /// Transactions in flight per handler queue (`CONSUMER_CONCURRENCY`,
    /// 1..=1000, default 1). Each holds a pooled connection. With 1, a
    /// batch is acked with one `basic.ack` (`multiple`), and batches of one
    /// queue never wait for each other's row locks.
    pub concurrency: usize,
    /// Deliveries of one message before it is parked (`CONSUMER_MAX_ATTEMPTS`,
    /// 1..=1000, default 5).
    pub max_attempts: u32,
    /// Delay before each retry, by attempt; the last repeats
    /// (`CONSUMER_RETRY_DELAYS_MS`, comma-separated milliseconds, default
    /// `1000,5000,30000`). One delay queue per entry.
    pub retry_delays: Vec<Duration>,
    /// TEST HOOK (`CONSUMER_FAULT_EXIT_AFTER_COMMIT=1`): exit the process with
    /// code 86 right after the first transaction that applied a message
    /// commits, before its ack, as a crash at the worst moment would. Never
    /// set it in production.
    pub fault_exit_after_commit: bool,
    /// TEST HOOK (`CONSUMER_FAULT_EXIT_AFTER_BATCH=1`): the same, after the
    /// first commit of a batch of more than one message.
    pub fault_exit_after_batch: bool,
}

/// The process exit code of the `CONSUMER_FAULT_EXIT_AFTER_COMMIT` hook.
pub const FAULT_EXIT_CODE: i32 = 86;

const DEFAULT_PREFETCH: u16 = 128;
const DEFAULT_BATCH_SIZE: usize = 32;
const DEFAULT_CONCURRENCY: usize = 1;
const DEFAULT_RETRY_DELAYS_MS: [u64; 3] = [1_000, 5_000, 30_000];
/// Retry delays are TTLs of delay queues: more than a day is a mistake.
const MAX_RETRY_DELAY_MS: u64 = 86_400_000;
const MAX_RETRY_QUEUES: usize = 16;

impl ConsumerConfig {
    /// The defaults with `amqp_url`: what `from_source` gives with nothing set.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            prefetch: DEFAULT_PREFETCH,
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: 5,
            retry_delays: DEFAULT_RETRY_DELAYS_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            fault_exit_after_commit: false,
            fault_exit_after_batch: false,
        }
    }

    /// # Errors
    /// A [`orderflow_config::ConfigError`] naming the variable.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            amqp_url: orderflow_amqp::amqp_url(src),
            prefetch: orderflow_config::in_range_or(
                src,
                "CONSUMER_PREFETCH",
                DEFAULT_PREFETCH,
                1..=10_000,
            )?,
            batch_size: orderflow_config::in_range_or(
                src,
                "CONSUMER_BATCH_SIZE",
                DEFAULT_BATCH_SIZE,
                1..=1_000,
            )?,
            concurrency: orderflow_config::in_range_or(
                src,
                "CONSUMER_CONCURRENCY",
                DEFAULT_CONCURRENCY,
                1..=1_000,
            )?,
            max_attempts: orderflow_config::in_range_or(
                src,
                "CONSUMER_MAX_ATTEMPTS",
                5,
                1..=1_000,
            )?,
            retry_delays: retry_delays(src, "CONSUMER_RETRY_DELAYS_MS")?,
            fault_exit_after_commit: flag(src, "CONSUMER_FAULT_EXIT_AFTER_COMMIT")?,
            fault_exit_after_batch: flag(src, "CONSUMER_FAULT_EXIT_AFTER_BATCH")?,
        })
    }
}

fn retry_delays(src: &dyn Source, key: &'static str) -> Result<Vec<Duration>, ConfigError> {
    let Some(value) = src.get(key) else {
        return Ok(DEFAULT_RETRY_DELAYS_MS
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect());
    };
    let invalid = |reason: String| ConfigError::Invalid {
        key,
        value: value.clone(),
        reason,
    };
    let mut delays = Vec::new();
    for part in value.split(',') {
        let ms: u64 = part.trim().parse().map_err(|_| {
            invalid(format!(
                "{:?} is not a whole number of milliseconds (expected e.g. 1000,5000,30000)",
                part.trim()
            ))
        })?;
        if !(1..=MAX_RETRY_DELAY_MS).contains(&ms) {
            return Err(invalid(format!(
                "each delay must be between 1 and {MAX_RETRY_DELAY_MS} ms"
            )));
        }
        delays.push(Duration::from_millis(ms));
    }
    if delays.len() > MAX_RETRY_QUEUES {
        return Err(invalid(format!(
            "at most {MAX_RETRY_QUEUES} delays (one queue each)"
        )));
    }
    Ok(delays)
}

fn flag(src: &dyn Source, key: &'static str) -> Result<bool, ConfigError> {
    match src.get(key).as_deref().map(str::trim) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            key,
            value: other.to_owned(),
            reason: "expected 1, 0, true or false".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = ConsumerConfig::from_source(&HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(c.prefetch, 128);
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.retry_delays, [1, 5, 30].map(Duration::from_secs).to_vec());
        assert!(!c.fault_exit_after_commit);
    }

    #[test]
    fn retry_delays_parse_and_errors_name_the_variable() {
        let src = HashMap::from([
            ("CONSUMER_RETRY_DELAYS_MS", " 50, 100 "),
            ("CONSUMER_FAULT_EXIT_AFTER_COMMIT", "1"),
        ]);
        let c = ConsumerConfig::from_source(&src).unwrap();
        assert_eq!(
            c.retry_delays,
            [50, 100].map(Duration::from_millis).to_vec()
        );
        assert!(c.fault_exit_after_commit);

        for bad in ["", "50,,100", "abc", "0", "100000000000"] {
            if bad.is_empty() {
                continue; // empty means unset
            }
            let src = HashMap::from([("CONSUMER_RETRY_DELAYS_MS", bad)]);
            let err = ConsumerConfig::from_source(&src).unwrap_err().to_string();
            assert!(err.contains("CONSUMER_RETRY_DELAYS_MS"), "{bad}: {err}");
        }
        for (key, bad) in [
            ("CONSUMER_PREFETCH", "0"),
            ("CONSUMER_BATCH_SIZE", "0"),
            ("CONSUMER_CONCURRENCY", "0"),
            ("CONSUMER_MAX_ATTEMPTS", "0"),
            ("CONSUMER_FAULT_EXIT_AFTER_COMMIT", "yes"),
        ] {
            let err = ConsumerConfig::from_source(&HashMap::from([(key, bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
