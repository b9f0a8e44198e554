//! The gRPC surface: protobuf in, validation (`request`), a read (`store`),
//! protobuf out. Errors become statuses in one place, here.

use std::time::Duration;

use orderflow_db::Pool;
use orderflow_proto::catalog::v1::{self as pb, catalog_service_server::CatalogService};
use tonic::{Request, Response, Status};

use crate::{
    rebuild::{self, Rebuild},
    request,
    store::{self, CatalogError, Entry},
};

pub use pb::catalog_service_server::CatalogServiceServer;

/// Fully-qualified name, for the health service.
pub const SERVICE_NAME: &str = "orderflow.catalog.v1.CatalogService";

#[derive(Clone)]
pub struct CatalogApi {
    pool: Pool,
}

impl CatalogApi {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn search_products(
        &self,
        req: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        let search = request::search(req.get_ref())?;
        let (mut hits, corrected) = store::search(&self.pool, &search).await?;
        let more = hits.len() as i64 > search.page_size;
        hits.truncate(usize::try_from(search.page_size).unwrap_or(0));
        Ok(Response::new(pb::SearchProductsResponse {
            hits: hits
                .into_iter()
                .map(|h| pb::SearchHit {
                    product: Some(to_proto(h.entry)),
                    relevance: h.relevance,
                    snippet: h.snippet,
                })
                .collect(),
            next_page_token: if more && search.can_page_on() {
                search.next_page_token()
            } else {
                String::new()
            },
            fuzzy: corrected.is_some(),
            corrected_query: corrected.map(|q| q.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_catalog_product(
        &self,
        req: Request<pb::GetCatalogProductRequest>,
    ) -> Result<Response<pb::GetCatalogProductResponse>, Status> {
        let id = request::uuid_field("product_id", &req.get_ref().product_id)?;
        let entry = store::get(&self.pool, id).await?;
        Ok(Response::new(pb::GetCatalogProductResponse {
            product: Some(to_proto(entry)),
        }))
    }

    async fn rebuild_catalog(
        &self,
        _req: Request<pb::RebuildCatalogRequest>,
    ) -> Result<Response<pb::RebuildCatalogResponse>, Status> {
        let (rebuild, started) = rebuild::start(&self.pool).await?;
        Ok(Response::new(pb::RebuildCatalogResponse {
            rebuild: Some(rebuild_to_proto(rebuild)),
            started,
        }))
    }

    async fn get_catalog_rebuild(
        &self,
        req: Request<pb::GetCatalogRebuildRequest>,
    ) -> Result<Response<pb::GetCatalogRebuildResponse>, Status> {
        let id = &req.get_ref().rebuild_id;
        let id = if id.is_empty() {
            None
        } else {
            Some(request::uuid_field("rebuild_id", id)?)
        };
        let rebuild = rebuild::get(&self.pool, id).await?;
        Ok(Response::new(pb::GetCatalogRebuildResponse {
            rebuild: Some(rebuild_to_proto(rebuild)),
        }))
    }

    async fn list_categories(
        &self,
        req: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        let (query, filters) = request::categories(req.get_ref())?;
        let counts = store::categories(&self.pool, &query, &filters).await?;
        Ok(Response::new(pb::ListCategoriesResponse {
            categories: counts
                .into_iter()
                .map(|c| pb::CategoryCount {
                    category: c.category,
                    product_count: c.product_count,
                })
                .collect(),
        }))
    }
}

impl From<CatalogError> for Status {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::NotFound(id) => Status::not_found(format!(
                "product {id} is not in the catalog (unknown to inventory, or its event is not applied yet)"
            )),
            e @ CatalogError::RebuildNotFound(_) => Status::not_found(e.to_string()),
            CatalogError::Unavailable(e) => {
                tracing::warn!(error.message = %e, "database unavailable");
                Status::unavailable("the catalog database is unavailable; retry")
            }
            CatalogError::Busy(e) => {
                tracing::warn!(error.message = %e, "overloaded: no database connection free");
                orderflow_grpc::busy(
                    "overloaded: every database connection stayed busy (DATABASE_POOL_TIMEOUT); retry",
                    Duration::from_millis(500),
                )
            }
            CatalogError::Database(e) => {
                // A statement cut by DATABASE_STATEMENT_TIMEOUT is the
                // database being slow, not a bug.
                if orderflow_db::is_unavailable(&e) {
                    return Status::unavailable("the catalog database is unavailable; retry");
                }
                tracing::error!(error.message = %e, error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
        }
    }
}

fn to_proto(e: Entry) -> pb::CatalogProduct {
    pb::CatalogProduct {
        product_id: e.product_id.to_string(),
        sku: e.sku,
        name: e.name,
        description: e.description.unwrap_or_default(),
        category: e.category.unwrap_or_default(),
        tags: e.tags,
        unit_price: Some(pb::Money {
            amount_minor: e.unit_price_minor,
            currency: e.currency,
        }),
        available: e.available,
        version: e.version,
        updated_at: Some(timestamp(e.updated_at)),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn rebuild_to_proto(r: Rebuild) -> pb::CatalogRebuild {
    let state = match r.state.as_str() {
        "BUILDING" => pb::RebuildState::Running,
        "SERVING" => pb::RebuildState::Serving,
        "RETIRED" => pb::RebuildState::Retired,
        _ => pb::RebuildState::Unspecified,
    };
    pb::CatalogRebuild {
        rebuild_id: r.rebuild_id.to_string(),
        generation: r.generation,
        state: state.into(),
        products_total: r.products_total,
        products_applied: r.products_applied,
        pages_applied: r.pages_applied,
        started_at: Some(timestamp(r.created_at)),
        finished_at: r.finished_at.map(timestamp),
    }
}
