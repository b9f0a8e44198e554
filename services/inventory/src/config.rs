//! The inventory service's defaults; what it reads is `orderflow_service::Config`.

use orderflow_config::{ConfigError, ServiceDefaults, Source};
pub use orderflow_service::Config;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    grpc_addr: "127.0.0.1:50052",
    metrics_addr: "127.0.0.1:9102",
    database: "orderflow_inventory",
};

/// The name callers used before the struct was shared.
pub type InventoryConfig = Config;

/// # Errors
/// The first variable that is set but invalid.
pub fn from_source(src: &dyn Source) -> Result<Config, ConfigError> {
    Config::from_source(src, DEFAULTS)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_need_no_variables() {
        let cfg = from_source(&HashMap::<&str, &str>::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.service.grpc_addr.to_string(), "127.0.0.1:50052");
        assert_eq!(
            cfg.service.database_url,
            "postgres://postgres@127.0.0.1:5432/orderflow_inventory"
        );
    }
}
