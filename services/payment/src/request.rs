//! Validation of incoming requests: protobuf in, a typed query out, or one
//! INVALID_ARGUMENT status listing every field that is wrong, before any
//! database access.

use orderflow_grpc::{
    Violations,
    page_token::{self, Keyset, TokenError},
};
use orderflow_proto::payment::v1::{self as pb, get_payment_request::Key};
use tonic::Status;
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i32 = 500;
/// 9999-12-31T23:59:59.999999Z: the latest time a page token may hold.
const MAX_TOKEN_MICROS: i64 = 253_402_300_799_999_999;

/// How GetPayment names a payment: an order has at most one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKey {
    PaymentId(Uuid),
    OrderId(Uuid),
}

/// # Errors
/// INVALID_ARGUMENT when neither key is set or the id is not a UUID.
pub fn payment_key(req: &pb::GetPaymentRequest) -> Result<PaymentKey, Status> {
    let mut v = Violations::new();
    let key = match &req.key {
        None => {
            v.add(
                "payment_id",
                "exactly one of payment_id or order_id is required",
            );
            None
        }
        Some(Key::PaymentId(id)) => v.uuid("payment_id", id).map(PaymentKey::PaymentId),
        Some(Key::OrderId(id)) => v.uuid("order_id", id).map(PaymentKey::OrderId),
    };
    v.into_result()?;
    key.ok_or_else(|| Status::invalid_argument("payment_id or order_id is required"))
}

/// A validated ListPayments request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub page_size: i64,
    pub after: Option<Keyset>,
}

impl ListQuery {
    /// What a page token is bound to.
    pub fn filter(&self) -> [Option<Uuid>; 2] {
        [self.customer_id, self.order_id]
    }
}

/// # Errors
/// INVALID_ARGUMENT for malformed ids, a page size outside 0..=500, or a
/// page token that is malformed or was issued for other filters.
pub fn list_query(req: &pb::ListPaymentsRequest) -> Result<ListQuery, Status> {
    let mut v = Violations::new();
    let customer_id = v.optional_uuid("customer_id", &req.customer_id);
    let order_id = v.optional_uuid("order_id", &req.order_id);
    // A token is only compared with filters that are themselves valid.
    let filters_valid = v.is_empty();
    let page_size = page_size(&mut v, req.page_size);
    let mut query = ListQuery {
        customer_id,
        order_id,
        page_size,
        after: None,
    };
    if filters_valid && !req.page_token.is_empty() {
        match page_token::decode(&req.page_token, &query.filter()) {
            // Issued tokens hold a time of this era; a forged one before
            // 1970 or past 9999 would reach PostgreSQL out of its range.
            Ok(after) if (0..=MAX_TOKEN_MICROS).contains(&after.at_micros) => {
                query.after = Some(after);
            }
            Ok(_) => v.add("page_token", "is not a token returned by ListPayments"),
            Err(TokenError::OtherFilter) => v.add(
                "page_token",
                "was issued for different customer_id/order_id filters",
            ),
            Err(TokenError::Malformed) => {
                v.add("page_token", "is not a token returned by ListPayments");
            }
        }
    }
    v.into_result()?;
    Ok(query)
}

fn page_size(v: &mut Violations, value: i32) -> i64 {
    match value {
        0 => DEFAULT_PAGE_SIZE,
        1..=MAX_PAGE_SIZE => i64::from(value),
        _ => {
            v.add(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
            );
            DEFAULT_PAGE_SIZE
        }
    }
}
