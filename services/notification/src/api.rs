//! The gRPC surface: protobuf in, validation (`request`), a read (`store`),
//! protobuf out. Errors become statuses in one place, here.

use orderflow_db::Pool;
use orderflow_proto::notification::v1::{
    self as pb, notification_service_server::NotificationService,
};
use tonic::{Request, Response, Status};

use crate::{
    request,
    store::{self, Notification, NotificationError, channel},
};

pub use pb::notification_service_server::NotificationServiceServer;

/// Fully-qualified name, for the health service.
pub const SERVICE_NAME: &str = "orderflow.notification.v1.NotificationService";

#[derive(Clone)]
pub struct NotificationApi {
    pool: Pool,
}

impl NotificationApi {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let query = request::list_query(req.get_ref())?;
        let (rows, next) = store::list_notifications(&self.pool, &query).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(to_proto).collect(),
            next_page_token: next
                .map(|k| orderflow_grpc::page_token::encode(k, &query.filter()))
                .unwrap_or_default(),
        }))
    }
}

impl From<NotificationError> for Status {
    fn from(err: NotificationError) -> Self {
        match err {
            NotificationError::Unavailable(e) => {
                tracing::warn!(error.message = %e, "database unavailable");
                Status::unavailable("the notification database is unavailable; retry")
            }
            NotificationError::Database(e) => {
                tracing::error!(error.message = %e, error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
        }
    }
}

fn to_proto(n: Notification) -> pb::Notification {
    let channel = match n.channel.as_str() {
        channel::EMAIL => pb::Channel::Email,
        channel::SMS => pb::Channel::Sms,
        _ => pb::Channel::Unspecified,
    };
    pb::Notification {
        notification_id: n.notification_id.to_string(),
        customer_id: n.customer_id.to_string(),
        order_id: n.order_id.to_string(),
        channel: channel.into(),
        recipient: n.recipient,
        event_type: n.event_type,
        event_id: n.event_id.to_string(),
        subject: n.subject,
        body: n.body,
        sent_at: Some(prost_types::Timestamp {
            seconds: n.sent_at.timestamp(),
            nanos: i32::try_from(n.sent_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
    }
}
