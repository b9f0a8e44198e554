use diesel_async::{
    AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _, SimpleAsyncConnection as _,
};
use orderflow_order::{MIGRATIONS, app::Application};
use orderflow_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use orderflow_testkit::{TestDatabase, TestServer};
use tonic::transport::Channel;
use uuid::Uuid;

/// A running order service on its own database.
pub struct TestApp {
    pub client: OrderServiceClient<Channel>,
    server: TestServer,
    // Must be the last field: dropped after the server and its pool.
    pub db: TestDatabase,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// With `extra` variables on top of the test defaults.
    pub async fn spawn_with(extra: &[(&'static str, &'static str)]) -> Self {
        orderflow_telemetry::init_for_tests();
        let db = TestDatabase::new("order", MIGRATIONS).await;
        let mut env = orderflow_testkit::service_env(&db);
        env.insert("DATABASE_POOL_SIZE", "20");
        env.extend(extra.iter().copied());
        let config = orderflow_order::config::from_source(&env).expect("valid test config");
        let app = Application::build(&config)
            .await
            .expect("application builds");
        let server = TestServer::spawn(app.grpc_addr().unwrap(), |stop| app.serve_grpc_until(stop));
        Self {
            client: OrderServiceClient::new(server.channel()),
            server,
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

    /// Another channel to the server (health, raw clients).
    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    /// Stops the server and waits for it, as SIGTERM would.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
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
        ..Default::default()
    }
}
