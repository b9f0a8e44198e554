//! Events of the catalog service, published on exchange `orderflow.catalog`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// An operator asked for the catalog to be rebuilt (or a new replica to be
/// backfilled) into `generation`: inventory answers with a snapshot of
/// every product (`inventory.catalog_snapshot`, in pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRebuildRequested {
    pub rebuild_id: Uuid,
    pub generation: i32,
}

impl Event for CatalogRebuildRequested {
    const TYPE: &'static str = "catalog.rebuild_requested";
    const VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "catalog_rebuild";
    fn aggregate_id(&self) -> Uuid {
        self.rebuild_id
    }
}
