//! Cairn, a CSI driver for local and NFS volumes.
//!
//! Requests enter through the thin gRPC adapters ([`identity`],
//! [`controller`], [`node`]), which validate them with the newtypes in
//! [`ids`], [`paths`], [`capacity`] and [`capability`], then call a
//! [`backend`]. Every mount syscall lives in [`mount`].

pub mod backend;
pub mod block_target;
pub mod capability;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod connections;
pub mod controller;
pub mod copy;
pub mod driver;
pub mod durable;
pub mod ephemeral;
pub mod error;
pub mod health;
pub mod identity;
pub mod ids;
pub mod json_record;
pub mod locks;
pub mod loopdev;
pub mod metrics;
pub mod mount;
pub mod mounter;
pub mod node;
pub mod page_token;
pub mod parameters;
pub mod paths;
pub mod published;
pub mod quota;
pub mod record_dir;
pub mod rpc;
pub mod server;
pub mod signal;
pub mod snapshots;
pub mod socket;
pub mod staged;
pub mod topology;
