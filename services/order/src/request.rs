//! Validation of incoming requests: protobuf in, a typed command out, or one
//! INVALID_ARGUMENT status listing every field that is wrong. Nothing here
//! touches the database, so a bad request never opens a transaction.

use orderflow_events::currency;
use orderflow_grpc::Violations;
use orderflow_proto::order::v1 as pb;
use sha2::{Digest as _, Sha256};
use tonic::Status;
use uuid::Uuid;

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i32 = 1000;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_REASON_LEN: usize = 500;
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;
pub const MAX_TOKEN_LEN: usize = 64;
/// Lines with violations listed in one INVALID_ARGUMENT; the rest are not checked.
pub const MAX_BAD_LINES_REPORTED: usize = 5;
/// The simulated gateway's card that is always approved.
pub const DEFAULT_PAYMENT_TOKEN: &str = "tok_visa";

/// A CreateOrder request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub currency: String,
    pub lines: Vec<NewLine>,
    pub total_minor: i64,
    pub payment_token: String,
    pub customer_phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    pub product_id: Uuid,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

impl NewOrder {
    /// Identifies the request's content, so that a request_id reused for a
    /// different order is detected. The request_id itself is not part of it.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.customer_id.as_bytes());
        h.update((self.customer_email.len() as u64).to_be_bytes());
        h.update(self.customer_email.as_bytes());
        h.update(self.currency.as_bytes());
        for line in &self.lines {
            h.update(line.product_id.as_bytes());
            h.update(line.quantity.to_be_bytes());
            h.update(line.unit_price_minor.to_be_bytes());
        }
        h.update(self.payment_token.as_bytes());
        h.update([0]);
        h.update(self.customer_phone.as_bytes());
        h.finalize().to_vec()
    }
}

/// # Errors
/// INVALID_ARGUMENT with one field violation per problem.
pub fn new_order(req: pb::CreateOrderRequest) -> Result<NewOrder, Status> {
    let mut v = Violations::new();
    let request_id = uuid_field(&mut v, "request_id", &req.request_id);
    let customer_id = uuid_field(&mut v, "customer_id", &req.customer_id);
    email_field(&mut v, "customer_email", &req.customer_email);
    let payment_token = if req.payment_token.is_empty() {
        DEFAULT_PAYMENT_TOKEN.to_owned()
    } else {
        if req.payment_token.len() > MAX_TOKEN_LEN
            || !req
                .payment_token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            v.add(
                "payment_token",
                format!("at most {MAX_TOKEN_LEN} letters, digits or '_'"),
            );
        }
        req.payment_token.clone()
    };
    let phone_ok = |p: &str| {
        p.strip_prefix('+')
            .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if !req.customer_phone.is_empty() && !phone_ok(&req.customer_phone) {
        v.add(
            "customer_phone",
            "must be an E.164 number: '+' and 8 to 15 digits",
        );
    }

    let mut lines = Vec::with_capacity(req.lines.len().min(MAX_LINES));
    let mut currency: Option<String> = None;
    let mut total: Option<i64> = Some(0);
    if req.lines.is_empty() {
        v.add("lines", "at least one line is required");
    } else if req.lines.len() > MAX_LINES {
        v.add(
            "lines",
            format!("at most {MAX_LINES} lines, got {}", req.lines.len()),
        );
    } else {
        let mut bad_lines = 0;
        for (i, line) in req.lines.iter().enumerate() {
            if bad_lines == MAX_BAD_LINES_REPORTED {
                // Every line's violations would make a status too large for
                // clients to read (hyper's client takes 16 KiB of trailers).
                v.add(
                    "lines",
                    format!("only the first {MAX_BAD_LINES_REPORTED} bad lines are listed"),
                );
                total = None;
                break;
            }
            let mut bad = false;
            let field = |name: &str| format!("lines[{i}].{name}");
            let product_id = uuid_field(&mut v, &field("product_id"), &line.product_id);
            if product_id.is_some()
                && let Some(first) = req.lines[..i]
                    .iter()
                    .position(|l| l.product_id == line.product_id)
            {
                bad = true;
                v.add(
                    field("product_id"),
                    format!("product already ordered in lines[{first}]; merge the quantities"),
                );
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                bad = true;
                v.add(
                    field("quantity"),
                    format!(
                        "must be between 1 and {MAX_QUANTITY}, got {}",
                        line.quantity
                    ),
                );
            }
            let price = match &line.unit_price {
                None => {
                    bad = true;
                    v.add(field("unit_price"), "is required");
                    None
                }
                Some(money) => {
                    if money.amount_minor < 0 {
                        bad = true;
                        v.add(field("unit_price.amount_minor"), "must not be negative");
                    }
                    if !currency::is_known(&money.currency) {
                        bad = true;
                        v.add(
                            field("unit_price.currency"),
                            "must be an ISO 4217 code in use, e.g. EUR",
                        );
                    } else if let Some(c) = &currency {
                        if c != &money.currency {
                            bad = true;
                            v.add(
                                field("unit_price.currency"),
                                format!("every line must be in {c}"),
                            );
                        }
                    } else {
                        currency = Some(money.currency.clone());
                    }
                    Some(money.amount_minor)
                }
            };
            total = match (total, price) {
                (Some(t), Some(p)) => p
                    .checked_mul(i64::from(line.quantity))
                    .and_then(|l| t.checked_add(l)),
                _ => None,
            };
            if bad || product_id.is_none() {
                bad_lines += 1;
            }
            if let (Some(product_id), Some(unit_price_minor)) = (product_id, price) {
                lines.push(NewLine {
                    product_id,
                    quantity: line.quantity,
                    unit_price_minor,
                });
            }
        }
        if total.is_none_or(|t| t < 0) && v.is_empty() {
            v.add(
                "lines",
                "the order total does not fit in 64-bit minor units",
            );
        }
    }
    v.into_result()?;
    match (request_id, customer_id, currency, total) {
        (Some(request_id), Some(customer_id), Some(currency), Some(total_minor)) => Ok(NewOrder {
            request_id,
            customer_id,
            customer_email: req.customer_email,
            currency,
            lines,
            total_minor,
            payment_token,
            customer_phone: req.customer_phone,
        }),
        // Unreachable: every None above added a violation.
        _ => Err(Status::invalid_argument("invalid request")),
    }
}

