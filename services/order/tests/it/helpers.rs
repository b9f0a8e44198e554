use std::collections::HashMap;

use diesel_async::{
    AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _, SimpleAsyncConnection as _,
};
use orderflow_order::{MIGRATIONS, app::Application};
use orderflow_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use orderflow_testkit::TestDatabase;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use uuid::Uuid;

/// A running order service on its own database.
pub struct TestApp {
    pub client: OrderServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    // Must be the last field: dropped after the server and its pool.
    pub db: TestDatabase,
}

impl TestApp {
    pub async fn spawn() -> Self {
        orderflow_telemetry::init_for_tests();
        let db = TestDatabase::new("order", MIGRATIONS).await;
        let config = orderflow_order::config::from_source(&HashMap::from([
            ("DATABASE_URL", db.url()),
            ("GRPC_LISTEN_ADDR", "127.0.0.1:0"),
            ("DATABASE_POOL_SIZE", "20"),
            ("SHUTDOWN_GRACE_PERIOD", "5s"),
        ]))
        .expect("valid test config");
        let app = Application::build(&config)
            .await
            .expect("application builds");
        let addr = app.grpc_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        // The listener is bound already: a lazy channel needs no wait.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Self {
            client: OrderServiceClient::new(channel),
            stop: Some(stop),
            server: Some(server),
            db,
        }
    }

    /// A direct connection to the test database, for arranging and asserting.
    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(self.db.url())
            .await
            .expect("connect to test database")
    }

    pub async fn count(&self, table: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.sql().await;
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut conn)
            .await
            .expect("count")
            .n
    }

    pub async fn execute(&self, sql: &str) {
        self.sql().await.batch_execute(sql).await.expect("sql runs");
    }

    pub async fn create(&self, req: pb::CreateOrderRequest) -> Result<pb::Order, tonic::Status> {
        let mut client = self.client.clone();
        Ok(client
            .create_order(req)
            .await?
            .into_inner()
            .order
            .expect("order in response"))
    }

    /// Stops the server and waits for it, as SIGTERM would.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub fn line(quantity: i32, amount_minor: i64) -> pb::OrderLine {
    pb::OrderLine {
        product_id: Uuid::new_v4().to_string(),
        quantity,
        unit_price: Some(pb::Money {
            amount_minor,
            currency: "EUR".into(),
        }),
    }
}

pub fn order_request(customer: Uuid) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        request_id: Uuid::new_v4().to_string(),
        customer_id: customer.to_string(),
        customer_email: "ada@example.com".into(),
        lines: vec![line(2, 1250), line(1, 999)],
    }
}
