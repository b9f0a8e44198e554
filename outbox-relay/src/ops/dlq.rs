//! Consumer queues and their dead letters, through RabbitMQ's management API
//! (depths, consumers) and AMQP (reading, retrying and discarding messages).
//!
//! Messages are read with `basic.get` without ack and given back by closing
//! the channel, never by a nack: a quorum queue counts nacks towards its
//! delivery limit, and a peek must not bring a dead letter closer to being
//! dropped. A retried message is published to its work queue, confirmed,
//! and only then acked in the DLQ: a crash in between leaves a duplicate,
//! which the consumer's inbox absorbs, never a loss.

use std::{collections::HashSet, time::Duration};

use orderflow_amqp::lapin::{
    BasicProperties, Channel, Confirmation,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Actor, Ops, OpsError, OpsResult, events::audit};
use crate::config::RelayConfig;

/// Headers the consumer runtime sets when it parks a message; a retry
/// clears them so the message gets its full number of attempts again.
const PARKING_HEADERS: [&str; 5] = [
    "x-error",
    "x-error-kind",
    "x-failed-at",
    "x-attempt",
    "x-handler",
];
/// Messages read per action at most, so one call stays bounded.
const MAX_SCAN: u32 = 10_000;
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the consumer queues live.
#[derive(Clone)]
pub struct DeadLetters {
    /// One reader of the DLQs at a time in this process: a peek holds the
    /// messages it read (unacked) until it closes its channel, and a retry
    /// or discard running meanwhile would not see them.
    exclusive: std::sync::Arc<tokio::sync::Mutex<()>>,
    http: reqwest::Client,
    management: url::Url,
    vhost: String,
    amqp_url: String,
}

/// Which messages of a DLQ an action takes.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DlqSelection {
    #[serde(default)]
    pub message_ids: Vec<String>,
    #[serde(default)]
    pub all: bool,
    pub reason: Option<String>,
}

impl DlqSelection {
    fn ids(&self) -> OpsResult<Option<HashSet<String>>> {
        let ids: HashSet<String> = self
            .message_ids
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        match (self.all, ids.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(ids)),
            _ => Err(OpsError::BadRequest(
                "give either message_ids or all: true".to_owned(),
            )),
        }
    }
}

impl DeadLetters {
    /// # Errors
    /// A malformed `RELAY_RABBITMQ_MANAGEMENT_URL`.
    pub fn new(config: &RelayConfig) -> anyhow::Result<Self> {
        let management = url::Url::parse(&config.management_url).map_err(|e| {
            anyhow::anyhow!(
                "RELAY_RABBITMQ_MANAGEMENT_URL={}: {e}",
                orderflow_db::redact(&config.management_url)
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            exclusive: std::sync::Arc::default(),
            http,
            management,
            vhost: config.vhost.clone(),
            amqp_url: config.amqp_url.clone(),
        })
    }

    async fn get_json(&self, path: &str) -> OpsResult<Value> {
        let mut url = self.management.clone();
        let user = url.username().to_owned();
        let password = url.password().map(str::to_owned);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_path(path);
        let response = self
            .http
            .get(url)
            .basic_auth(user, password)
            .send()
            .await
            .map_err(|e| {
                OpsError::Upstream(format!("RabbitMQ management API: {}", e.without_url()))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(OpsError::Upstream(format!(
                "RabbitMQ management API answered {status} for {path}"
            )));
        }
        response.json().await.map_err(|e| {
            OpsError::Upstream(format!("RabbitMQ management API: {}", e.without_url()))
        })
    }

    /// `(name, messages, consumers)` of every queue of the vhost.
    async fn queue_stats(&self) -> OpsResult<Vec<(String, i64, i64)>> {
        let vhost =
            percent_encoding::utf8_percent_encode(&self.vhost, percent_encoding::NON_ALPHANUMERIC);
        let queues = self.get_json(&format!("/api/queues/{vhost}")).await?;
        Ok(queues
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                (
                    q["name"].as_str().unwrap_or_default().to_owned(),
                    q["messages"].as_i64().unwrap_or(0),
                    q["consumers"].as_i64().unwrap_or(0),
                )
            })
            .collect())
    }