/// # Errors
/// INVALID_ARGUMENT when `order_id` is not a UUID.
pub fn order_id(field: &str, value: &str) -> Result<Uuid, Status> {
    let mut v = Violations::new();
    let id = uuid_field(&mut v, field, value);
    v.into_result()?;
    id.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))
}

/// # Errors
/// INVALID_ARGUMENT when the reason is too long or has control characters.
pub fn cancel_reason(reason: &str) -> Result<String, Status> {
    let mut v = Violations::new();
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_LEN {
        v.add("reason", format!("at most {MAX_REASON_LEN} characters"));
    } else if reason.chars().any(char::is_control) {
        v.add("reason", "must not contain control characters");
    }
    v.into_result()?;
    Ok(if reason.is_empty() {
        "cancelled by the customer".to_owned()
    } else {
        format!("cancelled by the customer: {reason}")
    })
}

/// A validated ListOrders request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<Uuid>,
    pub page_size: i64,
    pub after: Option<crate::store::Cursor>,
}

/// # Errors
/// INVALID_ARGUMENT for a malformed customer id, a negative page size or a
/// page token that is malformed or belongs to another filter.
pub fn list_query(req: &pb::ListOrdersRequest) -> Result<ListQuery, Status> {
    let mut v = Violations::new();
    let customer_id = if req.customer_id.is_empty() {
        None
    } else {
        uuid_field(&mut v, "customer_id", &req.customer_id)
    };
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        n => i64::from(n).min(MAX_PAGE_SIZE),
    };
    let after = if req.page_token.is_empty() {
        None
    } else {
        match crate::store::Cursor::decode(&req.page_token) {
            Some((cursor, filter)) if filter == customer_id => Some(cursor),
            Some(_) => {
                v.add(
                    "page_token",
                    "was issued for a different customer_id filter",
                );
                None
            }
            None => {
                v.add("page_token", "is not a token returned by ListOrders");
                None
            }
        }
    };
    v.into_result()?;
    Ok(ListQuery {
        customer_id,
        page_size,
        after,
    })
}

fn uuid_field(v: &mut Violations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        v.add(field, "is required");
        return None;
    }
    // Only the hyphenated form: one spelling per id keeps logs and joins simple.
    match Uuid::try_parse(value) {
        Ok(id) if value.len() == 36 && !id.is_nil() => Some(id),
        Ok(_) if value.len() == 36 => {
            v.add(field, "must not be the nil UUID");
            None
        }
        _ => {
            v.add(
                field,
                "must be a UUID such as 0b7e4a52-3f1c-4c3e-9d6f-2a1b5c8d9e0f",
            );
            None
        }
    }
}

