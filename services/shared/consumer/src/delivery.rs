//! Reading a delivery: its AMQP metadata and the event it carries.
//!
//! A message is decoded in two steps so that a producer's newer schema is
//! told apart from garbage: first only `type` and `dataversion` of the
//! envelope (a mismatch is `unsupported`), then the whole
//! `CloudEvent<E>` (a failure is `malformed`).

use orderflow_amqp::lapin::{
    BasicProperties,
    message::Delivery,
    types::{AMQPValue, FieldTable},
};
use orderflow_events::{CloudEvent, Event};
use serde::Deserialize;
use uuid::Uuid;

use crate::retry::FailureKind;

/// Header: how many deliveries of this message failed before this one.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Headers: where the message was first published (a retried message
/// arrives from the default exchange, so the runtime carries them along).
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";

/// What the runtime needs of a delivery besides its body.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// The AMQP message_id as sent, if any (not necessarily a UUID).
    pub message_id: Option<String>,
    /// The AMQP `type` property, else the routing key.
    pub event_type: String,
    /// Failed deliveries before this one (`x-attempt`, 0 when absent).
    pub failures: u32,
    pub original_exchange: String,
    pub original_routing_key: String,
}

impl Meta {
    pub fn of(delivery: &Delivery) -> Self {
        let props = &delivery.properties;
        let headers = props.headers().as_ref();
        let event_type = props
            .kind()
            .as_ref()
            .map_or_else(|| delivery.routing_key.to_string(), ToString::to_string);
        Self {
            message_id: props.message_id().as_ref().map(ToString::to_string),
            event_type,
            failures: headers
                .and_then(|h| header_u32(h, ATTEMPT_HEADER))
                .unwrap_or(0),
            original_exchange: headers
                .and_then(|h| header_string(h, ORIGINAL_EXCHANGE_HEADER))
                .unwrap_or_else(|| delivery.exchange.to_string()),
            original_routing_key: headers
                .and_then(|h| header_string(h, ORIGINAL_ROUTING_KEY_HEADER))
                .unwrap_or_else(|| delivery.routing_key.to_string()),
        }
    }

    /// This delivery's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.failures.saturating_add(1)
    }
}

/// Why a message can never be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undecodable {
    pub kind: FailureKind,
    pub reason: String,
}

impl Undecodable {
    fn malformed(reason: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Malformed,
            reason: reason.into(),
        }
    }
}

/// The envelope fields that decide whether this handler can read the rest.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    event_type: String,
    dataversion: u32,
}

/// The inbox key and the event of `body`, checked against `E`.
pub(crate) fn decode<E: Event>(
    properties: &BasicProperties,
    body: &[u8],
) -> Result<(Uuid, CloudEvent<E>), Undecodable> {
    let message_id = properties
        .message_id()
        .as_ref()
        .ok_or_else(|| Undecodable::malformed("no AMQP message_id (the inbox key)"))?;
    let message_id = Uuid::parse_str(message_id.as_str()).map_err(|e| {
        Undecodable::malformed(format!(
            "AMQP message_id {:?} is not a UUID: {e}",
            message_id.as_str()
        ))
    })?;
    let head: Head = serde_json::from_slice(body).map_err(|e| {
        Undecodable::malformed(format!(
            "body is not a CloudEvents JSON envelope with type and dataversion: {e}"
        ))
    })?;
    if head.event_type != E::TYPE {
        return Err(Undecodable {
            kind: FailureKind::Unsupported,
            reason: format!(
                "event type {:?}, this handler takes {:?}",
                head.event_type,
                E::TYPE
            ),
        });
    }
    if !(E::MIN_VERSION..=E::VERSION).contains(&head.dataversion) {
        let reads = if E::MIN_VERSION == E::VERSION {
            format!("version {}", E::VERSION)
        } else {
            format!("versions {} to {}", E::MIN_VERSION, E::VERSION)
        };
        let newer = if head.dataversion > E::VERSION {
            " (newer than this build knows: deploy the new consumer, then move the message back)"
        } else {
            " (older than this build still reads)"
        };
        return Err(Undecodable {
            kind: FailureKind::Unsupported,
            reason: format!(
                "{} dataversion {}, this handler reads {reads}{newer}",
                E::TYPE,
                head.dataversion,
            ),
        });
    }
    let event = serde_json::from_slice(body).map_err(|e| {
        Undecodable::malformed(format!(
            "{} v{} does not parse: {e}",
            E::TYPE,
            head.dataversion
        ))
    })?;
    Ok((message_id, event))
}

fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let n: i128 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    u32::try_from(n.max(0)).ok()
}

/// The W3C trace context (`traceparent`, `tracestate`) of a delivery.
pub(crate) fn trace_headers(headers: &FieldTable) -> orderflow_telemetry::TraceHeaders {
    let mut trace = orderflow_telemetry::TraceHeaders::default();
    for key in ["traceparent", "tracestate"] {
        if let Some(value) = header_string(headers, key) {
            trace.0.insert(key.to_owned(), value);
        }
    }
    trace
}

pub(crate) fn header_string(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::Serialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Thing {
        id: Uuid,
        /// Added in version 3.
        #[serde(default)]
        colour: Option<String>,
    }

    impl Event for Thing {
        const TYPE: &'static str = "thing.happened";
        const VERSION: u32 = 3;
        const MIN_VERSION: u32 = 2;
        const AGGREGATE_TYPE: &'static str = "thing";
        fn aggregate_id(&self) -> Uuid {
            self.id
        }
    }

    fn props(id: Option<&str>) -> BasicProperties {
        match id {
            Some(id) => BasicProperties::default().with_message_id(id.into()),
            None => BasicProperties::default(),
        }
    }

    #[test]
    fn decodes_and_classifies() {
        let event = CloudEvent::new(
            "test",
            Thing {
                id: Uuid::new_v4(),
                colour: Some("red".into()),
            },
        );
        let body = serde_json::to_vec(&event).unwrap();
        let id = Uuid::new_v4();
        let (got, back) = decode::<Thing>(&props(Some(&id.to_string())), &body).unwrap();
        assert_eq!(got, id);
        assert_eq!(back.data.id, event.data.id);

        let kind = |p: &BasicProperties, b: &[u8]| decode::<Thing>(p, b).unwrap_err().kind;
        let good = props(Some(&id.to_string()));
        assert_eq!(kind(&props(None), &body), FailureKind::Malformed);
        assert_eq!(kind(&props(Some("42")), &body), FailureKind::Malformed);
        assert_eq!(kind(&good, b"{not json"), FailureKind::Malformed);
        let mut v = serde_json::to_value(&event).unwrap();
        // Version 2, still in flight, has no colour: read, with the default.
        let mut old = v.clone();
        old["dataversion"] = 2.into();
        old["data"] = serde_json::json!({"id": event.data.id});
        let (_, back) = decode::<Thing>(&good, &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!((back.data.id, back.dataversion), (event.data.id, 2));
        assert_eq!(back.data.colour, None);
        for version in [1, 4] {
            v["dataversion"] = version.into();
            let err = decode::<Thing>(&good, &serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert_eq!(err.kind, FailureKind::Unsupported);
            assert!(
                err.reason.contains("reads versions 2 to 3"),
                "{}",
                err.reason
            );
        }
        v["dataversion"] = 4.into();
        let err = decode::<Thing>(&good, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            err.reason.contains("newer than this build knows"),
            "{}",
            err.reason
        );
        v["dataversion"] = 3.into();
        v["type"] = "thing.vanished".into();
        assert_eq!(
            kind(&good, &serde_json::to_vec(&v).unwrap()),
            FailureKind::Unsupported
        );
        v["type"] = "thing.happened".into();
        v["data"] = serde_json::json!({"id": "nope"});
        assert_eq!(
            kind(&good, &serde_json::to_vec(&v).unwrap()),
            FailureKind::Malformed
        );
    }

    #[test]
    fn attempt_header_reads_any_integer() {
        let mut h = FieldTable::default();
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongInt(3));
        assert_eq!(header_u32(&h, ATTEMPT_HEADER), Some(3));
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(-1));
        assert_eq!(header_u32(&h, ATTEMPT_HEADER), Some(0));
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongString("7".into()));
        assert_eq!(header_u32(&h, ATTEMPT_HEADER), Some(7));
    }
}
