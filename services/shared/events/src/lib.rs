#![doc = include_str!("../README.md")]

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

pub mod catalog;
pub mod currency;
pub mod inventory;
pub mod order;
pub mod payment;

/// A payload that can be published.
pub trait Event: Serialize + DeserializeOwned {
    /// CloudEvents `type` and AMQP routing key, `<aggregate>.<past tense>`.
    const TYPE: &'static str;
    /// Schema version of the payload this build writes (`dataversion`).
    const VERSION: u32;
    /// The oldest version this build still reads. A newer version only
    /// adds fields, which the struct declares `#[serde(default)]`, so one
    /// struct reads every version from `MIN_VERSION` to `VERSION`: those
    /// still in flight (in a queue, or in an outbox) during a rolling
    /// deploy. A consumer parks a version above `VERSION` in its DLQ.
    const MIN_VERSION: u32 = Self::VERSION;
    const AGGREGATE_TYPE: &'static str;

    /// The aggregate whose events must be published in order.
    fn aggregate_id(&self) -> Uuid;

    /// The producing service, whose exchange carries this event: the part
    /// of [`Self::TYPE`] before the first dot (`order.placed` -> `order`).
    fn producer() -> &'static str {
        Self::TYPE.split_once('.').map_or(Self::TYPE, |(p, _)| p)
    }
}

/// The CloudEvents 1.0 JSON envelope (structured mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    pub specversion: String,
    pub id: Uuid,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    pub dataversion: u32,
    pub data: T,
}

impl<T: Event> CloudEvent<T> {
    /// Wraps `data` with a new time-ordered id.
    pub fn new(source: &str, data: T) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: Uuid::now_v7(),
            source: source.to_owned(),
            event_type: T::TYPE.to_owned(),
            subject: data.aggregate_id().to_string(),
            time: Utc::now(),
            datacontenttype: "application/json".to_owned(),
            dataversion: T::VERSION,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderCancelled, OrderPlaced};

    #[test]
    fn envelope_follows_cloudevents_json() {
        let order_id = Uuid::new_v4();
        let event = CloudEvent::new(
            "orderflow/order",
            OrderCancelled {
                order_id,
                customer_id: Uuid::new_v4(),
                customer_email: "c@example.com".into(),
                reason: "cancelled by customer".into(),
            },
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "order.cancelled");
        assert_eq!(json["subject"], order_id.to_string());
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["dataversion"], 1);
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let back: CloudEvent<OrderCancelled> = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(OrderPlaced::TYPE, "order.placed");
        assert_eq!(OrderPlaced::producer(), "order");
        assert_eq!(crate::payment::PaymentFailed::producer(), "payment");
    }
}
