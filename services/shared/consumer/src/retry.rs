//! The retry path and the parking lot.
//!
//! A transient failure is republished, unchanged but for its headers, to a
//! delay queue; its TTL dead-letters it back to the work queue. A message
//! that can never succeed, or failed `max_attempts` times, is republished to
//! the DLQ with the reason in its headers. Both publishes wait for the
//! broker's confirm and happen before the original is acked: a crash in
//! between leaves a duplicate (which the inbox absorbs), never a loss.

use std::time::Duration;

use anyhow::Context as _;
use orderflow_amqp::lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};

use crate::delivery::{
    ATTEMPT_HEADER, Meta, ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER,
};

/// How long a republish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a message was parked (`x-error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No UUID message_id, not JSON, or the payload does not parse.
    Malformed,
    /// An event type or `dataversion` this handler does not read.
    Unsupported,
    /// The handler returned [`crate::HandlerError::Reject`].
    Rejected,
    /// Transient failures on every one of `max_attempts` deliveries.
    Exhausted,
}

impl FailureKind {
    pub const ALL: [Self; 4] = [
        Self::Malformed,
        Self::Unsupported,
        Self::Rejected,
        Self::Exhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unsupported => "unsupported",
            Self::Rejected => "rejected",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Publishes to the runtime's own queues through the default exchange, with
/// publisher confirms (the channel is in confirm mode).
#[derive(Clone)]
pub(crate) struct Republisher {
    channel: Channel,
}

impl Republisher {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// False once the channel is closed (then every send fails).
    pub fn usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Sends `body` to `queue` and waits until the broker has it.
    ///
    /// # Errors
    /// When the publish fails, is nacked or returned, or no confirm comes.
    pub async fn send(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await
            .with_context(|| format!("cannot publish to {queue}"))?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .with_context(|| {
                format!("no confirm from the broker for {queue} in {CONFIRM_TIMEOUT:?}")
            })?
            .with_context(|| format!("publish to {queue} not confirmed"))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => anyhow::bail!(
                "returned by the broker: {} {} (does queue {queue} exist?)",
                returned.reply_code,
                returned.reply_text
            ),
            Confirmation::Nack(_) => anyhow::bail!("nacked by the broker (queue {queue})"),
            Confirmation::NotRequested => {
                anyhow::bail!("the publish channel is not in confirm mode")
            }
        }
    }
}

/// The original properties with the headers of the next attempt, after
/// `failures` failed deliveries.
pub(crate) fn retry_properties(
    original: &BasicProperties,
    meta: &Meta,
    failures: u32,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    set(
        &mut headers,
        ATTEMPT_HEADER,
        AMQPValue::LongLongInt(failures.into()),
    );
    set_text(
        &mut headers,
        ORIGINAL_EXCHANGE_HEADER,
        &meta.original_exchange,
    );
    set_text(
        &mut headers,
        ORIGINAL_ROUTING_KEY_HEADER,
        &meta.original_routing_key,
    );
    original.clone().with_headers(headers)
}

/// The original properties with the reason for parking in the headers.
pub(crate) fn dead_letter_properties(
    original: &BasicProperties,
    meta: &Meta,
    handler: &str,
    kind: FailureKind,
    error: &str,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    set_text(&mut headers, "x-error", truncated(error, MAX_ERROR_BYTES));
    set_text(&mut headers, "x-error-kind", kind.as_str());
    set(
        &mut headers,
        ATTEMPT_HEADER,
        AMQPValue::LongLongInt(meta.attempt().into()),
    );
    set_text(&mut headers, "x-handler", handler);
    set_text(
        &mut headers,
        ORIGINAL_EXCHANGE_HEADER,
        &meta.original_exchange,
    );
    set_text(
        &mut headers,
        ORIGINAL_ROUTING_KEY_HEADER,
        &meta.original_routing_key,
    );
    set_text(
        &mut headers,
        "x-failed-at",
        &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    original.clone().with_headers(headers)
}

/// Headers must fit in one AMQP frame with everything else.
const MAX_ERROR_BYTES: usize = 4096;

fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn set(headers: &mut FieldTable, key: &'static str, value: AMQPValue) {
    headers.insert(key.into(), value);
}

fn set_text(headers: &mut FieldTable, key: &'static str, value: &str) {
    set(headers, key, AMQPValue::LongString(value.into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
    }
}
