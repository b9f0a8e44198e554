use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use orderflow_consumer::{Handler, HandlerError};
use orderflow_events::{
    CloudEvent,
    order::{OrderPlaced, OrderPlacedLine},
};
use orderflow_inventory::{MIGRATIONS, app::Application};
use orderflow_proto::inventory::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
};
use orderflow_testkit::{TestDatabase, TestServer};
use uuid::Uuid;

/// A running inventory API on its own database.
pub struct TestApp {
    pub client: InventoryServiceClient<orderflow_testkit::AdminChannel>,
    pub pool: orderflow_db::Pool,
    server: TestServer,
    // Must be the last field: dropped after the server and its pool.
    pub db: TestDatabase,
}

impl TestApp {
    pub async fn spawn() -> Self {
        orderflow_telemetry::init_for_tests();
        let db = TestDatabase::new("inventory", MIGRATIONS).await;
        let mut env = orderflow_testkit::service_env(&db);
        env.insert("DATABASE_POOL_SIZE", "40");
        // 200 reservations of one product serialize on its row lock; on a
        // busy machine the last waits longer than the production default.
        env.insert("DATABASE_POOL_TIMEOUT", "120s");
        let config = orderflow_inventory::config::from_source(&env).expect("valid test config");
        let app = Application::build(&config)
            .await
            .expect("application builds");
        let pool = app.pool().clone();
        // The API alone: these tests drive the handlers themselves.
        let server = TestServer::spawn(app.grpc_addr().unwrap(), |stop| app.serve_grpc_until(stop));
        Self {
            client: InventoryServiceClient::new(orderflow_testkit::admin_channel(server.channel())),
            pool,
            server,
            db,
        }
    }

    /// A channel without the admin token: a customer's.
    pub fn channel(&self) -> tonic::transport::Channel {
        self.server.channel()
    }

    /// The server's address as a URL, for clients that dial it themselves.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// A direct connection to the test database, for arranging and asserting.
    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(self.db.url())
            .await
            .expect("connect to test database")
    }

    pub async fn count(&self, sql_from_where: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {sql_from_where}"))
            .get_result::<Count>(&mut self.sql().await)
            .await
            .expect("count")
            .n
    }

    /// The outbox, oldest first: (event type, CloudEvents body).
    pub async fn events(&self) -> Vec<(String, serde_json::Value)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            event_type: String,
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            payload: serde_json::Value,
        }
        diesel::sql_query("SELECT event_type, payload FROM outbox ORDER BY seq")
            .load::<Row>(&mut self.sql().await)
            .await
            .expect("outbox")
            .into_iter()
            .map(|r| (r.event_type, r.payload))
            .collect()
    }

    /// (on_hand, reserved) of a product.
    pub async fn stock(&self, product: Uuid) -> (i64, i64) {
        let p = self.get(product).await;
        (p.on_hand, p.reserved)
    }

    /// The status and reason of an order's reservation, if any.
    pub async fn reservation(&self, order: Uuid) -> Option<(String, Option<String>)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            status: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            reason: Option<String>,
        }
        diesel::sql_query("SELECT status, reason FROM reservations WHERE order_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(order)
            .load::<Row>(&mut self.sql().await)
            .await
            .expect("reservation")
            .pop()
            .map(|r| (r.status, r.reason))
    }

    pub async fn upsert(
        &self,
        req: pb::UpsertProductRequest,
    ) -> Result<(pb::Product, bool), tonic::Status> {
        let res = self.client.clone().upsert_product(req).await?.into_inner();
        Ok((res.product.expect("product in response"), res.created))
    }

    /// A new product with `on_hand` units.
    pub async fn product(&self, on_hand: i64) -> Uuid {
        let id = Uuid::new_v4();
        self.upsert(product_request(id, &format!("SKU-{id}"), on_hand))
            .await
            .expect("product upserted");
        id
    }

    pub async fn get(&self, product: Uuid) -> pb::Product {
        self.client
            .clone()
            .get_product(pb::GetProductRequest {
                product_id: product.to_string(),
            })
            .await
            .expect("get product")
            .into_inner()
            .product
            .expect("product in response")
    }

    /// Stops the server and waits for it, as SIGTERM would.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

pub fn product_request(id: Uuid, sku: &str, on_hand: i64) -> pb::UpsertProductRequest {
    pb::UpsertProductRequest {
        product_id: id.to_string(),
        sku: sku.to_owned(),
        name: "Widget".to_owned(),
        unit_price: Some(pb::Money {
            amount_minor: 1250,
            currency: "EUR".to_owned(),
        }),
        on_hand,
        ..Default::default()
    }
}

/// An order.placed for `lines` of (product, quantity).
pub fn placed(lines: &[(Uuid, i32)]) -> OrderPlaced {
    OrderPlaced {
        order_id: Uuid::now_v7(),
        customer_id: Uuid::new_v4(),
        customer_email: "ada@example.com".to_owned(),
        currency: "EUR".to_owned(),
        total_minor: lines.iter().map(|(_, q)| i64::from(*q) * 1250).sum(),
        lines: lines
            .iter()
            .map(|&(product_id, quantity)| OrderPlacedLine {
                product_id,
                quantity,
                unit_price_minor: 1250,
            })
            .collect(),
        payment_token: "tok_visa".to_owned(),
        customer_phone: String::new(),
    }
}

/// Runs `handler` on `event` in a transaction of its own, as the consumer
/// runtime does (minus the inbox row): committed on Ok, rolled back on Err.
pub async fn handle<H: Handler>(
    conn: &mut AsyncPgConnection,
    handler: &H,
    event: H::Event,
) -> Result<(), HandlerError> {
    let event = CloudEvent::new("orderflow/test", event);
    conn.transaction(async |conn| handler.handle(conn, event).await)
        .await
}

/// `handle` on a connection of the app's pool.
pub async fn handle_on<H: Handler>(app: &TestApp, handler: &H, event: H::Event) {
    let mut conn = app.pool.get().await.expect("pooled connection");
    handle(&mut conn, handler, event).await.expect("handled");
}
