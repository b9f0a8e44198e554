#![doc = include_str!("../README.md")]
#![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)] // generated code

pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("orderflow.catalog.v1");
    }
}

pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("orderflow.inventory.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("orderflow.notification.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("orderflow.order.v1");
    }
}

pub mod payment {
    pub mod v1 {
        tonic::include_proto!("orderflow.payment.v1");
    }
}

/// Every message and service of every package, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orderflow_descriptor");
