use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_events::{
    CloudEvent,
    order::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderPlacedLine},
    payment::PaymentCompleted,
};
use orderflow_notification::{
    MIGRATIONS,
    app::Application,
    handlers::{
        NotifyOrderCancelled, NotifyOrderConfirmed, NotifyOrderPlaced, NotifyPaymentCompleted,
    },
};
use orderflow_proto::notification::v1::notification_service_client::NotificationServiceClient;
use orderflow_testkit::{TestDatabase, TestServer};
use tonic::transport::Channel;
use uuid::Uuid;

/// The notification service's database, and its API once `serve` was called.
pub struct TestApp {
    pub client: Option<NotificationServiceClient<Channel>>,
    server: Option<TestServer>,
    // Must be the last field: dropped after the server and its pool.
    pub db: TestDatabase,
}

impl TestApp {
    /// A migrated database, no server.
    pub async fn new() -> Self {
        orderflow_telemetry::init_for_tests();
        Self {
            client: None,
            server: None,
            db: TestDatabase::new("notification", MIGRATIONS).await,
        }
    }

    /// A migrated database and the gRPC API on it (no consumer: handlers
    /// are driven by the tests).
    pub async fn serve() -> Self {
        let mut app = Self::new().await;
        let env = orderflow_testkit::service_env(&app.db);
        let config = orderflow_notification::config::from_source(&env).expect("valid test config");
        let service = Application::build(&config)
            .await
            .expect("application builds");
        let server = TestServer::spawn(service.grpc_addr().unwrap(), |stop| {
            service.serve_grpc_until(stop)
        });
        app.client = Some(NotificationServiceClient::new(server.channel()));
        app.server = Some(server);
        app
    }

    pub fn client(&self) -> NotificationServiceClient<Channel> {
        self.client.clone().expect("TestApp::serve() was used")
    }

    /// Runs `handler` on `event` in one transaction, as the runtime does.
    pub async fn handle<H: Handler>(
        &self,
        handler: &H,
        event: CloudEvent<H::Event>,
    ) -> HandlerResult {
        let mut conn = AsyncPgConnection::establish(self.db.url())
            .await
            .expect("connect to test database");
        conn.transaction(async |conn| handler.handle(conn, event).await)
            .await
    }

    /// Every notification, oldest first.
    pub async fn notifications(&self) -> Vec<Row> {
        let mut conn = AsyncPgConnection::establish(self.db.url()).await.unwrap();
        diesel::sql_query(
            "SELECT event_id, order_id, channel, recipient, event_type, subject, body \
             FROM notifications ORDER BY sent_at, notification_id",
        )
        .load(&mut conn)
        .await
        .expect("query")
    }
}

#[derive(Debug, diesel::QueryableByName)]
pub struct Row {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub order_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub channel: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub recipient: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub event_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub subject: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub body: String,
}

/// One order of a customer, and the events the saga sends about it.
#[derive(Debug, Clone, Copy)]
pub struct Order {
    pub id: Uuid,
    pub customer: Uuid,
}

pub const EMAIL: &str = "ada@example.com";

impl Order {
    pub fn new(customer: Uuid) -> Self {
        Self {
            id: Uuid::now_v7(),
            customer,
        }
    }

    pub fn placed(&self, phone: &str) -> CloudEvent<OrderPlaced> {
        CloudEvent::new(
            "orderflow/order",
            OrderPlaced {
                order_id: self.id,
                customer_id: self.customer,
                customer_email: EMAIL.into(),
                currency: "EUR".into(),
                total_minor: 3499,
                lines: vec![OrderPlacedLine {
                    product_id: Uuid::new_v4(),
                    quantity: 2,
                    unit_price_minor: 1_749,
                }],
                payment_token: "tok_visa".into(),
                customer_phone: phone.into(),
            },
        )
    }

    pub fn confirmed(&self) -> CloudEvent<OrderConfirmed> {
        CloudEvent::new(
            "orderflow/order",
            OrderConfirmed {
                order_id: self.id,
                customer_id: self.customer,
                customer_email: EMAIL.into(),
                currency: "EUR".into(),
                total_minor: 3499,
            },
        )
    }

    pub fn cancelled(&self, email: &str) -> CloudEvent<OrderCancelled> {
        CloudEvent::new(
            "orderflow/order",
            OrderCancelled {
                order_id: self.id,
                customer_id: self.customer,
                customer_email: email.into(),
                reason: "payment failed: card declined".into(),
            },
        )
    }

    pub fn paid(&self) -> CloudEvent<PaymentCompleted> {
        CloudEvent::new(
            "orderflow/payment",
            PaymentCompleted {
                payment_id: Uuid::now_v7(),
                order_id: self.id,
                customer_id: self.customer,
                customer_email: EMAIL.into(),
                currency: "EUR".into(),
                amount_minor: 3499,
            },
        )
    }

    /// placed -> paid -> confirmed, each through its handler.
    pub async fn happy_path(&self, app: &TestApp, phone: &str) {
        app.handle(&NotifyOrderPlaced, self.placed(phone))
            .await
            .unwrap();
        app.handle(&NotifyPaymentCompleted, self.paid())
            .await
            .unwrap();
        app.handle(&NotifyOrderConfirmed, self.confirmed())
            .await
            .unwrap();
    }

    pub async fn cancel(&self, app: &TestApp) {
        app.handle(&NotifyOrderCancelled, self.cancelled(EMAIL))
            .await
            .unwrap();
    }
}
