//! The conformance cases, one module per part of the spec. Each case names
//! the rule it checks in one line; the module order is the run order.

use std::future::Future;
use std::pin::Pin;

use crate::check::CaseResult;
use crate::context::Ctx;

mod block;
mod capacity;
mod create_volume;
mod delete_volume;
mod expand;
mod get_volume;
mod identity;
mod lifecycle;
mod list_volumes;
mod node_info;
mod node_publish;
mod node_stage;
mod node_stats;
mod publish;
mod snapshot;
mod validate;

pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One conformance case.
pub struct Case {
    /// `Group/short-name`, what `--run`/`--skip` match.
    pub name: &'static str,
    /// The spec rule checked, in one line.
    pub rule: &'static str,
    pub run: fn(Ctx) -> CaseFuture,
}

/// Declares a case from a name, a rule and an `async fn(Ctx) -> CaseResult`.
macro_rules! case {
    ($name:literal, $rule:literal, $body:path) => {
        $crate::cases::Case {
            name: $name,
            rule: $rule,
            run: |cx| Box::pin($body(cx)),
        }
    };
}
pub(crate) use case;

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    [
        identity::cases(),
        node_info::cases(),
        create_volume::cases(),
        delete_volume::cases(),
        validate::cases(),
        list_volumes::cases(),
        capacity::cases(),
        get_volume::cases(),
        publish::cases(),
        expand::cases(),
        snapshot::cases(),
        node_stage::cases(),
        node_publish::cases(),
        node_stats::cases(),
        block::cases(),
        lifecycle::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Imports every case module needs.
mod prelude {
    pub(crate) use super::case;
    pub use super::Case;
    pub use crate::caps::{ControllerCap, NodeCap, PluginService};
    pub use crate::check::{self, fail, CaseResult, Stop};
    pub use crate::context::{snapshot_source, volume_source, Ctx};
    pub use crate::ensure;
    pub use crate::fixtures;
    pub use cairn_proto::v1;
    pub use cairn_proto::v1::volume_capability::access_mode::Mode;
    pub use tonic::Code;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_grouped_and_rules_are_one_line() {
        let cases = all();
        assert!(cases.len() >= 100, "only {} cases", cases.len());
        let mut seen = HashSet::new();
        for case in &cases {
            assert!(seen.insert(case.name), "duplicate case {}", case.name);
            assert!(case.name.contains('/'), "{} has no group", case.name);
            assert!(
                !case.rule.is_empty() && !case.rule.contains('\n'),
                "{}",
                case.name
            );
        }
    }
}
