//! The gRPC surface: protobuf in, validation (`request`), a use case
//! (`store`), protobuf out. Errors become statuses in one place, here.

use orderflow_db::Pool;
use orderflow_proto::order::v1::{self as pb, order_service_server::OrderService};
use tonic::{Request, Response, Status};

use crate::{
    request,
    store::{self, Order, OrderError, status},
};

pub use pb::order_service_server::OrderServiceServer;

/// Fully-qualified name, for the health service.
pub const SERVICE_NAME: &str = "orderflow.order.v1.OrderService";

#[derive(Clone)]
pub struct OrderApi {
    pool: Pool,
}

impl OrderApi {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        req: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let new = request::new_order(req.into_inner())?;
        let order = store::create_order(&self.pool, new).await?;
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(to_proto(order)),
        }))
    }

    async fn get_order(
        &self,
        req: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let id = request::order_id("order_id", &req.get_ref().order_id)?;
        let order = store::get_order(&self.pool, id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_proto(order)),
        }))
    }

    async fn list_orders(
        &self,
        req: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let query = request::list_query(req.get_ref())?;
        let customer = query.customer_id;
        let (orders, next) = store::list_orders(&self.pool, query).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(to_proto).collect(),
            next_page_token: next.map(|c| c.encode(customer)).unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let req = req.into_inner();
        let id = request::order_id("order_id", &req.order_id)?;
        let reason = request::cancel_reason(&req.reason)?;
        let order = store::cancel_order(&self.pool, id, reason).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_proto(order)),
        }))
    }
}

impl From<OrderError> for Status {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::NotFound(id) => orderflow_grpc::not_found("order", &id.to_string()),
            OrderError::RequestIdReused(id) => orderflow_grpc::already_exists(
                "request_id",
                &id.to_string(),
                "request_id was already used for a different order; use a new request_id for a new order",
            ),
            OrderError::NotCancellable { id, status } => orderflow_grpc::failed_precondition(
                "STATUS",
                &format!("orders/{id}"),
                &format!("order is {status} and can no longer be cancelled"),
            ),
            OrderError::Unavailable(e) => {
                tracing::warn!(error.message = %e, "database unavailable");
                Status::unavailable(
                    "the order database is unavailable; retry with the same request_id",
                )
            }
            OrderError::Busy(e) => {
                tracing::warn!(error.message = %e, "overloaded: no database connection free");
                orderflow_grpc::busy(
                    "overloaded: every database connection stayed busy (DATABASE_POOL_TIMEOUT); retry with the same request_id",
                    std::time::Duration::from_millis(500),
                )
            }
            OrderError::Database(e) => {
                tracing::error!(error.message = %e, error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
        }
    }
}

fn to_proto(order: Order) -> pb::Order {
    let Order { row, lines } = order;
    let status = match row.status.as_str() {
        status::PENDING => pb::OrderStatus::Pending,
        status::CONFIRMED => pb::OrderStatus::Confirmed,
        status::CANCELLED => pb::OrderStatus::Cancelled,
        _ => pb::OrderStatus::Unspecified,
    };
    let money = |amount_minor| {
        Some(pb::Money {
            amount_minor,
            currency: row.currency.clone(),
        })
    };
    pb::Order {
        id: row.id.to_string(),
        request_id: row.request_id.to_string(),
        customer_id: row.customer_id.to_string(),
        customer_email: row.customer_email.clone(),
        status: status.into(),
        cancel_reason: row.cancel_reason.clone().unwrap_or_default(),
        lines: lines
            .iter()
            .map(|l| pb::OrderLine {
                product_id: l.product_id.to_string(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
            })
            .collect(),
        total: money(row.total_minor),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
