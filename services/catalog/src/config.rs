//! The catalog service's defaults; what it reads is `orderflow_service::Config`.

use orderflow_config::{ConfigError, ServiceDefaults, Source};
pub use orderflow_service::Config;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    grpc_addr: "127.0.0.1:50055",
    metrics_addr: "127.0.0.1:9105",
    database: "orderflow_catalog",
};

/// # Errors
/// The first variable that is set but invalid.
pub fn from_source(src: &dyn Source) -> Result<Config, ConfigError> {
    Config::from_source(src, DEFAULTS)
}