fn email_field(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if value.len() > MAX_EMAIL_LEN {
        v.add(field, format!("at most {MAX_EMAIL_LEN} characters"));
    } else {
        let valid = value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }) && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            v.add(field, "must be an e-mail address such as ada@example.com");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt as _;

    fn line(product: &str, quantity: i32, amount: i64, currency: &str) -> pb::OrderLine {
        pb::OrderLine {
            product_id: product.into(),
            quantity,
            unit_price: Some(pb::Money {
                amount_minor: amount,
                currency: currency.into(),
            }),
        }
    }

    fn valid() -> pb::CreateOrderRequest {
        pb::CreateOrderRequest {
            request_id: Uuid::new_v4().to_string(),
            customer_id: Uuid::new_v4().to_string(),
            customer_email: "ada@example.com".into(),
            lines: vec![
                line(&Uuid::new_v4().to_string(), 2, 1250, "EUR"),
                line(&Uuid::new_v4().to_string(), 1, 500, "EUR"),
            ],
            payment_token: "tok_declined".into(),
            customer_phone: "+4915112345678".into(),
        }
    }

    fn fields(status: &Status) -> Vec<String> {
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status
            .get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn a_valid_request_computes_the_total() {
        let order = new_order(valid()).unwrap();
        assert_eq!(order.total_minor, 3000);
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.lines.len(), 2);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let mut req = valid();
        req.request_id = "nope".into();
        req.customer_id = String::new();
        req.customer_email = "x".repeat(300);
        req.lines[0].quantity = 0;
        req.lines[1].unit_price = Some(pb::Money {
            amount_minor: -1,
            currency: "EUO".into(),
        });
        let status = new_order(req).unwrap_err();
        assert_eq!(
            fields(&status),
            [
                "request_id",
                "customer_id",
                "customer_email",
                "lines[0].quantity",
                "lines[1].unit_price.amount_minor",
                "lines[1].unit_price.currency"
            ]
        );
    }

    #[test]
    fn line_count_is_bounded() {
        let mut req = valid();
        req.lines.clear();
        assert_eq!(fields(&new_order(req.clone()).unwrap_err()), ["lines"]);
        req.lines = (0..=MAX_LINES)
            .map(|_| line(&Uuid::new_v4().to_string(), 1, 1, "EUR"))
            .collect();
        assert_eq!(fields(&new_order(req).unwrap_err()), ["lines"]);
    }

    #[test]
    fn the_worst_request_gets_a_status_a_client_can_read() {
        let req = pb::CreateOrderRequest {
            request_id: "x".into(),
            customer_id: "x".into(),
            customer_email: "x".into(),
            lines: (0..MAX_LINES).map(|_| line("x", 0, -1, "x")).collect(),
            payment_token: "x y".into(),
            customer_phone: "x".into(),
        };
        let status = new_order(req).unwrap_err();
        // 26 violations, of which the shared cap lists 20 and counts the rest.
        assert_eq!(5 + 4 * MAX_BAD_LINES_REPORTED + 1, 26);
        assert_eq!(fields(&status).len(), orderflow_grpc::MAX_VIOLATIONS + 1);
        // The trailers as sent, counted as HTTP/2 does (name, value, 32 per
        // field), must fit hyper's client limit (16 KiB), even grpc-java's (8 KiB).
        let trailers = status.into_http::<()>();
        let size: usize = trailers
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        assert!(size < 8 * 1024, "{size} bytes of trailers");
    }

    #[test]
    fn mixed_currencies_duplicates_and_overflow_are_refused() {
        let mut req = valid();
        req.lines[1].unit_price = Some(pb::Money {
            amount_minor: 1,
            currency: "USD".into(),
        });
        assert_eq!(
            fields(&new_order(req).unwrap_err()),
            ["lines[1].unit_price.currency"]
        );

        let mut req = valid();
        req.lines[1].product_id = req.lines[0].product_id.clone();
        assert_eq!(
            fields(&new_order(req).unwrap_err()),
            ["lines[1].product_id"]
        );

        let mut req = valid();
        req.lines[0] = line(&Uuid::new_v4().to_string(), 1000, i64::MAX / 10, "EUR");
        assert_eq!(fields(&new_order(req).unwrap_err()), ["lines"]);

        let mut req = valid();
        req.lines[0].unit_price = None;
        assert_eq!(
            fields(&new_order(req).unwrap_err()),
            ["lines[0].unit_price"]
        );
    }

    #[test]
    fn uuids_must_be_hyphenated_and_not_nil() {
        let mut v = Violations::new();
        assert!(uuid_field(&mut v, "f", "0b7e4a523f1c4c3e9d6f2a1b5c8d9e0f").is_none());
        assert!(uuid_field(&mut v, "f", &Uuid::nil().to_string()).is_none());
        assert!(uuid_field(&mut v, "f", "{0b7e4a52-3f1c-4c3e-9d6f-2a1b5c8d9e0f}").is_none());
        assert!(uuid_field(&mut v, "f", "0b7e4a52-3f1c-4c3e-9d6f-2a1b5c8d9e0f").is_some());
    }

    #[test]
    fn fingerprint_ignores_request_id_but_not_content() {
        let a = new_order(valid()).unwrap();
        let mut b = a.clone();
        b.request_id = Uuid::new_v4();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.lines[0].quantity += 1;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn emails_and_reasons() {
        for bad in ["a", "a@b", "@b.c", "a@.c", "a b@c.d", "a@b.c."] {
            let mut v = Violations::new();
            email_field(&mut v, "e", bad);
            assert!(!v.is_empty(), "{bad} accepted");
        }
        assert_eq!(cancel_reason("  ").unwrap(), "cancelled by the customer");
        assert_eq!(
            cancel_reason("too slow").unwrap(),
            "cancelled by the customer: too slow"
        );
        assert!(cancel_reason(&"x".repeat(501)).is_err());
        assert!(cancel_reason("a\u{0}b").is_err());
    }
}
