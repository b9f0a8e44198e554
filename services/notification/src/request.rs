//! Validation of ListNotifications: protobuf in, a typed query out, or one
//! INVALID_ARGUMENT status listing every field that is wrong, before any
//! database access.

use orderflow_grpc::{
    Violations,
    page_token::{self, Keyset, TokenError},
};
use orderflow_proto::notification::v1 as pb;
use tonic::Status;
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i32 = 500;
/// 9999-12-31T23:59:59.999999Z: the latest time a page token may hold.
const MAX_TOKEN_MICROS: i64 = 253_402_300_799_999_999;

/// A validated ListNotifications request: at least one filter is set.
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
/// INVALID_ARGUMENT for no filter, malformed ids, a page size outside
/// 0..=500, or a page token that is malformed or was issued for other filters.
pub fn list_query(req: &pb::ListNotificationsRequest) -> Result<ListQuery, Status> {
    let mut v = Violations::new();
    if req.customer_id.is_empty() && req.order_id.is_empty() {
        v.add(
            "customer_id",
            "customer_id or order_id is required (notifications are listed per customer or per order)",
        );
    }
    let customer_id = v.optional_uuid("customer_id", &req.customer_id);
    let order_id = v.optional_uuid("order_id", &req.order_id);
    // A token is only compared with filters that are themselves valid.
    let filters_valid = v.is_empty();
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n @ 1..=MAX_PAGE_SIZE => i64::from(n),
        _ => {
            v.add(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
            );
            DEFAULT_PAGE_SIZE
        }
    };
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
            Ok(_) => v.add("page_token", "is not a token returned by ListNotifications"),
            Err(TokenError::OtherFilter) => v.add(
                "page_token",
                "was issued for different customer_id/order_id filters",
            ),
            Err(TokenError::Malformed) => {
                v.add("page_token", "is not a token returned by ListNotifications");
            }
        }
    }
    v.into_result()?;
    Ok(query)
}
