//! The gRPC surface: protobuf in, validation (`request`), a read (`store`),
//! protobuf out. Errors become statuses in one place, here.

use orderflow_db::Pool;
use orderflow_proto::payment::v1::{self as pb, payment_service_server::PaymentService};
use tonic::{Request, Response, Status};

use crate::{
    request,
    store::{self, Payment, PaymentError, status},
};

pub use pb::payment_service_server::PaymentServiceServer;

/// Fully-qualified name, for the health service.
pub const SERVICE_NAME: &str = "orderflow.payment.v1.PaymentService";

#[derive(Clone)]
pub struct PaymentApi {
    pool: Pool,
}

impl PaymentApi {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn get_payment(
        &self,
        req: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let key = request::payment_key(req.get_ref())?;
        let payment = store::get_payment(&self.pool, key).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(to_proto(payment)),
        }))
    }

    async fn list_payments(
        &self,
        req: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let query = request::list_query(req.get_ref())?;
        let (payments, next) = store::list_payments(&self.pool, &query).await?;
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: payments.into_iter().map(to_proto).collect(),
            next_page_token: next
                .map(|k| orderflow_grpc::page_token::encode(k, &query.filter()))
                .unwrap_or_default(),
        }))
    }
}

impl From<PaymentError> for Status {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::NotFound(name) => orderflow_grpc::not_found("payment", &name),
            PaymentError::Unavailable(e) => {
                tracing::warn!(error.message = %e, "database unavailable");
                Status::unavailable("the payment database is unavailable; retry")
            }
            PaymentError::Database(e) => {
                tracing::error!(error.message = %e, error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
        }
    }
}

fn to_proto(p: Payment) -> pb::Payment {
    let status = match p.status.as_str() {
        status::COMPLETED => pb::PaymentStatus::Completed,
        status::FAILED => pb::PaymentStatus::Failed,
        status::REFUNDED => pb::PaymentStatus::Refunded,
        _ => pb::PaymentStatus::Unspecified,
    };
    pb::Payment {
        payment_id: p.payment_id.to_string(),
        order_id: p.order_id.to_string(),
        customer_id: p.customer_id.to_string(),
        amount: Some(pb::Money {
            amount_minor: p.amount_minor,
            currency: p.currency,
        }),
        status: status.into(),
        reason: p.reason.unwrap_or_default(),
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
