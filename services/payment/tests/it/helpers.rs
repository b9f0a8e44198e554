use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_events::{
    CloudEvent,
    inventory::{InventoryReserved, ReservedLine},
    order::OrderCancelled,
};
use orderflow_payment::{
    MIGRATIONS,
    app::Application,
    handlers::{Charge, RefundOnOrderCancelled},
};
use orderflow_proto::payment::v1::payment_service_client::PaymentServiceClient;
use orderflow_testkit::{TestDatabase, TestServer};
use uuid::Uuid;

/// The payment service's database, and its API once `serve` was called.
pub struct TestApp {
    pub client: Option<PaymentServiceClient<orderflow_testkit::AdminChannel>>,
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
            db: TestDatabase::new("payment", MIGRATIONS).await,
        }
    }

    /// A migrated database and the gRPC API on it (no consumer: handlers
    /// are driven by the tests).
    pub async fn serve() -> Self {
        let mut app = Self::new().await;
        let env = orderflow_testkit::service_env(&app.db);
        let config = orderflow_payment::config::from_source(&env).expect("valid test config");
        let service = Application::build(&config)
            .await
            .expect("application builds");
        let server = TestServer::spawn(service.grpc_addr().unwrap(), |stop| {
            service.serve_grpc_until(stop)
        });
        app.client = Some(PaymentServiceClient::new(orderflow_testkit::admin_channel(
            server.channel(),
        )));
        app.server = Some(server);
        app
    }

    pub fn client(&self) -> PaymentServiceClient<orderflow_testkit::AdminChannel> {
        self.client.clone().expect("TestApp::serve() was used")
    }

    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(self.db.url())
            .await
            .expect("connect to test database")
    }

    /// Runs `handler` on `event` in one transaction, as the runtime does.
    pub async fn handle<H: Handler>(
        &self,
        handler: &H,
        event: CloudEvent<H::Event>,
    ) -> HandlerResult {
        let mut conn = self.sql().await;
        conn.transaction(async |conn| handler.handle(conn, event).await)
            .await
    }

    pub async fn charge(&self, reserved: InventoryReserved) {
        self.handle(
            &Charge::default(),
            CloudEvent::new("orderflow/inventory", reserved),
        )
        .await
        .expect("charge handled");
    }

    pub async fn cancel(&self, order_id: Uuid, customer_id: Uuid) {
        let cancelled = OrderCancelled {
            order_id,
            customer_id,
            customer_email: "ada@example.com".into(),
            reason: "cancelled by the customer".into(),
        };
        self.handle(
            &RefundOnOrderCancelled,
            CloudEvent::new("orderflow/order", cancelled),
        )
        .await
        .expect("cancel handled");
    }

    pub async fn query<T>(&self, sql: &str) -> Vec<T>
    where
        T: diesel::QueryableByName<diesel::pg::Pg> + Send + 'static,
    {
        let mut conn = self.sql().await;
        diesel::sql_query(sql).load(&mut conn).await.expect("query")
    }

    /// The outbox, in append order.
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        self.query("SELECT event_type, payload FROM outbox ORDER BY seq")
            .await
    }

    pub async fn payments(&self) -> Vec<PaymentRow> {
        self.query(
            "SELECT payment_id, order_id, status, reason, gateway_reference, amount_minor \
             FROM payments ORDER BY created_at, payment_id",
        )
        .await
    }

    pub async fn tombstones(&self) -> Vec<Tombstone> {
        self.query("SELECT order_id FROM cancelled_orders").await
    }
}

#[derive(Debug, diesel::QueryableByName)]
pub struct OutboxRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub event_type: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub payload: serde_json::Value,
}

#[derive(Debug, diesel::QueryableByName)]
pub struct PaymentRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub payment_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub order_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub gateway_reference: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub amount_minor: i64,
}

#[derive(Debug, diesel::QueryableByName)]
pub struct Tombstone {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub order_id: Uuid,
}

/// An inventory.reserved for a new order of `customer`.
pub fn reserved(customer: Uuid, token: &str, total_minor: i64) -> InventoryReserved {
    InventoryReserved {
        order_id: Uuid::now_v7(),
        customer_id: customer,
        customer_email: "ada@example.com".into(),
        currency: "EUR".into(),
        total_minor,
        payment_token: token.into(),
        lines: vec![ReservedLine {
            product_id: Uuid::new_v4(),
            quantity: 1,
            stock: None,
        }],
    }
}