    /// Every work queue that has a DLQ, and the unrouted queue, with depths.
    ///
    /// # Errors
    /// The management API cannot be read.
    pub async fn queues(&self) -> OpsResult<Vec<Value>> {
        let stats = self.queue_stats().await?;
        let depth = |name: &str| stats.iter().find(|(n, _, _)| n == name).map(|(_, m, _)| *m);
        let mut rows: Vec<Value> = stats
            .iter()
            .filter(|(name, _, _)| {
                name == orderflow_amqp::Topology::UNROUTED
                    || depth(&format!("{name}.dlq")).is_some()
            })
            .map(|(name, messages, consumers)| {
                let dlq = format!("{name}.dlq");
                let dlq_messages = depth(&dlq);
                json!({
                    "name": name, "messages": messages, "consumers": consumers,
                    "dlq": dlq_messages.map(|_| dlq), "dlq_messages": dlq_messages,
                })
            })
            .collect();
        rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(rows)
    }

    /// The DLQs with their depths.
    ///
    /// # Errors
    /// The management API cannot be read.
    pub async fn dead_letter_queues(&self) -> OpsResult<Value> {
        let mut queues: Vec<Value> = self
            .queue_stats()
            .await?
            .into_iter()
            .filter_map(|(name, messages, _)| {
                let work = name.strip_suffix(".dlq")?.to_owned();
                Some(json!({ "queue": name, "work_queue": work, "messages": messages }))
            })
            .collect();
        queues.sort_by(|a, b| a["queue"].as_str().cmp(&b["queue"].as_str()));
        Ok(json!({ "queues": queues }))
    }

    async fn channel(
        &self,
        queue: &str,
    ) -> OpsResult<(orderflow_amqp::lapin::Connection, Channel, u32)> {
        if !queue.ends_with(".dlq") {
            return Err(OpsError::BadRequest(format!(
                "{queue:?} is not a dead-letter queue (<queue>.dlq)"
            )));
        }
        let upstream = |e: &dyn std::fmt::Display| OpsError::Upstream(format!("RabbitMQ: {e}"));
        let conn = orderflow_amqp::connect(&self.amqp_url, "outbox-relay/ops")
            .await
            .map_err(|e| upstream(&format!("{e:#}")))?;
        let channel = conn.create_channel().await.map_err(|e| upstream(&e))?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|_| OpsError::NotFound(format!("no queue {queue:?}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| upstream(&e))?;
        Ok((conn, channel, declared.message_count().min(MAX_SCAN)))
    }
}

impl Ops {
    /// The first `limit` messages of a DLQ, left in place.
    ///
    /// # Errors
    /// Not a DLQ, unknown queue, RabbitMQ unreachable.
    pub async fn peek_dead_letters(&self, queue: &str, limit: u32) -> OpsResult<Value> {
        let _one_at_a_time = self.dlq.exclusive.lock().await;
        let (conn, channel, count) = self.dlq.channel(queue).await?;
        let mut messages = Vec::new();
        for _ in 0..count.min(limit) {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| OpsError::Upstream(format!("RabbitMQ: {e}")))?
            {
                Some(m) => messages.push(describe(
                    &m.delivery.properties,
                    &m.delivery.data,
                    &m.delivery.routing_key.to_string(),
                )),
                None => break,
            }
        }
        // Closing gives the unacked messages back, in their order.
        let _ = channel.close(200, "peeked".into()).await;
        let _ = conn.close(200, "peeked".into()).await;
        Ok(json!({ "messages": messages }))
    }

    /// Moves the selected messages of `queue` back to its work queue.
    ///
    /// # Errors
    /// A bad selection, unknown queue, RabbitMQ unreachable; a failure midway
    /// leaves the remaining messages in the DLQ.
    pub async fn retry_dead_letters(
        &self,
        actor: &Actor,
        queue: &str,
        sel: &DlqSelection,
    ) -> OpsResult<Value> {
        let wanted = sel.ids()?;
        let _one_at_a_time = self.dlq.exclusive.lock().await;
        let work = queue.trim_end_matches(".dlq").to_owned();
        let source = self.source_of_queue(queue)?;
        let (conn, channel, count) = self.dlq.channel(queue).await?;
        let mut retried = Vec::new();
        let result = async {
            for _ in 0..count {
                let Some(m) = channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| OpsError::Upstream(format!("RabbitMQ: {e}")))?
                else {
                    break;
                };
                let d = m.delivery;
                let id = message_id(&d.properties);
                if wanted.as_ref().is_some_and(|w| !w.contains(&id)) {
                    continue; // held unacked: given back when the channel closes
                }
                publish_confirmed(&channel, &work, &d.data, retry_properties(&d.properties))
                    .await?;
                channel
                    .basic_ack(d.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|e| OpsError::Upstream(format!("RabbitMQ: {e}")))?;
                retried.push(id);
            }
            Ok::<_, OpsError>(())
        }
        .await;
        let _ = channel.close(200, "retried".into()).await;
        let _ = conn.close(200, "retried".into()).await;
        if !retried.is_empty() {
            let mut db = source.pool.get().await?;
            audit(
                &mut db,
                &actor.operator,
                "dlq-retry",
                queue,
                sel.reason.as_deref().filter(|r| !r.trim().is_empty()),
                retried.len(),
                json!({ "message_ids": retried, "work_queue": work }),
            )
            .await?;
        }
        result?;
        if retried.is_empty() {
            return Err(OpsError::Conflict(format!(
                "no matching message in {queue}"
            )));
        }
        Ok(json!({ "retried": retried.len() }))
    }

