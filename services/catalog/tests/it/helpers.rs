use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_catalog::{MIGRATIONS, app::Application};
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_events::{CloudEvent, Event, inventory::ProductUpserted};
use orderflow_proto::catalog::v1::{self as pb, catalog_service_client::CatalogServiceClient};
use orderflow_testkit::{TestDatabase, TestServer};
use tonic::transport::Channel;
use uuid::Uuid;

/// The catalog's database and its API.
pub struct TestApp {
    pub client: CatalogServiceClient<Channel>,
    _server: TestServer,
    // Must be the last field: dropped after the server and its pool.
    pub db: TestDatabase,
}

impl TestApp {
    /// A migrated database and the gRPC API on it (no consumer: handlers
    /// are driven by the tests).
    pub async fn serve() -> Self {
        orderflow_telemetry::init_for_tests();
        let db = TestDatabase::new("catalog", MIGRATIONS).await;
        let env = orderflow_testkit::service_env(&db);
        let config = orderflow_catalog::config::from_source(&env).expect("valid test config");
        let service = Application::build(&config)
            .await
            .expect("application builds");
        let server = TestServer::spawn(service.grpc_addr().unwrap(), |stop| {
            service.serve_grpc_until(stop)
        });
        Self {
            client: CatalogServiceClient::new(server.channel()),
            _server: server,
            db,
        }
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

    /// [`Self::handle`] that must succeed.
    pub async fn apply<H: Handler>(&self, handler: &H, event: CloudEvent<H::Event>) {
        self.handle(handler, event).await.expect("handled");
    }

    pub async fn get(&self, id: Uuid) -> Result<pb::CatalogProduct, tonic::Status> {
        self.client
            .clone()
            .get_catalog_product(pb::GetCatalogProductRequest {
                product_id: id.to_string(),
            })
            .await
            .map(|r| r.into_inner().product.expect("product"))
    }

    /// GetCatalogProduct of any string.
    pub async fn get_raw(&self, product_id: &str) -> Result<pb::CatalogProduct, tonic::Status> {
        self.client
            .clone()
            .get_catalog_product(pb::GetCatalogProductRequest {
                product_id: product_id.to_owned(),
            })
            .await
            .map(|r| r.into_inner().product.expect("product"))
    }

    pub async fn search(
        &self,
        req: pb::SearchProductsRequest,
    ) -> Result<pb::SearchProductsResponse, tonic::Status> {
        self.client
            .clone()
            .search_products(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The names of the hits of `query`, in order.
    pub async fn names(&self, query: &str) -> Vec<String> {
        self.search(pb::SearchProductsRequest {
            query: query.to_owned(),
            ..Default::default()
        })
        .await
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.product.expect("product").name)
        .collect()
    }
}

/// An event of `data` at `time` (the envelope's time orders version-1
/// events).
pub fn at<E: Event>(data: E, time: DateTime<Utc>) -> CloudEvent<E> {
    let mut event = CloudEvent::new("orderflow/inventory", data);
    event.time = time;
    event
}

/// A product_upserted (version 2) of `name` at `version`.
pub fn upserted(id: Uuid, name: &str, version: i64, on_hand: i64) -> ProductUpserted {
    ProductUpserted {
        product_id: id,
        sku: format!("SKU-{}", &id.simple().to_string()[..8]),
        name: name.to_owned(),
        currency: "EUR".to_owned(),
        unit_price_minor: 1000,
        on_hand,
        description: None,
        category: None,
        tags: Vec::new(),
        version,
    }
}
