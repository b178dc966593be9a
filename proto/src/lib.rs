//! The CSI v1.12 wire contract as Rust types and tonic services, plus the
//! one way every Cairn tool dials a CSI endpoint.

pub mod endpoint;

/// Generated from `csi.proto` (package `csi.v1`).
#[allow(clippy::all, missing_docs)]
pub mod csi {
    pub mod v1 {
        #![allow(clippy::all)]
        tonic::include_proto!("csi.v1");
    }
}

pub use csi::v1;
