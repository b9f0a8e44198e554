//! The gRPC surface: protobuf in, validation (`request`), a use case
//! (`store`), protobuf out. Errors become statuses in one place, here.

use orderflow_db::Pool;
use orderflow_proto::inventory::v1::{self as pb, inventory_service_server::InventoryService};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    import::{
        self,
        store::{ImportRecord, RowErrorRecord},
    },
    request,
    store::{self, InventoryError, Product},
};

pub use pb::inventory_service_server::InventoryServiceServer;

/// Fully-qualified name, for the health service.
pub const SERVICE_NAME: &str = "orderflow.inventory.v1.InventoryService";

#[derive(Clone)]
pub struct InventoryApi {
    pool: Pool,
}

impl InventoryApi {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn upsert_product(
        &self,
        req: Request<pb::UpsertProductRequest>,
    ) -> Result<Response<pb::UpsertProductResponse>, Status> {
        let data = request::product(req.into_inner())?;
        let (product, created) = store::upsert_product(&self.pool, data).await?;
        Ok(Response::new(pb::UpsertProductResponse {
            product: Some(to_proto(product)),
            created,
        }))
    }

    async fn get_product(
        &self,
        req: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = request::product_id("product_id", &req.get_ref().product_id)?;
        let product = store::get_product(&self.pool, id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(to_proto(product)),
        }))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let query = request::list_query(req.get_ref())?;
        let (products, next) = store::list_products(&self.pool, query).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: products.into_iter().map(to_proto).collect(),
            next_page_token: next
                .map(|sku| request::encode_page_token(&sku))
                .unwrap_or_default(),
        }))
    }

    async fn adjust_stock(
        &self,
        req: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let adjustment = request::adjustment(req.into_inner())?;
        let product = store::adjust_stock(&self.pool, adjustment).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            product: Some(to_proto(product)),
        }))
    }

    async fn import_stock(
        &self,
        req: Request<Streaming<pb::ImportStockRequest>>,
    ) -> Result<Response<pb::ImportStockResponse>, Status> {
        let (record, errors) = import::import_stock(&self.pool, req.into_inner()).await?;
        Ok(Response::new(pb::ImportStockResponse {
            import: Some(import_to_proto(record)),
            errors: errors.into_iter().map(error_to_proto).collect(),
        }))
    }

    async fn get_stock_import(
        &self,
        req: Request<pb::GetStockImportRequest>,
    ) -> Result<Response<pb::GetStockImportResponse>, Status> {
        let id = request::product_id("import_id", &req.get_ref().import_id)?;
        let record = import::store::get(&self.pool, id).await?;
        Ok(Response::new(pb::GetStockImportResponse {
            import: Some(import_to_proto(record)),
        }))
    }

    async fn list_stock_import_errors(
        &self,
        req: Request<pb::ListStockImportErrorsRequest>,
    ) -> Result<Response<pb::ListStockImportErrorsResponse>, Status> {
        let query = request::import_errors_query(req.get_ref())?;
        // NOT_FOUND rather than an empty list for an import we never saw.
        import::store::get(&self.pool, query.import_id).await?;
        let mut errors = import::store::errors(
            &self.pool,
            query.import_id,
            query.after_row,
            query.page_size + 1,
        )
        .await?;
        let next_page_token = if errors.len() as i64 > query.page_size {
            errors.truncate(usize::try_from(query.page_size).unwrap_or(0));
            errors
                .last()
                .map(|e| import::encode_errors_token(query.import_id, e.row_number))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListStockImportErrorsResponse {
            errors: errors.into_iter().map(error_to_proto).collect(),
            next_page_token,
        }))
    }
}

impl From<InventoryError> for Status {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::NotFound(id) => orderflow_grpc::not_found("product", &id.to_string()),
            InventoryError::SkuTaken { sku, owner } => orderflow_grpc::already_exists(
                "sku",
                &sku,
                &format!("sku {sku} belongs to product {owner}"),
            ),
            InventoryError::InsufficientStock {
                product_id,
                on_hand,
                delta,
            } => orderflow_grpc::failed_precondition(
                "STOCK",
                &format!("products/{product_id}"),
                &format!("{on_hand} on hand; a change of {delta} would make it negative"),
            ),
            InventoryError::Overflow { product_id } => orderflow_grpc::failed_precondition(
                "STOCK",
                &format!("products/{product_id}"),
                "on hand would exceed the largest representable quantity",
            ),
            InventoryError::ImportNotFound(id) => {
                orderflow_grpc::not_found("stock_import", &id.to_string())
            }
            InventoryError::ImportFinished {
                import_id,
                last_row,
            } => orderflow_grpc::failed_precondition(
                "IMPORT_FINISHED",
                &format!("stock_imports/{import_id}"),
                &format!(
                    "import {import_id} is finished (last row {last_row}); start a new import to send more rows"
                ),
            ),
            InventoryError::Unavailable(e) => {
                tracing::warn!(error.message = %e, "database unavailable");
                Status::unavailable("the inventory database is unavailable; retry")
            }
            InventoryError::Database(e) => {
                tracing::error!(error.message = %e, error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
        }
    }
}

fn to_proto(p: Product) -> pb::Product {
    pb::Product {
        product_id: p.product_id.to_string(),
        sku: p.sku,
        name: p.name,
        unit_price: Some(pb::Money {
            amount_minor: p.unit_price_minor,
            currency: p.currency,
        }),
        on_hand: p.on_hand,
        reserved: p.reserved,
        updated_at: Some(prost_types::Timestamp {
            seconds: p.updated_at.timestamp(),
            nanos: i32::try_from(p.updated_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        description: p.description.unwrap_or_default(),
        category: p.category.unwrap_or_default(),
        tags: p.tags,
        version: p.version,
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn import_to_proto(r: ImportRecord) -> pb::StockImport {
    pb::StockImport {
        import_id: r.import_id.to_string(),
        last_row_number: r.last_row_number,
        rows: r.rows,
        inserted: r.inserted,
        updated: r.updated,
        unchanged: r.unchanged,
        rejected: r.rejected,
        finished: r.finished_at.is_some(),
        started_at: Some(timestamp(r.started_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn error_to_proto(e: RowErrorRecord) -> pb::RowError {
    pb::RowError {
        row_number: e.row_number,
        sku: e.sku,
        reason: e.reason,
    }
}
