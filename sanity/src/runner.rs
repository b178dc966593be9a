//! Runs the selected cases one after another against a driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::endpoint::{self, EndpointError};
use cairn_proto::v1;
use tonic::Code;

use crate::caps::{self, Capabilities, PluginService};
use crate::cases::{self, Case};
use crate::check::{describe, Stop};
use crate::cleanup;
use crate::config::Config;
use crate::context::{Clients, Ctx, Shared, RPC_TIMEOUT};
use crate::report::{progress_line, CaseReport, Failure, Outcome, Report};

/// A case that runs longer than this is failed (and cleaned up).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a run could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("endpoint {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: EndpointError,
    },
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs every case `config.filter` selects and reports each one.
pub async fn run(config: Config) -> Result<Report, RunError> {
    let main = connect(&config.endpoint).await?;
    let controller = match &config.controller_endpoint {
        Some(endpoint) => connect(endpoint).await?,
        None => main.clone(),
    };
    let clients = Clients::new(main, controller);
    let caps = discover(&clients).await;
    let node_id = node_id(&clients, &caps).await;

    let run_id = run_id();
    let bases = Bases::prepare(
        "cairn-sanity",
        &run_id,
        config.staging_base.as_deref(),
        config.target_base.as_deref(),
    )?;

    let shared = Arc::new(Shared {
        clients,
        caps,
        config,
        staging_base: bases.staging.clone(),
        target_base: bases.target.clone(),
        run_id,
        node_id,
    });

    let selected: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| shared.config.filter.selects(c.name))
        .collect();
    let total = selected.len();
    let mut report = Report::default();
    for (index, case) in selected.into_iter().enumerate() {
        let result = run_case(&shared, index, &case).await;
        if shared.config.progress {
            eprintln!("{}", progress_line(index + 1, total, &result));
        }
        report.cases.push(result);
    }

    if let Err(problem) = bases.remove_scratch() {
        if shared.config.progress {
            eprintln!("warning: {problem}");
        }
    }
    Ok(report)
}

pub(crate) async fn connect(endpoint: &str) -> Result<tonic::transport::Channel, RunError> {
    endpoint::connect(endpoint)
        .await
        .map_err(|source| RunError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// Where a run's staging and target paths go: the configured bases, or
/// directories in a scratch dir of the run's own, removed at the end.
pub(crate) struct Bases {
    pub staging: PathBuf,
    pub target: PathBuf,
    /// Set when this run made the scratch dir (and so removes it).
    scratch: Option<PathBuf>,
}

impl Bases {
    pub(crate) fn prepare(
        tool: &str,
        run_id: &str,
        staging: Option<&Path>,
        target: Option<&Path>,
    ) -> Result<Self, RunError> {
        let scratch = std::env::temp_dir().join(format!("{tool}-{run_id}"));
        let bases = Self {
            staging: staging.map_or_else(|| scratch.join("staging"), Path::to_path_buf),
            target: target.map_or_else(|| scratch.join("target"), Path::to_path_buf),
            scratch: (staging.is_none() || target.is_none()).then_some(scratch),
        };
        for base in [&bases.staging, &bases.target] {
            make_dir(base)?;
        }
        Ok(bases)
    }

    /// Removes the scratch dir if this run made one.
    pub(crate) fn remove_scratch(&self) -> Result<(), String> {
        self.scratch.as_deref().map_or(Ok(()), cleanup::remove_dir)
    }
}

fn make_dir(path: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(path).map_err(|source| RunError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

/// Short and unique enough that two runs against one driver never share a
/// volume name.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}",
        (nanos as u64 ^ u64::from(std::process::id())) & 0xff_ffff
    )
}

/// Asks the three services what they offer. Failures are kept as problems:
/// the identity and capability cases turn them into case failures.
pub(crate) async fn discover(clients: &Clients) -> Capabilities {
    let mut caps = Capabilities::default();
    // With a separate controller endpoint each plugin reports its own
    // services; the run sees their union.
    for mut identity in [
        clients.identity.clone(),
        clients.controller_identity.clone(),
    ] {
        match timed(identity.get_plugin_capabilities(v1::GetPluginCapabilitiesRequest {})).await {
            Ok(resp) => {
                let (services, expansion) = caps::plugin_caps(&resp.capabilities);
                for s in services {
                    if !caps.plugin.contains(&s) {
                        caps.plugin.push(s);
                    }
                }
                for e in expansion {
                    if !caps.expansion.contains(&e) {
                        caps.expansion.push(e);
                    }
                }
            }
            Err(status) => caps
                .problems
                .push(format!("GetPluginCapabilities: {}", describe(&status))),
        }
    }
    if caps.has_plugin(PluginService::ControllerService) {
        let mut controller = clients.controller.clone();
        match timed(controller.controller_get_capabilities(v1::ControllerGetCapabilitiesRequest {}))
            .await
        {
            Ok(resp) => caps.controller = Some(caps::controller_caps(&resp.capabilities)),
            Err(status) => caps
                .problems
                .push(format!("ControllerGetCapabilities: {}", describe(&status))),
        }
    }
    let mut node = clients.node.clone();
    match timed(node.node_get_capabilities(v1::NodeGetCapabilitiesRequest {})).await {
        Ok(resp) => caps.node = Some(caps::node_caps(&resp.capabilities)),
        // A controller-only endpoint: node cases skip.
        Err(status) if status.code() == Code::Unimplemented => {}
        Err(status) => caps
            .problems
            .push(format!("NodeGetCapabilities: {}", describe(&status))),
    }
    caps
}

async fn node_id(clients: &Clients, caps: &Capabilities) -> Option<String> {
    caps.node.as_ref()?;
    let mut node = clients.node.clone();
    timed(node.node_get_info(v1::NodeGetInfoRequest {}))
        .await
        .ok()
        .map(|info| info.node_id)
        .filter(|id| !id.is_empty())
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

async fn run_case(shared: &Arc<Shared>, index: usize, case: &Case) -> CaseReport {
    let cx = Ctx::new(Arc::clone(shared), index, case.name);
    let started = Instant::now();
    let result = tokio::time::timeout(CASE_TIMEOUT, (case.run)(cx.clone())).await;
    let mut outcome = match result {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(Stop::Skip(why))) => Outcome::Skipped(why),
        Ok(Err(Stop::Fail(message))) => Outcome::Failed(Failure {
            message,
            exchange: cx.last_exchange(),
        }),
        Err(_) => Outcome::Failed(Failure {
            message: format!("case did not finish within {CASE_TIMEOUT:?}"),
            exchange: cx.last_exchange(),
        }),
    };
    let leftovers = cx.run_cleanup().await;
    if !leftovers.is_empty() && outcome == Outcome::Passed {
        // The driver could not undo what it did: that is a failure too.
        outcome = Outcome::Failed(Failure {
            message: format!("cleanup failed: {}", leftovers.join("; ")),
            exchange: None,
        });
    }
    CaseReport {
        name: case.name.to_string(),
        rule: case.rule.to_string(),
        outcome,
        leftovers,
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_can_be_spawned() {
        // Driver tests may tokio::spawn the suite beside their server.
        let fut = run(Config::new("unix:///nonexistent.sock"));
        assert_send(&fut);
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_a_setup_error() {
        let missing = std::env::temp_dir().join("cairn-sanity-no-such.sock");
        let err = run(Config::new(missing.display().to_string())).await.err();
        assert!(matches!(err, Some(RunError::Connect { .. })), "{err:?}");
    }

    #[test]
    fn run_ids_are_short_hex() {
        let id = run_id();
        assert!(!id.is_empty() && id.len() <= 6 && id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
