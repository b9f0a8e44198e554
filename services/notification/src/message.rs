//! What a customer reads for each event: a pure function of the event, so
//! the wording is tested without a database.

use orderflow_events::{
    order::{OrderCancelled, OrderConfirmed, OrderPlaced},
    payment::PaymentCompleted,
};

use crate::money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
}

pub fn order_placed(e: &OrderPlaced) -> Message {
    let items: i64 = e.lines.iter().map(|l| i64::from(l.quantity)).sum();
    Message {
        subject: format!("We received your order {}", e.order_id),
        body: format!(
            "Thank you for your order {} of {items} item(s) for {}. We will let you know as soon as it is confirmed.",
            e.order_id,
            money::format(e.total_minor, &e.currency)
        ),
    }
}

pub fn order_confirmed(e: &OrderConfirmed) -> Message {
    Message {
        subject: format!("Your order {} is confirmed", e.order_id),
        body: format!(
            "Good news: your order {} for {} is confirmed and on its way.",
            e.order_id,
            money::format(e.total_minor, &e.currency)
        ),
    }
}

pub fn order_cancelled(e: &OrderCancelled) -> Message {
    let reason = if e.reason.trim().is_empty() {
        "no reason given"
    } else {
        e.reason.trim()
    };
    Message {
        subject: format!("Your order {} was cancelled", e.order_id),
        body: format!(
            "Your order {} was cancelled: {reason}. Anything reserved or charged for it is given back.",
            e.order_id
        ),
    }
}

pub fn payment_completed(e: &PaymentCompleted) -> Message {
    Message {
        subject: format!("Payment received for order {}", e.order_id),
        body: format!(
            "We charged {} for your order {} (payment {}).",
            money::format(e.amount_minor, &e.currency),
            e.order_id,
            e.payment_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn messages_name_the_order_and_the_amount() {
        let order_id = Uuid::new_v4();
        let m = payment_completed(&PaymentCompleted {
            payment_id: Uuid::new_v4(),
            order_id,
            customer_id: Uuid::new_v4(),
            customer_email: "ada@example.com".into(),
            currency: "EUR".into(),
            amount_minor: 3499,
        });
        assert!(m.subject.contains(&order_id.to_string()), "{m:?}");
        assert!(m.body.contains("34.99 EUR"), "{m:?}");

        let m = order_cancelled(&OrderCancelled {
            order_id,
            customer_id: Uuid::new_v4(),
            customer_email: String::new(),
            reason: "payment failed: card declined".into(),
        });
        assert!(
            m.body
                .contains("was cancelled: payment failed: card declined."),
            "{m:?}"
        );
    }
}
