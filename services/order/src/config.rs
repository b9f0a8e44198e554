//! The order service's configuration: only what every service reads
//! (`orderflow_config::ServiceConfig`), with the order service's defaults.

use orderflow_config::{ConfigError, ServiceConfig, ServiceDefaults, Source};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    grpc_addr: "127.0.0.1:50051",
    database: "orderflow_order",
};

/// # Errors
/// The first variable that is set but invalid.
pub fn from_source(src: &dyn Source) -> Result<ServiceConfig, ConfigError> {
    ServiceConfig::from_source(src, DEFAULTS)
}