    /// Removes the selected messages of `queue`, each recorded with its body
    /// in the audit log before it is acked.
    ///
    /// # Errors
    /// As [`Self::retry_dead_letters`]; a reason is required.
    pub async fn discard_dead_letters(
        &self,
        actor: &Actor,
        queue: &str,
        sel: &DlqSelection,
    ) -> OpsResult<Value> {
        let wanted = sel.ids()?;
        let reason = super::required_text("reason", sel.reason.as_deref(), 500)?;
        let _one_at_a_time = self.dlq.exclusive.lock().await;
        let source = self.source_of_queue(queue)?;
        let (conn, channel, count) = self.dlq.channel(queue).await?;
        let mut db = source.pool.get().await?;
        let mut discarded = 0usize;
        let result = async {
            for _ in 0..count {
                let Some(m) = channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| OpsError::Upstream(format!("RabbitMQ: {e}")))?
                else {
                    break;
                };
                let d = m.delivery;
                let id = message_id(&d.properties);
                if wanted.as_ref().is_some_and(|w| !w.contains(&id)) {
                    continue;
                }
                let detail = describe(&d.properties, &d.data, &d.routing_key.to_string());
                audit(
                    &mut db,
                    &actor.operator,
                    "dlq-discard",
                    queue,
                    Some(&reason),
                    1,
                    detail,
                )
                .await?;
                channel
                    .basic_ack(d.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|e| OpsError::Upstream(format!("RabbitMQ: {e}")))?;
                discarded += 1;
            }
            Ok::<_, OpsError>(())
        }
        .await;
        let _ = channel.close(200, "discarded".into()).await;
        let _ = conn.close(200, "discarded".into()).await;
        result?;
        if discarded == 0 {
            return Err(OpsError::Conflict(format!(
                "no matching message in {queue}"
            )));
        }
        Ok(json!({ "discarded": discarded }))
    }
}

async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> OpsResult<()> {
    let upstream = |e: String| OpsError::Upstream(format!("RabbitMQ: {e}"));
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .map_err(|e| upstream(e.to_string()))?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(OpsError::Conflict(format!(
            "work queue {queue} does not exist: the message stays in the DLQ"
        ))),
        Ok(Ok(other)) => Err(upstream(format!(
            "publish to {queue} not confirmed: {other:?}"
        ))),
        Ok(Err(e)) => Err(upstream(e.to_string())),
        Err(_) => Err(upstream(format!(
            "no confirm for {queue} in {CONFIRM_TIMEOUT:?}"
        ))),
    }
}

fn message_id(props: &BasicProperties) -> String {
    props
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The original properties without the parking headers.
fn retry_properties(props: &BasicProperties) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    let kept: FieldTable = headers
        .inner()
        .iter()
        .filter(|(k, _)| !PARKING_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers = kept;
    props.clone().with_headers(headers)
}

fn header_text(headers: Option<&FieldTable>, key: &str) -> Value {
    match headers.and_then(|h| h.inner().get(key)) {
        Some(v) => amqp_json(v),
        None => Value::Null,
    }
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), amqp_json(v)))
                .collect(),
        ),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        other => json!(format!("{other:?}")),
    }
}

/// A dead letter as the API shows it.
fn describe(props: &BasicProperties, body: &[u8], routing_key: &str) -> Value {
    let headers = props.headers().as_ref();
    let original_key = header_text(headers, "x-original-routing-key");
    json!({
        "message_id": message_id(props),
        "type": props.kind().as_ref().map(ToString::to_string),
        "routing_key": if original_key.is_null() { json!(routing_key) } else { original_key },
        "exchange": header_text(headers, "x-original-exchange"),
        "error": header_text(headers, "x-error"),
        "error_kind": header_text(headers, "x-error-kind"),
        "handler": header_text(headers, "x-handler"),
        "failed_at": header_text(headers, "x-failed-at"),
        "attempt": header_text(headers, "x-attempt"),
        "body": String::from_utf8_lossy(&body[..body.len().min(65_536)]),
        "headers": headers.map(|h| amqp_json(&AMQPValue::FieldTable(h.clone()))).unwrap_or(Value::Null),
    })
}
