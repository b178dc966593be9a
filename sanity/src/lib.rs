//! `cairn-sanity`: a CSI v1.12 conformance suite that runs against any CSI
//! driver endpoint, in-process or from the `cairn-sanity` binary, and the
//! `cairn-bench` load tool.
//!
//! ```no_run
//! # async fn example() -> Result<(), cairn_sanity::RunError> {
//! let mut config = cairn_sanity::Config::new("unix:///tmp/csi.sock");
//! config.staging_base = Some("/var/lib/kubelet/plugins/sanity".into());
//! config.target_base = Some("/var/lib/kubelet/pods/sanity".into());
//! let report = cairn_sanity::run(config).await?;
//! assert!(report.success(), "{}", report.to_text());
//! # Ok(()) }
//! ```

pub mod bench;
pub mod caps;
pub mod cases;
pub mod check;
pub mod cleanup;
pub mod config;
pub mod context;
pub mod fixtures;
pub mod report;
pub mod runner;

pub use config::{parse_param, parse_size, Config, Filter};
pub use report::{CaseReport, Exchange, Failure, Outcome, Report};
pub use runner::{run, RunError};

/// Every case name with the rule it checks, in run order.
pub fn list_cases() -> Vec<(&'static str, &'static str)> {
    cases::all().iter().map(|c| (c.name, c.rule)).collect()
}
